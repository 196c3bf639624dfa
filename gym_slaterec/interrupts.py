"""Stopping a long training loop at its next resume point instead of losing the work since the
last checkpoint.

Inside :func:`graceful_stop`, the first Ctrl-C (SIGINT) or SIGTERM does not interrupt the loop;
it sets :attr:`StopRequest.requested`, which the loop checks at a point where it can write a
complete checkpoint (after a batch of episodes), then stops. A second Ctrl-C interrupts at once
(KeyboardInterrupt). A repeated SIGTERM is ignored: a dying parent can deliver its death signal
more than once, and it must not cut short the checkpoint the first one asked for.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator


class StopRequest:
    """Whether a stop was asked for while :func:`graceful_stop` was active, and by which signal."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""


@contextlib.contextmanager
def graceful_stop(what: str = "training") -> Iterator[StopRequest]:
    """Turn the first SIGINT / SIGTERM into a stop request (see the module docstring). Outside the
    main thread, where signal handlers cannot be installed, the request never comes and signals
    behave as before."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    # a signal the process ignores (SIGINT in a background job of a script) stays ignored
    previous = {sig: old for sig in (signal.SIGINT, signal.SIGTERM) if (old := signal.getsignal(sig)) is not signal.SIG_IGN}

    def handler(signum: int, frame: Any) -> None:
        if request.requested:
            if signum == signal.SIGINT:  # the user insists: stop now, from the last checkpoint
                raise KeyboardInterrupt
            return
        request.requested = True
        request.signal_name = signal.Signals(signum).name
        again = " (Ctrl-C again to stop at once, losing the work since the last checkpoint)" if signum == signal.SIGINT else ""
        print(f"\n{request.signal_name}: stopping {what} at its next resume point{again}", file=sys.stderr, flush=True)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)  # None: a handler not set from Python
