"""The ``slaterec`` command line.

Each package contributes its sub-commands through a ``register(subparsers)``
function; heavy imports (torch, SB3, d3rlpy) happen inside the command handlers
so that ``slaterec envs`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from typing import Any, Iterator, Optional, Sequence

#: This package's own command modules; the installed packages add theirs through the
#: ``slaterec.commands`` entry points (pyproject.toml), so no package imports a higher one.
OWN_COMMAND_MODULES = (
    "gym_slaterec.cli.sim_commands",
    "gym_slaterec.cli.gems_commands",
    "gym_slaterec.cli.demo",
)


def entry_point_modules(group: str, fallback: Sequence[str]) -> list[str]:
    """The modules listed under the entry-point ``group``, in the order of their names;
    ``fallback`` (this package's own) in a source tree that was never installed."""
    from importlib.metadata import entry_points

    found = sorted(entry_points(group=group), key=lambda ep: ep.name)
    return [ep.value for ep in found] or list(fallback)


def command_modules() -> list[str]:
    """Modules that register sub-commands, in help order."""
    return entry_point_modules("slaterec.commands", OWN_COMMAND_MODULES)


class CLIError(Exception):
    """An error to report to the user as one line, without a traceback."""


#: Seeds are what numpy, torch and the reference code accept everywhere.
MAX_SEED = 2**32 - 1


def _int_in(text: str, low: int, high: Optional[int], expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {value}")
    return value


def seed_arg(text: str) -> int:
    """argparse type of every ``--seed``: an integer in [0, 2**32 - 1]."""
    return _int_in(text, 0, MAX_SEED, f"an integer in [0, {MAX_SEED}]")


def nonnegative_int(text: str) -> int:
    """argparse type of counts that may be zero (retries): an integer >= 0."""
    return _int_in(text, 0, None, "a non-negative integer")


def positive_int(text: str) -> int:
    """argparse type of counts (episodes, steps, users): an integer >= 1."""
    return _int_in(text, 1, None, "a positive integer")


def positive_float(text: str) -> float:
    """argparse type of time limits: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (0.0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """The ``--no-progress`` flag of the commands that run long (no progress bar, e.g. in logs)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="slaterec", description="Reinforcement learning for slate recommendation.")
    parser.add_argument("--version", action="version", version=f"slaterec {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="also show third-party libraries' info lines (d3rlpy's structured log)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in command_modules():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that package has no commands yet
                continue
            raise
        module.register(sub)
    return parser


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler, a dying sweep driver) stops a command as Ctrl-C does: it
    saves its resume point and removes its temporaries (later SIGTERMs are ignored meanwhile)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        # once: a repeated SIGTERM (a dying parent can deliver its death signal more than once)
        # must not cut short the clean-up the first one started; SIGKILL still ends everything
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_with_parent() -> None:
    """In a sweep's trial: SIGTERM this process when the process named by
    ``$SLATEREC_PARENT_PID`` (the driver or its Ray worker) dies (Linux), and exit at once
    if it is already gone, so that no orphaned trial keeps writing."""
    import os
    import signal

    parent = os.environ.pop("SLATEREC_PARENT_PID", None)
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if str(os.getppid()) != parent:  # the parent died before the request took effect
        sys.exit(130)


def _out_lock(args: argparse.Namespace) -> Any:
    """The writer lock of the command's ``--out`` (one writer per artifact), if it has one."""
    out = getattr(args, "out", None)
    if out is None or getattr(args, "dry_run", False):
        return contextlib.nullcontext()
    from ..locks import writer_lock

    return writer_lock(out)


def quiet_third_party(verbose: bool) -> None:
    """Third-party info lines (d3rlpy's "Signatures have been automatically determined", through
    structlog; Ray's start-up notices) are hidden unless ``verbose`` (recorded in
    ``$SLATEREC_VERBOSE`` for the sweep and its trials); their warnings and errors still show."""
    import os

    if verbose:
        os.environ["SLATEREC_VERBOSE"] = "1"
    verbose = verbose or os.environ.get("SLATEREC_VERBOSE") == "1"
    try:
        import logging

        import structlog
    except ImportError:
        return
    level = logging.INFO if verbose else logging.WARNING
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))


def default_threads() -> int:
    """Intra-op threads of torch and BLAS for every command: ``$SLATEREC_THREADS``, else
    ``$OMP_NUM_THREADS`` (a sweep sets it to a trial's cpus), else 1.

    Two threads that wait on each other collapse when another process holds one of the
    cores (a paper-regime SAC: 3.1 gradient steps/s on 2 threads with a second job running,
    ~18 on 1; BENCHMARKS.md "Threads under load"), and a researcher's machine is always
    shared: one thread per process, one process per core. Commands with a thread setting of
    their own (``pretrain-gems --threads``, ``train``'s ``torch_threads``) apply it on top."""
    import os

    name = "SLATEREC_THREADS" if "SLATEREC_THREADS" in os.environ else "OMP_NUM_THREADS"
    raw = os.environ.get(name, "1").strip()
    if not raw.isdigit() or int(raw) < 1:
        raise CLIError(f"{name} must be a positive integer, got {raw!r}")
    n = int(raw)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))  # read by torch when it is first imported
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)  # numpy's BLAS, already loaded (kept for the process)
    return n


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its one-line usage error (or --help)
        return int(exc.code or 0)
    quiet_third_party(args.verbose)
    try:
        default_threads()
        checker = getattr(args, "checker", None)
        if checker is not None:  # every option checked before anything is locked, read or created
            checker(args)
        if getattr(args, "portable", False):
            from ..core.portable import is_portable, run_portably

            if not is_portable():  # its kernels are chosen at start-up: a child of its own, before any lock
                return run_portably(list(sys.argv[1:] if argv is None else argv))
        with sigterm_as_interrupt(), _out_lock(args):
            result = args.handler(args)
    except KeyboardInterrupt:
        print(f"slaterec {args.command}: interrupted; nothing incomplete was left in place "
              "(a run directory can be resumed with the same command)", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"slaterec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # permissions, a full disk, a path that is a file...
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"slaterec {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - the package's own bug: show everything
        import traceback

        traceback.print_exc()
        print(f"slaterec {args.command}: internal error: the traceback above is a bug in slaterec, "
              "not a problem with your input; please report it", file=sys.stderr)
        return 3
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
