"""Reading the reference implementation's ``.pt`` files without executing code.

The reference code saves plain tensors (item and MF embeddings) and dicts of
tensors (logged sessions) with ``torch.save``. These helpers load them with
torch's ``weights_only`` unpickler, which refuses arbitrary objects, and turn
every failure into a ``ValueError`` that names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load_pt(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with readable errors."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{what} file {path} holds objects other than tensors, which are not loaded "
            f"(only plain tensors and dicts/lists of tensors are accepted): {first}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read {what} from {path}: not a readable torch file ({exc})") from exc


def tensor_to_numpy(value: Any, path: Path, what: str) -> np.ndarray:
    """A torch tensor (or numpy array) as a numpy array; anything else is refused."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise ValueError(f"{what} in {path} is a complex tensor; real numbers expected")
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise ValueError(f"{what} file {path} holds a {type(value).__name__}, not a tensor")


def load_tensor(path: Path, what: str) -> np.ndarray:
    """The single tensor stored in ``path`` as a numpy array."""
    return tensor_to_numpy(load_pt(path, what), path, what)
