"""``slaterec`` commands run as child processes (a sweep's trials, the seeds of ``train --seeds``).

A child runs ``slaterec ARGV`` with Ctrl-C restored, dies with its parent (``$SLATEREC_PARENT_PID``)
and is stopped by SIGINT, which every command answers by leaving a resumable state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Optional

# The child answers the SIGINT its parent sends it even when the parent itself was started with
# SIGINT ignored (``nohup slaterec sweep ... &``: background jobs of a script ignore it, and
# children inherit that), so a stopped parent's children still save their resume points. On
# Linux it also asks for SIGTERM when its parent dies (PR_SET_PDEATHSIG), so a parent killed
# with SIGKILL leaves no orphan writing; it exits at once if the parent is already gone.
CHILD_CLI = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
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


def stop_child(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """SIGINT (the command saves what it can), then SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = 3) -> str:
    """The last ``lines`` lines of a child's log, joined by `` | `` (lines starting ``===`` skipped)."""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    shown = [line for line in text if not line.startswith("===")]
    return " | ".join(shown[-lines:])
