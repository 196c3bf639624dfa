"""Where the torch models train: ``--device auto|cpu|cuda[:N]``."""

from __future__ import annotations

import re

DEVICE_HELP = "auto (CUDA when present, else CPU), cpu, cuda or cuda:N"


def resolve_device(spec: str = "auto") -> str:
    """The torch device named by ``spec``, checked against what this machine has.

    ``auto`` is ``cuda`` when a CUDA device is present, else ``cpu``; ``cuda`` and
    ``cuda:N`` are refused with a message when there is no such device.
    """
    import torch

    if not isinstance(spec, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec.strip()):
        raise ValueError(f"device must be {DEVICE_HELP}, got {spec!r}")
    spec = spec.strip()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r}: this machine has no CUDA device (torch {torch.__version__}, "
                             f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu or auto")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return spec


def device_arg(text: str) -> str:
    """argparse type of ``--device`` (checked when parsed, before anything is created)."""
    import argparse

    try:
        return resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
