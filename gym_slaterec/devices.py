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
        full_float32()
    return spec


def full_float32() -> None:
    """Float32 arithmetic on CUDA as on the CPU: no TF32 in cuDNN's GRUs or in matrix products.

    torch lets cuDNN round float32 inputs to TF32 (10-bit mantissa) by default; on an H200 that
    moved the belief GRU's outputs and gradients by up to 6 % relative (3.5e-4 absolute) from
    the CPU's, enough to change decoded slates. The networks here are small, so TF32 buys no
    measurable speed; every command that puts a model on a GPU calls this (through
    :func:`resolve_device`)."""
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def device_arg(text: str) -> str:
    """argparse type of ``--device``: checked when parsed (before anything is created), kept as
    written. ``auto`` stays ``auto`` so that each command resolves it for what it trains: a
    method that trains on the CPU only takes ``auto`` as the CPU on a machine with a GPU,
    where an explicit ``cuda`` is refused. (argparse passes the default through this too.)"""
    import argparse

    try:
        resolve_device(text)
        return text.strip()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
