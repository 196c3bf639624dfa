"""Several seeds of one training (``slaterec train METHOD ENV --seeds 0 1 2``).

Each seed is an ordinary run directory, trained by ``slaterec train ... --seed i`` in a child
process of its own (one thread each, ``jobs`` at a time): seed i follows exactly the trajectory
of the single-seed run, a failing seed does not stop the others, and every run directory is
resumable, evaluable and collectable on its own. Every seed's inputs (its GeMS / MF, its run
directory) are checked before any child starts. Running the same command again resumes the
unfinished seeds and reports the finished ones.

On a CPU, separate processes are the fastest way to train seeds side by side: one paper-regime
SAC step is mostly arithmetic, so fusing seeds into one process gains at most ~1.1x per seed
(BENCHMARKS.md "Fused seeds"), while each extra core adds a whole seed's throughput.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from gym_slaterec.provenance import ArtifactExistsError, PathLike

from .methods import RunConfig

#: how a run directory is named for each seed when ``--out`` holds no ``{seed}`` field
SEED_DIR = "s{seed}"


@dataclass
class SeedRun:
    """One seed of a multi-seed training: its configuration, run directory and what is to do."""

    seed: int
    config: RunConfig
    out: Path
    status: str = "new"  # new | resume | complete
    results: Optional[dict[str, Any]] = None
    error: Optional[str] = None
    extra_argv: list[str] = field(default_factory=list)  # per-seed inputs (--gems / --mf)


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """The seeds as given, refused when empty or repeated."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"--seeds: seed(s) {', '.join(map(str, repeated))} given more than once")
    return seeds


def per_seed(name: str, values: Optional[Sequence[Any]], seeds: Sequence[int]) -> list[Any]:
    """One value per seed from an option given once (shared by all seeds) or once per seed."""
    if not values:
        return [None] * len(seeds)
    if len(values) == 1:
        return list(values) * len(seeds)
    if len(values) != len(seeds):
        raise ValueError(f"{name}: give one file for all seeds or one per seed ({len(seeds)}), got {len(values)}")
    return list(values)


def seed_out(out: Optional[PathLike], seed: int) -> Optional[Path]:
    """The run directory of ``seed`` under ``--out``: the path with ``{seed}`` filled, else
    ``OUT/s{seed}`` (None: the default run directory)."""
    if out is None:
        return None
    text = str(out)
    if "{" in text or "}" in text:
        try:
            return Path(text.format(seed=seed))
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(f"--out {text!r}: only the field {{seed}} may be used ({exc})") from None
    return Path(out) / SEED_DIR.format(seed=seed)


def plan_seed_runs(runs: list[SeedRun]) -> list[SeedRun]:
    """Check every seed before anything trains: distinct run directories, each one new, an
    unfinished run of the same configuration (resumed) or a finished one (reported); each
    seed's GeMS / MF loaded and checked against the environment."""
    from gym_slaterec.run_dirs import check_same_run, read_run_json

    from .runs import existing_run, load_run_inputs

    outs = [r.out.resolve() for r in runs]
    if len(set(outs)) != len(outs):
        raise ValueError("the seeds' run directories are not distinct; give --out a {seed} field or a parent folder")
    for r in runs:
        where = f"seed {r.seed}"
        try:
            state = existing_run(r.config, r.out)
            if state is not None and state.get("status") == "complete":
                check_same_run(r.out, RunConfig.from_json(read_run_json(r.out / "config.json")).to_dict(),
                               r.config.to_dict())
                r.status, r.results = "complete", read_run_json(r.out / "results.json")
                continue
            r.status = "new" if state is None else "resume"
            load_run_inputs(r.config)
        except (ValueError, FileNotFoundError, ArtifactExistsError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
    return runs


def default_jobs(n: int, threads: int = 1) -> int:
    """Seeds trained at once: one per available core (``threads`` cores per seed), at most ``n``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(n, cores // max(1, threads)))


def train_seeds(runs: list[SeedRun], argv_of: Callable[[SeedRun], list[str]], jobs: int, threads: int = 1,
                progress: bool = True, cwd: Optional[str] = None) -> list[SeedRun]:
    """Train the planned seeds that are not complete, ``jobs`` child processes at a time, each
    ``slaterec`` + ``argv_of(run)`` with ``threads`` threads; fills each run's ``results`` (or
    ``error``). An interruption stops every child, each leaving a resumable run directory."""
    from gym_slaterec.cli.children import child_env, start_child, stop_children, tail
    from gym_slaterec.provenance import mark_run_status
    from gym_slaterec.progress import progress as progress_bar
    from gym_slaterec.run_dirs import read_run_json

    todo = [r for r in runs if r.status != "complete"]
    if not todo:
        return runs
    total = sum(r.config.episodes for r in todo)
    bar = progress_bar(progress, total=total, desc=f"{runs[0].config.method} x {len(todo)} seeds", unit="ep")
    waiting, running = list(todo), {}  # seed -> (run, proc, log file)

    def episodes_done(r: SeedRun) -> int:
        try:
            return int(read_run_json(r.out / "state.json").get("episodes", 0))
        except (OSError, ValueError):
            return 0

    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                r = waiting.pop(0)
                log = tempfile.NamedTemporaryFile("w", prefix=f"slaterec-train-s{r.seed}-", suffix=".log",
                                                  delete=False, buffering=1)
                proc = start_child(argv_of(r), log, cwd or os.getcwd(), child_env(threads))
                running[r.seed] = (r, proc, log)
                if not progress:
                    bar.write(f"seed {r.seed}: {'resumed' if r.status == 'resume' else 'started'} in {r.out}")
            for seed, (r, proc, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[seed]
                if proc.returncode == 0 and (r.out / "results.json").is_file():
                    r.results, r.status = read_run_json(r.out / "results.json"), "complete"
                    os.unlink(log.name)
                    t = r.results["test"]
                    bar.write(f"seed {r.seed}: test return {t['mean']:.2f} ({r.out})")
                else:
                    r.error = f"exit status {proc.returncode}: {tail(Path(log.name))} (output: {log.name})"
                    bar.write(f"seed {r.seed}: failed, {r.error}")
            bar.n = sum(min(episodes_done(r), r.config.episodes) for r in todo)
            bar.set_postfix_str(f"{len(running)} running, {len(waiting)} waiting", refresh=False)
            bar.refresh()
            if waiting or running:
                time.sleep(1.0)
    except BaseException:
        killed = stop_children([proc for _, proc, _ in running.values()])
        for r, proc, log in running.values():
            log.close()
            if proc in killed:  # its last checkpoint is its resume point; say so on disk
                mark_run_status(r.out, "interrupted")
                bar.write(f"seed {r.seed}: did not stop within a minute and was killed; it resumes from its last "
                          f"checkpoint (its stacks are at the end of {log.name})")
        raise
    finally:
        bar.close()
    return runs


def seeds_summary(runs: Sequence[SeedRun]) -> dict[str, Any]:
    """Per-seed test returns and their mean with the 95 % Student-t interval over seeds."""
    import math

    from scipy import stats

    done = [r for r in runs if r.results is not None]
    values = [float(r.results["test"]["mean"]) for r in done]
    out: dict[str, Any] = {"seeds": [r.seed for r in runs], "runs": {str(r.seed): str(r.out) for r in runs},
                           "test": {str(r.seed): v for r, v in zip(done, values)},
                           "failed": {str(r.seed): r.error for r in runs if r.error}}
    if values:
        n, mean = len(values), sum(values) / len(values)
        half = float("nan") if n < 2 else float(stats.t.ppf(0.975, n - 1)) * math.sqrt(
            sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)
        out["mean"] = {"mean": mean, "ci95": [mean - half, mean + half], "n": n}
    return out
