"""``slaterec`` commands run as child processes (a sweep's trials, the seeds of ``train --seeds``).

A child runs ``slaterec ARGV`` with Ctrl-C restored, dies with its parent (``$SLATEREC_PARENT_PID``)
and is stopped by SIGINT, which every command answers by leaving a resumable state.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Iterable, Optional

# The child answers the SIGINT its parent sends it even when the parent itself was started with
# SIGINT ignored (``nohup slaterec sweep ... &``: background jobs of a script ignore it, and
# children inherit that), so a stopped parent's children still save their resume points. On
# Linux it also asks for SIGTERM when its parent dies (PR_SET_PDEATHSIG), so a parent killed
# with SIGKILL leaves no orphan writing; it exits at once if the parent is already gone.
# SIGUSR1 makes it write every thread's stack into its log: what the parent asks for before it
# kills a child that did not stop in time, so that the log says where it hung.
CHILD_CLI = ("import faulthandler, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "faulthandler.register(signal.SIGUSR1, all_threads=True); "
             "from gym_slaterec.cli import die_with_parent, main; die_with_parent(); sys.exit(main())")


def child_env(threads: int, devices: Optional[str] = None) -> dict[str, str]:
    """The environment of a child: ``threads`` intra-op threads, unbuffered output, this process
    as the parent it dies with; ``devices``: its ``CUDA_VISIBLE_DEVICES`` (None: inherited)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), SLATEREC_THREADS=str(threads),
               PYTHONUNBUFFERED="1", SLATEREC_PARENT_PID=str(os.getpid()))
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    return env


def start_child(argv: list[str], log: IO[str], cwd: str, env: dict[str, str]) -> subprocess.Popen:
    """Start ``slaterec ARGV``, its output (stdout and stderr) into ``log``, in a session of its own
    (a Ctrl-C at the terminal reaches the parent, which passes it on)."""
    return subprocess.Popen([sys.executable, "-c", CHILD_CLI, *argv], stdout=log, stderr=subprocess.STDOUT,
                            cwd=cwd, env=env, start_new_session=True)


def stop_children(procs: Iterable[subprocess.Popen], grace_s: float = 60.0) -> list[subprocess.Popen]:
    """SIGINT to every child at once (each saves what it can), then wait for them all within
    ``grace_s``; a child still running then writes its stacks to its log (SIGUSR1) and is
    killed. Returns the killed children: their run directories still say ``running`` and
    resume from their last checkpoint."""
    procs = [p for p in procs if p.poll() is None]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    killed = []
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGUSR1)
                time.sleep(0.5)
                proc.kill()
            proc.wait()
            killed.append(proc)
    return killed


def stop_child(proc: subprocess.Popen, grace_s: float = 60.0) -> bool:
    """:func:`stop_children` of one child; True when it had to be killed."""
    return bool(stop_children([proc], grace_s))


def tail(path: Path, lines: int = 3) -> str:
    """The last ``lines`` lines of a child's log, joined by `` | `` (lines starting ``===`` skipped)."""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    shown = [line for line in text if not line.startswith("===")]
    return " | ".join(shown[-lines:])
