"""GeMS training throughput: the chunked rank cross-entropy against the plain one.

Same model, same batches, same math (tests/test_gems.py checks equal values and
gradients); whole optimiser steps (forward, backward, Adam) alternate between the
two losses in one process on one thread, so both see the same machine state.

    python scripts/bench_gems_loss.py --rounds 8 --steps 20 --batch-size 256 --chunks 0 128 256 512
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from gym_slaterec.gems import GeMS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--chunks", type=int, nargs="+", default=[0, 256])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GeMS(1000, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 1000, (args.batch_size, 10), generator=g),
                (torch.rand(args.batch_size, 10, generator=g) < 0.2).float()) for _ in range(args.steps)]
    rates: dict[int, list[float]] = {c: [] for c in args.chunks}
    for r in range(args.rounds + 1):
        for c in args.chunks:
            t0 = time.perf_counter()
            for i, (s, k) in enumerate(batches):
                terms = model.loss(s, k, 1.0, 0.5, generator=g, accuracy=i % 10 == 0, chunk=c)
                opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                opt.step()
            if r:  # round 0 warms up
                rates[c].append(args.steps * args.batch_size / (time.perf_counter() - t0))
    base = sorted(rates[args.chunks[0]])[len(rates[args.chunks[0]]) // 2]
    for c, values in rates.items():
        med = sorted(values)[len(values) // 2]
        label = "plain (materialised logits)" if c == 0 else f"chunked, {c} rows"
        print(f"{label:30s} median {med:8.0f} slates/s  (min {min(values):.0f}, max {max(values):.0f})  x{med / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
