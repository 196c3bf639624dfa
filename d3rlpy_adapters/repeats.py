"""Which of d3rlpy's observation batches are another batch's rows repeated in a row.

CQL, BCQ (and AWAC, CRR, BEAR) score several sampled actions per observation: d3rlpy expands
each observation ``n`` times (``expand_and_repeat_recursively``) and flattens the result into a
new ``(B * n, ...)`` tensor (``flatten_left_recursively``). The history encoder needs one belief
per distinct window; without this module it recognises the pattern by comparing the whole
batch (:func:`d3rlpy_adapters.encoders._repeat_count`, ~0.35 ms a call, up to 6 calls per CQL
update). :func:`track_repeats` wraps those two d3rlpy functions where its algorithms call them
so that each flattened batch remembers the batch it repeats and ``n``; the encoder then reads
:func:`repeat_origin` and encodes the source batch (most often already encoded for the critics'
loss). The wrapped functions return exactly what d3rlpy's return.
"""

from __future__ import annotations

import importlib
import weakref
from typing import Any, Callable, Optional

import torch

#: id(flattened tensor) -> (weak reference to it, its version, the source tensor, its version, n)
_origins: dict[int, tuple[weakref.ref, int, torch.Tensor, int, int]] = {}
#: id(expanded view) -> (weak reference to it, the source tensor, n)
_expanded: dict[int, tuple[weakref.ref, torch.Tensor, int]] = {}

#: d3rlpy modules whose algorithms repeat observations (each imports both functions by name)
_USERS = ("cql_impl", "bcq_impl", "utility", "awac_impl", "crr_impl", "bear_impl")


def _remember(table: dict, tensor: torch.Tensor, entry: tuple) -> None:
    key = id(tensor)
    table[key] = (weakref.ref(tensor, lambda _, key=key: table.pop(key, None)), *entry)


def _wrap_expand(original: Callable[..., Any]) -> Callable[..., Any]:
    def expand_and_repeat_recursively(x: Any, n: int) -> Any:
        out = original(x, n)
        if isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor):
            _remember(_expanded, out, (x, int(n)))
        return out

    expand_and_repeat_recursively.__wrapped__ = original  # type: ignore[attr-defined]
    return expand_and_repeat_recursively


def _wrap_flatten(original: Callable[..., Any]) -> Callable[..., Any]:
    def flatten_left_recursively(x: Any, dim: int) -> Any:
        out = original(x, dim)
        if dim == 1 and isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor):
            entry = _expanded.get(id(x))
            if entry is not None and entry[0]() is x and x.dim() >= 2 and x.shape[1] == entry[2]:
                _remember(_origins, out, (out._version, entry[1], entry[1]._version, entry[2]))
        return out

    flatten_left_recursively.__wrapped__ = original  # type: ignore[attr-defined]
    return flatten_left_recursively


def track_repeats() -> None:
    """Wrap d3rlpy's repeat and flatten functions where its algorithms call them (idempotent)."""
    for name in _USERS:
        try:
            module = importlib.import_module(f"d3rlpy.algos.qlearning.torch.{name}")
        except ImportError:  # another d3rlpy layout: the encoder's own check still applies
            continue
        for attr, wrap in (("expand_and_repeat_recursively", _wrap_expand), ("flatten_left_recursively", _wrap_flatten)):
            fn = getattr(module, attr, None)
            if fn is not None and not hasattr(fn, "__wrapped__"):
                setattr(module, attr, wrap(fn))


def repeat_origin(x: torch.Tensor) -> Optional[tuple[torch.Tensor, int]]:
    """``(source, n)`` when ``x`` is d3rlpy's flattening of ``source`` repeated ``n`` times per row
    and neither has changed since; else None."""
    entry = _origins.get(id(x))
    if entry is None or entry[0]() is not x or x._version != entry[1]:
        return None
    source, source_version, n = entry[2], entry[3], entry[4]
    if source._version != source_version or x.shape[0] != source.shape[0] * n:
        return None
    return source, n
