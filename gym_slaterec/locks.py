"""One writer per artifact: an OS file lock beside every output while it is being written.

``writer_lock(path)`` holds ``flock`` on ``.NAME.lock`` next to ``path`` for as long as a
job writes there (a run directory being trained, a dataset being generated, a sweep
directory driven). A second writer is refused with the live owner's pid, host and
command; a process that dies, however it dies, releases the lock with it, so a stale
lock never blocks anyone. Holding the lock also proves that the temporaries of earlier
writes to the same path (``atomic_path``'s ``.NAME.*.tmp`` and ``.NAME.old-PID``) belong
to dead writers: they are removed on acquiring it. The lock is re-entrant within a
process (the command line locks ``--out`` and the library function it calls locks it
again).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, Union

try:  # POSIX; elsewhere every lock is granted (no concurrent-writer protection)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

PathLike = Union[str, "os.PathLike[str]"]

#: lock files held by this process: path -> [fd, depth]
_HELD: dict[str, list[int]] = {}


class ArtifactBusyError(ValueError):
    """Another live process is writing the artifact."""


def lock_file(path: PathLike) -> Path:
    """Where the lock of ``path`` lives: ``.NAME.lock`` in the same folder (symbolic links
    resolved, so that every spelling of a path shares one lock)."""
    p = Path(os.path.realpath(path))
    return p.with_name(f".{p.name}.lock")


def _owner_text(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        return "another process"
    if not isinstance(info, dict):
        return "another process"
    cmd = f" ({info['command']})" if info.get("command") else ""
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}{cmd}, since {info.get('since', '?')}"


def _try_lock(fd: int, shared: bool = False) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def remove_debris(path: PathLike) -> list[str]:
    """Remove the temporaries that earlier (killed) writes to ``path`` left beside it. Only
    safe while holding ``path``'s lock, which proves their writers dead."""
    p = Path(os.path.realpath(path))
    removed: list[str] = []
    if not p.parent.is_dir():
        return removed
    # atomic_path's temporaries: mkdtemp(prefix=".NAME.", suffix=".tmp") and the ".NAME.old-PID" backups
    debris = re.compile(rf"\.{re.escape(p.name)}\.([A-Za-z0-9_]{{8}}\.tmp|old-\d+)")
    for entry in p.parent.iterdir():
        name = entry.name
        if debris.fullmatch(name):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() else entry.unlink(missing_ok=True)
            removed.append(name)
    return removed


@contextlib.contextmanager
def writer_lock(path: PathLike, wait_s: float = 1.0) -> Iterator[Path]:
    """Hold the writer lock of ``path`` (re-entrant in this process). Raises
    :class:`ArtifactBusyError` naming the live owner when another process holds it
    (after ``wait_s`` seconds of retries: a reader's probe holds it for microseconds)."""
    lf = lock_file(path)
    key = str(lf)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield lf
        finally:
            _HELD[key][1] -= 1
        return
    lf.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(lf, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            owner = _owner_text(fd)
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise ArtifactBusyError(f"{path} is being written by {owner}; wait for it to finish or stop it "
                                    "(a process that dies releases its lock)")
        try:  # the owner we waited for may have removed the file we locked: lock the one at the path
            same = os.path.samestat(os.fstat(fd), os.stat(lf))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join(["slaterec", *sys.argv[1:]])[:300] if sys.argv else ""}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(info).encode())
    remove_debris(path)
    _HELD[key] = [fd, 1]
    try:
        yield lf
    finally:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            del _HELD[key]
            with contextlib.suppress(OSError):
                os.unlink(lf)
            os.close(fd)  # closing releases the flock


def lock_owner(path: PathLike) -> Optional[str]:
    """Who holds ``path``'s writer lock now (pid, host, command), or None when nobody does."""
    lf = lock_file(path)
    if str(lf) in _HELD:
        return f"pid {os.getpid()} (this process)"
    try:
        fd = os.open(lf, os.O_RDONLY)
    except OSError:
        return None
    try:
        if _try_lock(fd, shared=True):
            return None  # closing the descriptor below releases the probe
        return _owner_text(fd)
    finally:
        os.close(fd)
