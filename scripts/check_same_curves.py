"""Short fixed-seed run of every trainable method (and both SAC regimes): validation curves
and test returns as JSON, to compare before and after a refactoring.

    python scripts/check_same_curves.py --out before.json
    python scripts/check_same_curves.py --out after.json --compare before.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ENV = "SlateRec/FocusedTopDown-v0"
SMALL = {"episode_length": 10}


def artifacts(d: Path) -> dict[str, str]:
    from gym_slaterec.gems import GeMSConfig, train_gems
    from gym_slaterec.mf import train_mf
    from gym_slaterec.rollouts import generate_logged_data

    ds = generate_logged_data(ENV, d / "logged", episodes=60, seed=0, progress=False, env_kwargs=SMALL)
    gems = train_gems(ds, GeMSConfig(epochs=1, latent_dim=8), out=d / "gems.pt", progress=False, max_steps=5)
    mf = train_mf(ds, out=d / "mf.pt", epochs=1, progress=False)
    return {"gems": str(gems.path), "mf": str(mf.path)}


def cases(art: dict[str, str]) -> dict[str, tuple[str, dict, str | None]]:
    from sb3_slate.methods import METHOD_TABLE, SAC_METHODS

    common = {"episodes": 12, "n_envs": 4, "window": 3, "val_every": 4, "val_users": 16, "test_users": 16,
              "checkpoint_every": 4, "env_kwargs": dict(SMALL), "gems": art["gems"], "mf": art["mf"], "seed": 3}
    out = {}
    for method, m in ((name, m) for name, m in METHOD_TABLE.items() if m.trains):
        sac = method in SAC_METHODS
        agent = {"warmup_episodes": 4, "batch_transitions": 16, "net_arch": [32]} if sac else {}
        # the window regime named explicitly where the paper's is the default
        out[f"{method}/window"] = (method, {**common, "agent": agent}, "window" if m.default_preset else None)
        if "episode" in m.regimes:
            extra = {} if sac else {"batch_episodes": 2} if method == "slateq" else {}
            out[f"{method}/episode"] = (method, {**common, "episodes": 16, "n_envs": 4,
                                                 "agent": {"warmup_episodes": 4, "net_arch": [32], **extra}}, "paper")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--compare")
    p.add_argument("--only", nargs="*")
    args = p.parse_args()
    import torch

    from sb3_slate.methods import resolve_config
    from sb3_slate.runs import train_run

    torch.set_num_threads(1)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        art = artifacts(Path(tmp))
        for name, (method, over, preset) in cases(art).items():
            if args.only and name.split("/")[0] not in args.only:
                continue
            cfg = resolve_config(method, ENV, over, preset=preset)
            r = train_run(cfg, Path(tmp) / name.replace("/", "_"), progress=False)
            res[name] = {"validation": [v["mean"] for v in r["validation"]], "test": r["test"]["mean"]}
            print(name, res[name], flush=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        bad = 0
        for name, r in res.items():
            if name not in before:
                print(f"{name}: new"); continue
            b = before[name]
            same = len(b["validation"]) == len(r["validation"]) and all(
                math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-4) for x, y in zip(b["validation"] + [b["test"]], r["validation"] + [r["test"]]))
            bad += not same
            print(f"{name}: {'same' if same else 'DIFFERENT'} {b['validation']} {b['test']} -> {r['validation']} {r['test']}")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
