"""Which operation of a SAC+GeMS gradient step rounds otherwise on another CPU, with the portable kernels.

The benchmark datasets that only collect (random, medium, expert) rebuild bit for bit on every
x86-64 CPU with AVX2 under the portable kernels (:mod:`gym_slaterec.core.portable`), but a
retrained medium agent (medium-replay) does not: the untrained policy validates alike (51.49 on
three CPUs) and the curves part once gradient steps begin. This script records, on one machine,
what the first gradient steps of the shipped FocusedTopDown medium agent's configuration compute:
a hash of every parameter after each of the first ``--updates`` steps, and of every tensor operation
(its inputs and its output) within the steps ``--ops-at``. Compare two records made on different
CPUs to name the first step, and within it the first operation, whose inputs agree and whose output
does not: the kernel that is not portable.

    .venv/bin/python scripts/check_training_portability.py --out results/portability/CPU.json.gz
    .venv/bin/python scripts/check_training_portability.py --compare results/portability/intel_6_207.json.gz results/portability/CPU.json.gz

The record runs in a child process started with the portable kernels (one thread), on the same
warm-up episodes everywhere (collection is portable), ~2-4 minutes of one core.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def digest(t: Any) -> str:
    """A short hash of a tensor's dtype, shape and values (:func:`gym_slaterec.provenance.sha256_array`)."""
    import torch

    from gym_slaterec.provenance import sha256_array

    if not isinstance(t, torch.Tensor):
        return repr(t)[:40]
    if t.layout != torch.strided:
        return f"<{t.layout}>"
    return sha256_array(t.detach().cpu().numpy())[:12]


def flat_tensors(x: Any) -> list[Any]:
    import torch
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(x) if isinstance(t, torch.Tensor)]


def record(out: Path, updates: int, ops_at: list[int], max_ops: int = 3000) -> None:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from gym_slaterec.core.portable import arithmetic_record
    from gym_slaterec.provenance import machine_label, machine_record
    from d3rlpy_adapters.benchmark import read_policies, shipped_root
    from d3rlpy_adapters.collect import collect
    from sb3_slate.agents.episode_sac.algorithm import EpisodeSAC
    from sb3_slate.runs import read_run, train_run

    class OpLog(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[list[Any]] = []

        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            tensors = flat_tensors((args, kwargs))
            inputs, shapes = [digest(t) for t in tensors], [list(t.shape) for t in tensors]
            result = func(*args, **kwargs)
            if "empty" in str(func):  # an allocation holds whatever the memory held: zeros, so that runs compare
                for t in flat_tensors(result):
                    t.zero_()
            self.ops.append([str(func), shapes, inputs, [digest(t) for t in flat_tensors(result)]])
            return result

    class Enough(Exception):
        pass

    policies = shipped_root() / "FocusedTopDown"
    medium = read_policies(policies)["policies"]["medium"]
    _, cfg, _ = read_run(policies / medium["dir"])
    cfg.episodes = cfg.agent.warmup_episodes + 2 * cfg.n_envs
    cfg.replay_snapshots, cfg.max_wall_s, cfg.checkpoint_every = [], None, cfg.episodes
    steps: list[dict[str, Any]] = []
    original = EpisodeSAC.train_step

    def logged_step(self: EpisodeSAC) -> dict[str, float]:
        n = self.n_updates + 1
        if n > updates:
            raise Enough
        if n == 1:  # the initial weights (their draws use the generic kernels' random-number code)
            steps.append({"update": 0, "params": params_of(self), "metrics": {"critic_loss": float("nan")}})
        if n in ops_at:
            with OpLog() as log:
                metrics = original(self)
        else:
            log, metrics = None, original(self)
        steps.append({"update": n, "params": params_of(self), "metrics": metrics, **({"ops": log.ops} if log else {})})
        print(f"update {n}: critic loss {metrics['critic_loss']:.9g}", file=sys.stderr, flush=True)
        return metrics

    def params_of(model: EpisodeSAC) -> dict[str, str]:
        return {name: digest(p) for name, p in [*model.actor.named_parameters(prefix="actor"),
                                                *model.critic.named_parameters(prefix="critic"),
                                                ("log_alpha", model.log_alpha)]}

    EpisodeSAC.train_step = logged_step
    with tempfile.TemporaryDirectory() as tmp:
        # inference first: one episode collected by the shipped medium policy, as the medium dataset is
        torch.manual_seed(0)  # the draws of modules built before their weights load
        with OpLog() as log:
            collect(cfg.env_id, policies / medium["dir"], 1, 0, Path(tmp) / "collected",
                    checkpoint=medium["checkpoint"], progress=False)
        inference = log.ops[:max_ops]
        try:
            train_run(cfg, Path(tmp) / "run", progress=True, device="cpu")
        except Enough:
            pass
    machine = machine_record()
    info = {"machine": machine, "processor": machine_label({"machine": machine}), "torch": torch.__version__,
            "arithmetic": arithmetic_record(), "config": cfg.to_dict(), "updates": updates, "ops_at": ops_at}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"info": info, "inference": inference, "steps": steps}) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}: {len(steps)} updates, operations of {ops_at}", file=sys.stderr)


def compare(a_path: Path, b_path: Path, max_culprits: int = 6) -> int:
    a, b = (json.loads(gzip.open(p, "rt", encoding="utf-8").read() if p.suffix == ".gz" else p.read_text())
            for p in (a_path, b_path))
    print(f"A: {a['info']['processor']}, torch {a['info']['torch']}\nB: {b['info']['processor']}, torch {b['info']['torch']}")
    first = None
    for sa, sb in zip(a["steps"], b["steps"]):
        differ = sorted(k for k in sa["params"] if sa["params"][k] != sb["params"].get(k))
        if differ:
            first = sa["update"]
            print(f"{'initial weights' if sa['update'] == 0 else 'update ' + str(sa['update'])}: {len(differ)} of {len(sa['params'])} parameters differ ({', '.join(differ[:4])}"
                  f"{', ...' if len(differ) > 4 else ''}); critic loss {sa['metrics']['critic_loss']!r} / {sb['metrics']['critic_loss']!r}")
            break
    if first is None:
        print(f"the first {min(len(a['steps']), len(b['steps']))} updates agree bit for bit")
    differs = first is not None
    inference = {"update": "inference (one episode of the medium policy)", "ops": a["inference"]}
    for sa, sb in zip([inference, *a["steps"]], [{**inference, "ops": b["inference"]}, *b["steps"]]):
        if "ops" not in sa or "ops" not in sb:
            continue
        label = sa["update"] if isinstance(sa["update"], str) else f"update {sa['update']}"
        # the kernels that round otherwise: the same inputs, another output (the first few); an output
        # from inputs that differ is only reported when no such kernel came before it
        culprits, other = [], None
        for i, (oa, ob) in enumerate(zip(sa["ops"], sb["ops"])):
            if oa[0] != ob[0]:
                print(f"{label}, operation {i}: the two runs call different operations ({oa[0]} / {ob[0]})")
                break
            if oa[3] != ob[3]:
                if oa[2] == ob[2]:
                    culprits.append(f"operation {i} {oa[0]} {oa[1]}")
                    if len(culprits) == max_culprits:
                        break
                elif other is None and not culprits:
                    other = (f"operation {i} {oa[0]} {oa[1]} differs from inputs that differ already (parameters or "
                             "the sampled batch)")
        differs = differs or bool(culprits) or other is not None
        if culprits:
            print(f"{label}: the same inputs, another output (kernels that round otherwise): " + "; ".join(culprits))
        elif other:
            print(f"{label}: {other}")
        else:
            print(f"{label}: all {len(sa['ops'])} operations agree")
    return 1 if differs else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="write this machine's record here")
    p.add_argument("--updates", type=int, default=50, help="gradient steps whose parameters are hashed")
    p.add_argument("--ops-at", type=int, nargs="+", default=[1], help="gradient steps whose operations are logged")
    p.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"))
    p.add_argument("--native-arithmetic", action="store_true", help="record with this CPU's own kernels")
    args = p.parse_args()
    if args.compare:
        return compare(*args.compare)
    if not args.out:
        p.error("give --out FILE to record, or --compare A B")
    from gym_slaterec.core.portable import PORTABLE_ENV, is_portable

    if not args.native_arithmetic and not is_portable():
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **PORTABLE_ENV})
    record(args.out, args.updates, sorted(set(args.ops_at)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
