"""The offline benchmark's datasets: collecting policies and the five D4RL-style datasets.

A *policies folder* (one per environment) holds what rebuilds the datasets:

    benchmark.json   env id, item matrix, the source run, the reference returns, the chosen
                     checkpoints and (once recorded) each dataset's fingerprint, per dataset size
    expert/          a policy bundle: the run's best checkpoint with its own GeMS copy
    medium/          the periodic checkpoint whose validation return is closest to halfway
                     between random and the expert, with the replay memory it kept (medium-replay)

A *policy bundle* is a trimmed run directory (config, provenance, results, and its one policy as
checkpoint ``best``, whatever the source checkpoint was) whose GeMS / MF copies lie in ``inputs/``,
named relative to the bundle, so it can be moved and shipped.

From a policies folder, :func:`build_datasets` writes ``random``, ``medium``, ``expert``,
``medium-replay`` and ``medium-expert`` (D4RL's meanings) of ``episodes`` episodes each, every
one played by the fixed users ``DATASET_SEED + j``, and compares each dataset's fingerprint with
the one recorded in ``benchmark.json`` (another CPU or torch build may round differently).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from gym_slaterec.provenance import (
    BENCHMARK_MARKER,
    PathLike,
    atomic_path,
    check_writable,
    provenance,
    sha256_file,
)

QUALITIES = ("random", "medium", "expert", "medium-replay", "medium-expert")
#: episodes per dataset (1M turns with 100-turn episodes) and the first user's seed
DATASET_EPISODES = 10_000
DATASET_SEED = 2_000_000
POLICIES_KIND = "benchmark_policies"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is missing or damaged ({type(exc).__name__}: {exc})") from None


def bundle_run(run_dir: PathLike, checkpoint: str, out: Path, with_replay: bool = False) -> dict[str, Any]:
    """Write the policy bundle of ``run_dir`` at ``checkpoint`` into ``out`` (a new folder)."""
    from gym_slaterec.run_dirs import checkpoint_file

    from sb3_slate.runs import REPLAY_SNAPSHOT_PREFIX, read_run

    run_dir, cfg, prov = read_run(run_dir)
    path, name = checkpoint_file(run_dir, checkpoint)
    config = json.loads((run_dir / "config.json").read_text())
    (out / "checkpoints").mkdir(parents=True)
    (out / "inputs").mkdir()
    for key, suffix in (("gems", ".pt"), ("mf", ".npz")):
        if config.get(key):
            shutil.copy2(getattr(cfg, key), out / "inputs" / (key + suffix))
            config[key] = f"inputs/{key}{suffix}"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for file in ("provenance.json", "results.json", "state.json"):
        if (run_dir / file).is_file():
            shutil.copy2(run_dir / file, out / file)
    shutil.copy2(path, out / "checkpoints" / ("best" + path.suffix))  # the bundle's one policy
    replay = None
    if with_replay:
        snapshot = run_dir / "checkpoints" / f"{REPLAY_SNAPSHOT_PREFIX}{name}.npz"
        if not snapshot.is_file():
            raise FileNotFoundError(f"{run_dir} kept no replay memory with checkpoint {name} (medium-replay needs one)")
        shutil.copy2(snapshot, out / "checkpoints" / f"{REPLAY_SNAPSHOT_PREFIX}best.npz")
        replay = "best"
    return {"checkpoint": "best", "source_checkpoint": name, "checkpoint_fingerprint": sha256_file(path),
            "replay": replay}


def _validation_at(state: dict[str, Any], episodes: int) -> Optional[float]:
    for v in state.get("validation", []):
        if int(v["episodes"]) == episodes:
            return float(v["mean"])
    return None


def choose_medium(run_dir: Path, random_return: float, medium: str = "halfway") -> tuple[str, float, float]:
    """``(checkpoint, its validation return, the target)``: with ``halfway``, the periodic
    checkpoint that kept its replay memory (else any periodic one) whose validation return is
    closest to halfway between ``random_return`` and the run's best validation return; or the
    checkpoint ``episodes:N`` / ``epNNNNNNN`` named by ``medium``."""
    from gym_slaterec.run_dirs import list_checkpoints

    from sb3_slate.runs import REPLAY_SNAPSHOT_PREFIX

    from .collect import checkpoint_episodes, resolve_checkpoint

    state = _read(run_dir / "state.json")
    best = max(float(v["mean"]) for v in state["validation"])
    target = (random_return + best) / 2
    periodic = [n for n in list_checkpoints(run_dir) if n.startswith("ep")]
    if medium != "halfway":
        name = resolve_checkpoint(periodic, medium)
        value = _validation_at(state, checkpoint_episodes(name))
        if value is None:
            raise ValueError(f"{run_dir}: no validation return at checkpoint {name}")
        return name, value, target
    kept = [n for n in periodic if (run_dir / "checkpoints" / f"{REPLAY_SNAPSHOT_PREFIX}{n}.npz").is_file()]
    scored = [(abs(v - target), n, v) for n in (kept or periodic)
              if (v := _validation_at(state, checkpoint_episodes(n))) is not None]
    if not scored:
        raise ValueError(f"{run_dir} has no periodic checkpoint with a validation return (train with "
                         "checkpoint_every a multiple of val_every)")
    _, name, value = min(scored)
    return name, value, target


def build_policies(run_dir: PathLike, out: PathLike, medium: str = "halfway", overwrite: bool = False,
                   replay: bool = True) -> dict[str, Any]:
    """The policies folder of a finished agent run (a SAC+GeMS of the paper regime with periodic
    checkpoints and replay snapshots): the expert and medium bundles and ``benchmark.json``;
    ``replay=False`` leaves the medium's replay memory out (a folder small enough to ship)."""
    from gym_slaterec.scores import reference_returns

    from sb3_slate.runs import read_run

    run_dir, cfg, prov = read_run(run_dir)
    if not (run_dir / "results.json").is_file():
        raise ValueError(f"{run_dir} is not finished (no results.json): its best checkpoint is not final")
    out = Path(out)
    check_writable(out, overwrite, POLICIES_KIND)
    env = cfg.env_id.split("/")[-1].split("-v")[0]
    ref = reference_returns().get(env)
    item_fp = prov.get("item_embeddings_fingerprint") or ""
    if ref is None or not item_fp.startswith(str(ref["item_matrix"])[:12]) or cfg.env_kwargs:
        raise ValueError(f"{run_dir}: no shipped random return for {cfg.env_id} with this item matrix and these "
                         "environment overrides (gym_slaterec/data/reference_returns.json); the medium level "
                         "is defined from it")
    name, value, target = choose_medium(run_dir, float(ref["random"]), medium)
    results = _read(run_dir / "results.json")
    with atomic_path(out, overwrite, directory=True, kind=POLICIES_KIND) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        expert = bundle_run(run_dir, "best", tmp / "expert")
        med = bundle_run(run_dir, name, tmp / "medium", with_replay=replay and name.startswith("ep") and (
            run_dir / "checkpoints" / f"replay_{name}.npz").is_file())
        manifest = provenance(
            POLICIES_KIND, env_id=cfg.env_id, env_params=prov.get("env_params"), item_embeddings_fingerprint=item_fp,
            inputs={"run": sha256_file(run_dir / "provenance.json"), **(prov.get("inputs") or {})}, seed=cfg.seed,
            hyperparameters={"medium": medium}, method=cfg.method, source_run=str(run_dir),
            reference={"random": float(ref["random"]), "expert_validation": float(results["best"]["validation_return"]),
                       "expert_test": float(results["test"]["mean"]), "medium_target": target},
            policies={"expert": {"dir": "expert", **expert, "validation_return": float(results["best"]["validation_return"]),
                                 "episodes": int(results["best"]["episodes"])},
                      "medium": {"dir": "medium", **med, "validation_return": value,
                                 "episodes": int(name[2:]) if name[2:].isdigit() else None}},
            datasets={"episodes": DATASET_EPISODES, "seed": DATASET_SEED, "fingerprints": {}},
        )
        (tmp / BENCHMARK_MARKER).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def shipped_root() -> Path:
    """Where the package keeps its policies folders, one per environment."""
    import gym_slaterec

    return Path(gym_slaterec.__file__).parent / "data" / "benchmark"


def shipped_policies(name: str) -> Path:
    """The policies folder of environment ``name`` shipped with the package (:func:`shipped_root`)."""
    from gym_slaterec.core.config import preset

    root = shipped_root()
    env = preset(name).env_id.split("/")[-1].split("-v")[0]
    if not (root / env / BENCHMARK_MARKER).is_file():
        shipped = sorted(p.name for p in root.iterdir() if (p / BENCHMARK_MARKER).is_file()) if root.is_dir() else []
        raise FileNotFoundError(f"no benchmark policies ship for {env} yet (shipped: {', '.join(shipped) or 'none'}); "
                                "build them: slaterec benchmark train-policies ENV --out DIR, and pass DIR/ENV here")
    return root / env


def policies_folder(spec: PathLike) -> Path:
    """A policies folder given as a path, or as an environment name whose policies ship."""
    return Path(spec) if Path(spec).is_dir() else shipped_policies(str(spec))


def read_policies(policies: PathLike) -> dict[str, Any]:
    """``benchmark.json`` of a policies folder, checked."""
    path = Path(policies) / BENCHMARK_MARKER
    if not path.is_file():
        raise FileNotFoundError(f"{policies} is not a benchmark policies folder (no {BENCHMARK_MARKER}; build one with "
                                "slaterec benchmark policies RUN --out DIR)")
    manifest = _read(path)
    if manifest.get("kind") != POLICIES_KIND or manifest.get("package") != "slaterec":
        raise ValueError(f"{path} is not a slaterec benchmark policies record")
    return manifest


def available_qualities(policies: PathLike) -> list[str]:
    """The datasets a policies folder can rebuild: all five, less ``medium-replay`` when its medium
    bundle kept no replay memory and is no periodic checkpoint (which :func:`rebuild_replay` retrains)."""
    medium = read_policies(policies)["policies"]["medium"]
    return [q for q in QUALITIES if q != "medium-replay" or medium.get("replay") or medium.get("episodes")]


#: where :func:`rebuild_replay` retrains, inside a dataset folder (resumable; removed once the dataset is written)
REBUILD_DIR = ".medium-replay-run"


def _weights(model: Any) -> dict[str, Any]:
    import torch

    return {f"{name}.{k}": t for name, value in vars(model).items() if isinstance(value, torch.nn.Module)
            for k, t in value.state_dict().items()}


def rebuild_replay(policies: PathLike, work: PathLike, progress: bool = True) -> tuple[Path, str, dict[str, Any]]:
    """Retrain the medium bundle's agent from its seed up to the medium checkpoint, keeping the
    replay memory there: medium-replay for a policies folder that left the memory out (the shipped
    ones: it is ~160 MB). The retrained run lies in ``work`` (an interrupted retraining resumes).
    Returns the run, its checkpoint name and a record of the check against the shipped policy:
    its weights' largest difference and whether its validation curve is the one the bundle kept
    (both exact on the CPU and torch build that trained it; other hardware rounds differently)."""
    import torch

    from gym_slaterec.provenance import arithmetic_of
    from sb3_slate.runs import load_agent, read_run, train_run

    policies = Path(policies)
    medium = read_policies(policies)["policies"]["medium"]
    episodes = medium.get("episodes")
    if not episodes:
        raise ValueError(f"{policies}: the medium policy is not a periodic checkpoint of its run, so its replay memory "
                         "cannot be rebuilt by retraining")
    bundle = policies / medium["dir"]
    _, cfg, _ = read_run(bundle)
    cfg.episodes, cfg.replay_snapshots, cfg.max_wall_s = int(episodes), [int(episodes)], None
    cfg.validate()
    run = Path(work)
    t0 = time.time()
    if (run / "results.json").is_file():  # retrained before (its dataset was then refused or interrupted)
        if read_run(run)[1].to_dict() != cfg.to_dict():
            raise ValueError(f"{run} holds another finished run than the medium agent's retraining; remove it")
        t0 -= float(_read(run / "state.json").get("wall_s", 0.0))
    else:
        threads = torch.get_num_threads()
        try:
            with arithmetic_of(_read(bundle / "provenance.json").get("runtime", {}).get("arithmetic")):
                train_run(cfg, run, progress=progress, device="cpu")  # rounded as the shipped run was
        finally:
            torch.set_num_threads(threads)
    name = f"ep{int(episodes):07d}"
    mine = _weights(load_agent(run, name, warn_unfinished=False).model)
    shipped = _weights(load_agent(bundle, medium["checkpoint"], warn_unfinished=False).model)
    if set(mine) != set(shipped):
        raise ValueError(f"the retrained medium agent in {run} does not have the shipped one's weights "
                         f"({sorted(set(mine) ^ set(shipped))[:3]})")
    diff = max(float((mine[k].double() - shipped[k].double()).abs().max()) if mine[k].numel() else 0.0 for k in mine)
    curve = lambda d: [(v["episodes"], v["mean"]) for v in _read(d / "state.json")["validation"] if v["episodes"] <= episodes]
    record = {"episodes": int(episodes), "seed": cfg.seed, "wall_s": round(time.time() - t0, 1),
              "policy_max_abs_diff": diff, "validation_matches": curve(run) == curve(bundle)}
    return run, name, record


class FingerprintMismatch(ValueError):
    """A rebuilt dataset differs from the one recorded for its policies folder."""


def why_rounded_otherwise(arithmetic: dict[str, Any], retrained: bool = False,
                          recorded_with: Optional[dict[str, Any]] = None) -> str:
    """What most likely made a rebuilt dataset differ from the record, given how it was computed,
    whether it comes from a retrained medium agent and, where the record says, the CPU vendor it
    was made on."""
    mine, theirs = arithmetic.get("cpu_vendor"), (recorded_with or {}).get("cpu_vendor")
    vendors = (f"the record was made on a CPU from {theirs} and this one is from {mine}: MKL's reproducible branch "
               "(MKL_CBWR) holds on Intel CPUs only and other CPUs take its automatic one, so matrix products round "
               "differently across the two vendors, even with the portable kernels"
               if mine and theirs and mine != theirs else "")
    if retrained:
        return ("the medium agent retrained here did not repeat the original training: a training repeats bit for "
                "bit only with arithmetic that rounds as where it first ran (the shipped policies were trained with "
                "their machine's own kernels), or another version of the training code computed it"
                + (f"; also, {vendors}" if vendors else ""))
    if vendors:
        return f"{vendors}; a rebuild repeats the record on {theirs} CPUs with AVX2"
    if arithmetic.get("portable"):
        return ("the policy's actions rounded otherwise even with the portable kernels: another torch or MKL build, a "
                "CPU without AVX2 or not x86-64, or a record made with --native-arithmetic")
    return ("computed with this CPU's own kernels (--native-arithmetic or a process started otherwise), which round "
            "the policy's actions differently from one CPU to another")


def mismatch_extent(mean_return: float, recorded: Optional[float], episodes: int) -> str:
    """How far a rebuilt dataset with another fingerprint lies from the recorded one, told by their
    mean returns (a return counts clicks, so equal totals mean the same clicks, most likely the same
    slates, and only the stored actions' rounding differs); empty when no mean return is recorded."""
    if recorded is None:
        return ""
    clicks = round(mean_return * episodes) - round(float(recorded) * episodes)
    if clicks == 0:
        return (f"; its mean return equals the recorded one ({mean_return:.4f}): most likely the same slates and "
                "clicks, only the stored actions rounded otherwise")
    return (f"; its mean return is {mean_return:.4f} against the recorded {float(recorded):.4f}, {clicks:+d} clicks "
            f"in {episodes:,} episodes: its trajectories differ")


def other_vendor(spec: dict[str, Any], vendor: Optional[str]) -> Optional[str]:
    """``vendor`` where the main record was made on another vendor's CPU (its own record then
    goes in ``datasets.by_vendor``), else None."""
    primary = (spec.get("recorded_with") or {}).get("cpu_vendor")
    return vendor if vendor and primary and vendor != primary else None


def recorded_for(spec: dict[str, Any], episodes: int, quality: str, vendor: Optional[str],
                 own_only: bool = False) -> tuple[Optional[str], Optional[float], Optional[dict[str, Any]]]:
    """The fingerprint, mean return and recording conditions a dataset rebuilt on a CPU from ``vendor``
    is checked against: that vendor's own record (``datasets.by_vendor``: matrix products round
    alike on CPUs of one vendor, not across vendors) where it holds the quality, else the main record.
    ``own_only``: the vendor's own record or nothing (``--record`` on a vendor the main record is not from)."""
    n = str(episodes)
    if other_vendor(spec, vendor):
        own = (spec.get("by_vendor") or {}).get(vendor) or {}
        fingerprint = (own.get("fingerprints") or {}).get(n, {}).get(quality)
        if fingerprint is not None or own_only:
            return fingerprint, (own.get("mean_returns") or {}).get(n, {}).get(quality), own.get("recorded_with")
    return (spec["fingerprints"].get(n, {}).get(quality), spec.get("mean_returns", {}).get(n, {}).get(quality),
            spec.get("recorded_with"))


def build_datasets(policies: PathLike, out: PathLike, qualities: Sequence[str] = QUALITIES,
                   episodes: Optional[int] = None, overwrite: bool = False, record: bool = False,
                   progress: bool = True, allow_mismatch: bool = False) -> list[dict[str, Any]]:
    """Write the chosen datasets of one environment into ``out/QUALITY`` from its policies folder;
    returns one row per dataset (quality, episodes, mean return, fingerprint and whether it
    matches the one recorded for datasets of this size). Each dataset's provenance gets a
    ``benchmark`` record: its quality, collecting policy, reference returns and the fingerprint
    check. A dataset whose fingerprint differs from the recorded one is removed and refused
    (:class:`FingerprintMismatch`) unless ``allow_mismatch``, which keeps it and records the
    mismatch. ``record``: write the fingerprints into ``benchmark.json`` (on a CPU of another vendor
    than the main record's: that vendor's own record, :func:`recorded_for`). The provenance also records
    how this process rounds (:func:`gym_slaterec.core.portable.arithmetic_record`): ``slaterec
    benchmark datasets`` computes with the portable kernels, this function with the process's own."""
    from gym_slaterec.core.portable import arithmetic_record
    from gym_slaterec.logged_data import LoggedDataset, annotate_provenance

    from .collect import collect, collect_replay
    from .merge import merge_datasets

    policies = Path(policies)
    manifest = read_policies(policies)
    bad = [q for q in qualities if q not in QUALITIES]
    if bad or not qualities:
        raise ValueError(f"unknown dataset quality {', '.join(bad) or '(none)'}; expected some of {', '.join(QUALITIES)}")
    spec = manifest["datasets"]
    n = int(episodes or spec["episodes"])
    wanted = list(dict.fromkeys(q for q in QUALITIES if q in qualities or (
        q in ("medium", "expert") and "medium-expert" in qualities)))
    rebuild = "medium-replay" in wanted and not manifest["policies"]["medium"].get("replay")
    if rebuild and not manifest["policies"]["medium"].get("episodes"):
        raise ValueError(f"{policies}: the medium policy kept no replay memory and is not a periodic checkpoint, so "
                         "medium-replay can be neither copied nor retrained; build the policies with slaterec "
                         "benchmark train-policies to have it")
    out = Path(out)
    for q in wanted:
        check_writable(out / q, overwrite, ("collected_dataset",))
    env_id, seed = manifest["env_id"], int(spec["seed"])
    pol = manifest["policies"]
    source = {"policies": str(policies.resolve()), "policies_record": sha256_file(policies / BENCHMARK_MARKER),
              "source_run": manifest.get("source_run"), "reference": manifest.get("reference")}
    rows = []
    arithmetic = arithmetic_record()
    for q in wanted:
        dest = out / q
        if q == "random":
            ds = collect(env_id, "random", n, seed, dest, overwrite=overwrite, progress=progress)
        elif q in ("medium", "expert"):
            ds = collect(env_id, policies / pol[q]["dir"], n, seed, dest, checkpoint=pol[q]["checkpoint"],
                         overwrite=overwrite, progress=progress)
        elif q == "medium-replay" and rebuild:
            run, name, retrained = rebuild_replay(policies, out / REBUILD_DIR, progress=progress)
            ds = collect_replay(run, name, dest, overwrite=overwrite, progress=progress)
        elif q == "medium-replay":
            ds = collect_replay(policies / pol["medium"]["dir"], pol["medium"]["replay"], dest, overwrite=overwrite,
                                progress=progress)
        else:
            ds, _ = merge_datasets([out / "medium", out / "expert"], dest, overwrite=overwrite, progress=progress)
        ds = LoggedDataset.load(dest)
        recorded, recorded_return, recorded_with = recorded_for(spec, n, q, arithmetic.get("cpu_vendor"), own_only=record)
        matches = None if recorded is None else recorded == ds.fingerprint
        mean_return = float(ds.returns().mean())
        if q == "random":
            collecting: Any = "random"
        elif q == "medium-expert":
            collecting = ["medium", "expert"]
        else:
            collecting = {k: pol["medium" if q == "medium-replay" else q].get(k) for k in (
                "source_checkpoint", "checkpoint_fingerprint", "validation_return", "episodes")}
        annotate_provenance(dest, "benchmark", {
            "quality": q, "collecting_policy": collecting, **source, "recorded_fingerprint": recorded,
            "recorded_mean_return": recorded_return, "recorded_on": (recorded_with or {}).get("cpu_vendor"),
            "matches": matches, "arithmetic": arithmetic,
            "mismatch_allowed": bool(allow_mismatch and matches is False),
            **({"retrained": retrained} if q == "medium-replay" and rebuild else {})})
        if matches is False and not allow_mismatch:
            shutil.rmtree(dest)
            raise FingerprintMismatch(
                f"{q} of {env_id}: the rebuilt dataset's fingerprint {ds.fingerprint[:12]} differs from the recorded "
                f"{str(recorded)[:12]} ({why_rounded_otherwise(arithmetic, q == 'medium-replay' and rebuild, recorded_with)})"
                f"{mismatch_extent(mean_return, recorded_return, ds.num_episodes)}; it was removed. Pass "
                "--allow-mismatch to keep it (in a sweep: offline.allow_mismatch: true), its provenance then "
                "recording the mismatch"
                + (f"; the retrained medium agent stays in {out / REBUILD_DIR} and is reused"
                   if q == "medium-replay" and rebuild else ""))
        if q == "medium-replay" and rebuild:
            shutil.rmtree(out / REBUILD_DIR)  # ~0.5 GB of checkpoints and memories; the dataset records the check
        rows.append({"quality": q, "path": str(dest), "episodes": ds.num_episodes, "mean_return": mean_return,
                     "fingerprint": ds.fingerprint, "recorded": recorded, "recorded_mean_return": recorded_return,
                     "matches": matches})
    if record:
        target = manifest["datasets"]
        vendor = other_vendor(spec, arithmetic.get("cpu_vendor"))
        if vendor:  # the main record stays; this vendor gets its own
            target = target.setdefault("by_vendor", {}).setdefault(vendor, {})
        target.setdefault("fingerprints", {}).setdefault(str(n), {}).update({r["quality"]: r["fingerprint"] for r in rows})
        target.setdefault("mean_returns", {}).setdefault(str(n), {}).update({r["quality"]: r["mean_return"] for r in rows})
        target["recorded_with"] = arithmetic
        with atomic_path(policies / BENCHMARK_MARKER, overwrite=True) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return [r for r in rows if r["quality"] in qualities]
