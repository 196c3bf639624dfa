"""``slaterec sweep``: a grid of trials run on Ray (or one after another without it).

The sweep directory holds ``sweep.json`` (the grid, every trial's command and
status), ``logs/`` (each trial's output) and the artifacts the trials write
(``logged/``, ``gems/``, ``mf/``, ``runs/``). Running the same command again
resumes: finished trials are kept, unfinished runs resume from their last
checkpoint, failed trials are retried. Each trial is a ``slaterec`` command in
its own process, so a trial that crashes cannot take the sweep down with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from gym_slaterec.cli import sigterm_as_interrupt
from gym_slaterec.cli.children import child_env, start_child, stop_child, tail
from gym_slaterec.locks import writer_lock
from gym_slaterec.provenance import package_version, write_json_atomic

from .grid import Trial, expand, grid_fingerprint, retries_of, seed_run_ids

SWEEP_FORMAT = "slaterec.sweep/1"
SWEEP_FILE = "sweep.json"
#: statuses a trial can have in sweep.json
PENDING, RUNNING, DONE, FAILED, BLOCKED, INTERRUPTED = "pending", "running", "done", "failed", "blocked", "interrupted"

def visible_gpus() -> list[str]:
    """The GPUs the local executor may hand to trials: ``$CUDA_VISIBLE_DEVICES`` when set (so a
    sweep can be confined to some devices), else every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch build with CUDA: no GPUs
        return []


def assign_gpus(trials: list[dict[str, Any]], devices: list[str]) -> None:
    """``devices`` of each trial with ``gpus`` > 0: the first ceil(gpus) visible GPUs (the local
    executor runs one trial at a time; fractions share a device, as Ray's do). Refused before
    anything runs when a trial asks for more GPUs than are visible."""
    import math

    for t in trials:
        need = math.ceil(t.get("gpus") or 0)
        if need > len(devices):
            raise ValueError(f"trial {t['id']} asks for {t['gpus']:g} GPU(s), but {len(devices)} are visible "
                             f"({', '.join(devices) or 'none'}); lower resources.gpus or use Ray on a GPU cluster")
        t["devices"] = ",".join(devices[:need]) if need else None


def run_command(argv: list[str], log_path: str, cwd: str, threads: int,
                devices: Optional[str] = None) -> dict[str, Any]:
    """Run ``slaterec ARGV`` in a child process, its output appended to ``log_path``;
    ``devices``: its ``CUDA_VISIBLE_DEVICES`` (None: inherited).

    An interruption of the caller (Ctrl-C, a Ray cancellation) is passed to the child
    as SIGINT, which every slaterec command answers by leaving a resumable state.
    """
    env = child_env(threads, devices)
    t0 = time.time()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} slaterec {' '.join(argv)}\n")
        proc = start_child(argv, log, cwd, env)
        try:
            code = proc.wait()
        except BaseException:
            stop_child(proc)
            raise
        log.write(f"=== exit status {code} after {time.time() - t0:.1f} s\n")
    return {"returncode": code, "wall_s": time.time() - t0}


def run_inline(argv: list[str], log_path: str) -> dict[str, Any]:
    """Run ``slaterec ARGV`` in this process (``--executor inline``), its output appended
    to ``log_path``; Ctrl-C reaches the command, which saves a resume point, then the sweep."""
    import contextlib

    from gym_slaterec.cli import main

    t0 = time.time()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} slaterec {' '.join(argv)} (in the sweep's process)\n")
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            code = main(argv)
        log.write(f"=== exit status {code} after {time.time() - t0:.1f} s\n")
    if code == 130:  # the command was interrupted and has saved what it could
        raise KeyboardInterrupt
    return {"returncode": code, "wall_s": time.time() - t0}


def is_done(sweep_dir: Path, trial: dict[str, Any]) -> bool:
    """Whether the trial's artifact is complete on disk (whatever sweep.json says)."""
    from gym_slaterec.provenance import DATASET_KINDS, identify_artifact

    if trial["kind"] == "seeds":
        return all(is_done(sweep_dir, {"id": rel, "kind": "run"}) for _, rel in seed_run_ids(trial))
    out = sweep_dir / trial["id"]
    if not out.exists():
        return False
    if trial["kind"] in ("run", "offline"):
        try:
            return "test" in json.loads((out / "results.json").read_text())
        except (OSError, ValueError):
            return False
    kind, _ = identify_artifact(out)
    if trial["kind"] == "logged":
        return kind == "logged_dataset"
    if trial["kind"] == "collect":
        return kind in DATASET_KINDS
    if trial["kind"] == "export":
        return kind == "d3rlpy_dataset"
    if trial["kind"] == "mf":
        return kind == "mf_embeddings"
    if kind != "gems_checkpoint":
        return False
    import torch

    payload = torch.load(out, map_location="cpu", weights_only=True)
    return (payload.get("provenance") or {}).get("complete") is not False


def _foreign_entries(sweep_dir: Path, trials: list[Trial]) -> list[str]:
    """Entries of an existing folder that are no trial output of the grid (nor a folder on the way to one).

    A folder holding only outputs of this grid's trials (a trial run by hand with the
    command ``--dry-run`` prints) is adopted as the sweep directory: what is complete
    on disk counts as done, the rest resumes or runs.
    """
    if not sweep_dir.exists():
        return []
    outputs = {rel for t in trials for _, rel in seed_run_ids(t.to_dict())} | {"logs"}
    on_the_way = {rel.rsplit("/", i)[0] for rel in outputs for i in range(1, rel.count("/") + 1)}
    stray, todo = [], [sweep_dir]
    while todo:
        for entry in sorted(todo.pop().iterdir()):
            if entry.name.startswith("."):
                continue
            rel = entry.relative_to(sweep_dir).as_posix()
            if rel in outputs:
                continue
            if rel in on_the_way and entry.is_dir():
                todo.append(entry)
            else:
                stray.append(rel)
    return stray


@dataclass
class Sweep:
    """The state of a sweep directory (``sweep.json``)."""

    path: Path
    record: dict[str, Any]
    trials: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, grid: dict[str, Any], grid_file: Path, sweep_dir: Path) -> "Sweep":
        """Create the sweep directory, or reopen it when it holds a sweep of the same grid."""
        sweep_dir = Path(sweep_dir).resolve()
        trials = expand(grid, sweep_dir)
        fingerprint = grid_fingerprint(grid)
        state_file = sweep_dir / SWEEP_FILE
        if state_file.is_file():
            try:
                record = json.loads(state_file.read_text())
            except ValueError as exc:
                raise ValueError(f"{state_file} is not readable JSON ({exc}); move the folder away to start afresh") from exc
            if record.get("format") != SWEEP_FORMAT:
                raise ValueError(f"{state_file} is not a slaterec sweep record")
            if record.get("grid_sha256") != fingerprint:
                raise ValueError(
                    f"{sweep_dir} holds a sweep of another grid ({record.get('grid_file')}, fingerprint "
                    f"{str(record.get('grid_sha256'))[:12]}; this grid {fingerprint[:12]}); choose another --out, "
                    "or move that folder away")
            known = {t["id"]: t for t in record["trials"]}
            for t in trials:  # commands are re-derived (same grid), statuses kept
                old = known.get(t.id, {})
                known[t.id] = {**t.to_dict(), **{k: old[k] for k in ("status", "attempts", "wall_s", "error", "log")
                                                  if k in old}}
            record["trials"] = [known[t.id] for t in trials]
        else:
            stray = _foreign_entries(sweep_dir, trials)
            if stray:
                raise FileExistsError(
                    f"{sweep_dir} exists and is not a sweep directory (it holds {stray[0]}, which is no output of "
                    "this grid); choose another --out")
            record = {"format": SWEEP_FORMAT, "package": "slaterec", "kind": "sweep", "version": package_version(),
                      "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "grid_file": str(grid_file), "grid_sha256": fingerprint, "grid": grid,
                      "trials": [{**t.to_dict(), "status": PENDING, "attempts": 0} for t in trials]}
        sweep = cls(sweep_dir, record)
        sweep.trials = {t["id"]: t for t in record["trials"]}
        for t in sweep.trials.values():
            t.setdefault("status", PENDING)
            t.setdefault("attempts", 0)
            t["log"] = str(Path("logs") / (t["id"].replace("/", "__") + ".log"))
        return sweep

    def save(self) -> None:
        self.record["trials"] = list(self.trials.values())
        self.record["updated_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json_atomic(self.path / SWEEP_FILE, self.record, overwrite=True)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (PENDING, RUNNING, DONE, FAILED, BLOCKED, INTERRUPTED)}
        for t in self.trials.values():
            out[t["status"]] = out.get(t["status"], 0) + 1
        return out


class _Progress:
    def __init__(self, sweep: Sweep, enabled: bool) -> None:
        from tqdm.auto import tqdm

        from gym_slaterec.progress import bar_can_draw

        enabled = enabled and bar_can_draw()  # in a log, plain lines (say) instead of bar redraws
        self.sweep = sweep
        self.bar = tqdm(total=len(sweep.trials), initial=sweep.counts()[DONE], unit="trial",
                        desc=f"sweep {sweep.record['grid'].get('name', sweep.path.name)}", disable=not enabled,
                        dynamic_ncols=True)
        self.enabled = enabled
        self.refresh()

    def refresh(self) -> None:
        c = self.sweep.counts()
        self.bar.n = c[DONE]
        self.bar.set_postfix_str(f"done {c[DONE]} running {c[RUNNING]} failed {c[FAILED] + c[BLOCKED]} "
                                 f"pending {c[PENDING] + c[INTERRUPTED]}")

    def say(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        self.bar.close()


def _result_note(sweep_dir: Path, trial: dict[str, Any]) -> str:
    if trial["kind"] not in ("run", "offline", "seeds"):
        return ""
    tests = []
    for _, rel in seed_run_ids(trial):
        try:
            tests.append(f"{json.loads((sweep_dir / rel / 'results.json').read_text())['test']['mean']:.2f}")
        except (OSError, ValueError, KeyError):
            pass
    return f", test {', '.join(tests)}" if tests else ""


def run_sweep(grid: dict[str, Any], grid_file: Path, sweep_dir: Path, executor: str = "auto",
              address: Optional[str] = None, workers: Optional[int] = None, progress: bool = True,
              retries: Optional[int] = None) -> Sweep:
    """Run (or resume) every trial of ``grid`` in ``sweep_dir``; returns the final state.

    ``executor``: "ray" (a local Ray instance, or the cluster at ``address``),
    "local" (one trial after another, each in a child process), "inline" (one after
    another in this process) or "auto" (Ray when it is installed, else local).
    """
    if executor not in ("auto", "ray", "local", "inline"):
        raise ValueError(f"executor must be auto, ray, local or inline, got {executor!r}")
    import importlib.util

    has_ray = importlib.util.find_spec("ray") is not None
    auto = executor == "auto"
    if executor == "auto":
        executor = "ray" if has_ray else "local"
    if executor == "ray":
        if not has_ray:
            raise ValueError("Ray is not installed: pip install 'slaterec[ray]', or run with --executor local")
    elif address is not None:
        raise ValueError("--address needs the Ray executor")
    retries = retries_of(grid) if retries is None else retries
    sweep_dir = Path(sweep_dir).resolve()
    sweep = Sweep.open(grid, Path(grid_file), sweep_dir)
    if grid.get("trackers"):  # the trackers' project of every trial: the grid's name unless one is set
        from .grid import grid_name

        os.environ.setdefault("SLATEREC_PROJECT", grid_name(grid) or sweep_dir.name)
    with writer_lock(sweep_dir), sigterm_as_interrupt():
        for t in sweep.trials.values():  # what the disk says wins over a record left by a killed driver
            done = is_done(sweep_dir, t)
            if done:
                t["status"] = DONE
            elif t["status"] in (DONE, RUNNING, BLOCKED, FAILED, INTERRUPTED):
                t["status"] = PENDING
        sweep.save()
        bar = _Progress(sweep, progress)
        bar.say(f"sweep {sweep_dir}: {len(sweep.trials)} trials, {sweep.counts()[DONE]} already done; "
                f"executor {executor}" + (f" at {address}" if address else ""))
        try:
            if executor == "ray":
                try:
                    _run_ray(sweep, bar, retries, address, workers)
                except RayStartError as exc:  # raised before any trial was handed to Ray
                    if not auto or address is not None:
                        raise
                    bar.say(f"warning: {exc}; falling back to the local executor")
                    _run_local(sweep, bar, retries)
            else:
                _run_local(sweep, bar, retries, inline=executor == "inline")
        finally:
            for t in sweep.trials.values():
                if t["status"] == RUNNING:
                    t["status"] = INTERRUPTED
            sweep.save()
            bar.refresh()
            bar.close()
    return sweep


def _ready(sweep: Sweep) -> list[dict[str, Any]]:
    """Pending trials whose dependencies are done; dependents of failures become blocked."""
    out = []
    for t in sweep.trials.values():
        if t["status"] != PENDING:
            continue
        deps = [sweep.trials[d]["status"] for d in t["deps"]]
        if any(s in (FAILED, BLOCKED) for s in deps):
            t["status"] = BLOCKED
            t["error"] = "a trial it depends on failed: " + ", ".join(d for d in t["deps"]
                                                                      if sweep.trials[d]["status"] in (FAILED, BLOCKED))
        elif all(s == DONE for s in deps):
            out.append(t)
    # stages first: they unblock the runs that wait for them (a stable sort keeps the grid's order)
    return sorted(out, key=lambda t: t["kind"] in ("run", "offline", "seeds"))


def _argv(sweep: Sweep, t: dict[str, Any]) -> list[str]:
    argv = list(t["argv"])
    out = sweep.path / t["id"]
    if t["kind"] == "gems" and out.exists():  # an interrupted pretraining left a partial checkpoint
        argv.append("--overwrite")
    return argv


def _finish(sweep: Sweep, bar: _Progress, t: dict[str, Any], result: Optional[dict], error: str, retries: int,
            tries: dict[str, int]) -> None:
    t["wall_s"] = round(float((result or {}).get("wall_s", 0.0)), 2)
    if result is not None and result["returncode"] == 0 and is_done(sweep.path, t):
        t["status"] = DONE
        t.pop("error", None)
        bar.say(f"done    {t['id']} ({t['wall_s']:.0f} s{_result_note(sweep.path, t)})")
    else:
        why = error or f"exit status {(result or {}).get('returncode')}: {tail(sweep.path / t['log'])}"
        t["error"] = why
        refused = (result or {}).get("returncode") == 2  # the command refused its input: a retry would too
        if tries[t["id"]] <= retries and not refused:
            t["status"] = PENDING
            bar.say(f"retry   {t['id']} ({why})")
        else:
            t["status"] = FAILED
            if refused:
                t["error"] = why = f"{why} (not retried: the command refused its input)"
            bar.say(f"FAILED  {t['id']} ({why}); log {sweep.path / t['log']}")
    sweep.save()
    bar.refresh()


def _run_local(sweep: Sweep, bar: _Progress, retries: int, inline: bool = False) -> None:
    if not inline:
        assign_gpus(list(sweep.trials.values()), visible_gpus())
    tries: dict[str, int] = {}
    while True:
        ready = _ready(sweep)
        if not ready:
            break
        t = ready[0]
        tries[t["id"]] = tries.get(t["id"], 0) + 1
        t["status"], t["attempts"] = RUNNING, t["attempts"] + 1
        sweep.save()
        bar.refresh()
        bar.say(f"start   {t['id']}")
        result, error = None, ""
        try:
            if inline:
                result = run_inline(_argv(sweep, t), str(sweep.path / t["log"]))
            else:
                result = run_command(_argv(sweep, t), str(sweep.path / t["log"]), os.getcwd(), max(1, int(t["cpus"])),
                                     t.get("devices"))
        except OSError as exc:
            error = f"could not start: {exc}"
        _finish(sweep, bar, t, result, error, retries, tries)
    sweep.save()


@contextlib.contextmanager
def _native_output_hidden(hide: bool) -> Iterator[None]:
    """Hide what native code writes straight to file descriptors 1 and 2 (Ray's start-up notices,
    e.g. its token-authentication line); ``slaterec --verbose`` shows it. Failures still surface
    as exceptions."""
    if not hide:
        yield
        return
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)


class RayStartError(ValueError):
    """Ray could not be started or reached."""


def _run_ray(sweep: Sweep, bar: _Progress, retries: int, address: Optional[str], workers: Optional[int]) -> None:
    import ray

    init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is not None:
        init["address"] = address
    elif workers is not None:
        init["num_cpus"] = workers
    started_here = not ray.is_initialized()
    if started_here:
        try:
            with _native_output_hidden(os.environ.get("SLATEREC_VERBOSE") != "1"):
                ray.init(**init)
        except Exception as exc:  # noqa: BLE001 - Ray's own start-up failures (timeouts, ports, a busy machine)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RayStartError(f"Ray did not start ({reason}); the same command with --executor local runs the "
                                "trials one after another without Ray") from exc
    remote = ray.remote(run_command)
    running: dict[Any, dict[str, Any]] = {}
    tries: dict[str, int] = {}
    # hand Ray only what its CPUs can run now, so that "running" means running
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    try:
        while True:
            for t in _ready(sweep):
                if sum(r["cpus"] for r in running.values()) + t["cpus"] > cpus and running:
                    break
                tries[t["id"]] = tries.get(t["id"], 0) + 1
                t["status"], t["attempts"] = RUNNING, t["attempts"] + 1
                ref = remote.options(num_cpus=t["cpus"], num_gpus=t["gpus"], max_retries=0).remote(
                    _argv(sweep, t), str(sweep.path / t["log"]), os.getcwd(), max(1, int(t["cpus"])))
                running[ref] = t
                bar.say(f"submit  {t['id']}")
            sweep.save()
            bar.refresh()
            if not running:
                break
            finished, _ = ray.wait(list(running), num_returns=1, timeout=2.0)
            for ref in finished:
                t = running.pop(ref)
                result, error = None, ""
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a worker that died: report, retry
                    error = f"the Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                _finish(sweep, bar, t, result, error, retries, tries)
    except BaseException:
        for ref in running:
            ray.cancel(ref)  # the task passes SIGINT to its command, which saves a resume point
        if running:
            ray.wait(list(running), num_returns=len(running), timeout=90.0)
        raise
    finally:
        if started_here:
            ray.shutdown()


def summary_lines(sweep: Sweep) -> list[str]:
    c = sweep.counts()
    lines = [f"sweep {sweep.path}: {c[DONE]} done, {c[FAILED]} failed, {c[BLOCKED]} blocked, "
             f"{c[PENDING] + c[INTERRUPTED]} not run, of {len(sweep.trials)}"]
    for t in sweep.trials.values():
        if t["status"] in (FAILED, BLOCKED):
            lines.append(f"  {t['status']:7s} {t['id']}: {t.get('error', '')} (log {sweep.path / t['log']})")
    return lines


__all__ = ["run_sweep", "run_command", "run_inline", "Sweep", "summary_lines", "is_done"]
