"""Progress of long jobs: a tqdm bar on a terminal, a periodic status line in logs.

With the bar off (``--no-progress``, every sweep trial, or stderr going to a file rather
than a terminal), :func:`progress` still writes one
line at least every ``$SLATEREC_STATUS_EVERY`` seconds (default 30) to stderr: the job,
its count, throughput, latest postfix metrics and ETA, so ``tail -f`` on a trial's log
always shows life, however long one step takes.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from typing import Any, Optional

from tqdm.auto import tqdm

STATUS_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
THREAD_NAME = "slaterec-status"


def status_threads() -> list[threading.Thread]:
    """The live status-line timer threads (one per open :class:`StatusLines`)."""
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


class _Nowhere:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class StatusLines(tqdm):
    """A tqdm that draws nothing and instead prints a status line every ``every_s`` seconds
    (from a daemon thread, so a long step or validation still shows life), and a last one when
    closed if it printed any (short jobs, e.g. in tests and library calls, stay silent)."""

    def __init__(self, *args: Any, every_s: Optional[float] = None, **kwargs: Any) -> None:
        kwargs.update(file=_Nowhere(), bar_format=STATUS_FORMAT, dynamic_ncols=False)
        super().__init__(*args, **kwargs)
        self.every_s = float(every_s if every_s is not None else os.environ.get("SLATEREC_STATUS_EVERY", 30))
        self._stop = threading.Event()
        self._beats = 0
        # The timer holds the bar weakly: a bar its job forgot to close stops printing once it is gone.
        self._thread = threading.Thread(target=_beat, args=(weakref.ref(self), self._stop, self.every_s),
                                        name=THREAD_NAME, daemon=True)
        self._thread.start()

    def status_line(self) -> str:
        return f"[{time.strftime('%H:%M:%S')}] {self.format_meter(**self.format_dict)}"

    def close(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            # wait for the timer to end, so that nothing prints after close() returns (the timer
            # itself may close the bar, dropping the last reference to it: no join there)
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout=10)
            if self._beats:  # a job that showed life ends with its final count; a short one stays silent
                print(self.status_line(), file=sys.stderr, flush=True)
        super().close()


def _beat(bar_ref: "weakref.ref[StatusLines]", stop: threading.Event, every_s: float) -> None:
    while not stop.wait(every_s):
        bar = bar_ref()
        if bar is None:
            return
        bar._beats += 1
        print(bar.status_line(), file=sys.stderr, flush=True)
        del bar


def bar_can_draw() -> bool:
    """Whether a bar has somewhere to draw: a terminal on stderr, or a notebook.

    Elsewhere (``nohup ... > log``, a batch job) a bar would fill the log with
    carriage-return redraws, so status lines take its place.
    """
    try:
        if sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False
    return any(issubclass(tqdm, base) for base in _notebook_bars())


def _notebook_bars() -> tuple[type, ...]:
    """tqdm's notebook bar when tqdm.auto chose it (it does inside a Jupyter kernel), else nothing."""
    from tqdm import std
    from tqdm.autonotebook import tqdm as chosen

    return () if chosen is std.tqdm else (chosen,)


def progress(enabled: bool, **kwargs: Any) -> tqdm:
    """A tqdm bar (``enabled`` and somewhere to draw it) or :class:`StatusLines`, with tqdm's keywords."""
    return tqdm(**kwargs) if enabled and bar_can_draw() else StatusLines(**kwargs)
