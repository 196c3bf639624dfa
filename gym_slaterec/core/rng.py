"""Counter-based random numbers, one independent stream per user.

Every user of a batch owns a 64-bit key (derived from its seed) and a draw counter.
A draw is a hash of (key, counter, position), so what user ``i`` sees depends only
on its own seed and on how many draws it has made, never on the other users of the
batch. This is what makes a single environment seeded with ``s + i`` replay exactly
user ``i`` of a vector environment seeded with ``s``, while every draw of the batch
is still one vectorised numpy expression.

Each user's stream is SplitMix64 started at its key: draw ``n`` is the SplitMix64
finaliser of ``key + (n + 1) * golden``, whose output passes the usual statistical
batteries for simulation use.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_S32 = np.uint64(32)
_TWO_POW_M53 = 1.0 / 9007199254740992.0

# Draw positions inside one counter block; every purpose gets its own range.
BLOCK = 1 << 24


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (wrapping uint64 arithmetic)."""
    x = x ^ (x >> _S30)
    x = x * _M1
    x = x ^ (x >> _S27)
    x = x * _M2
    return x ^ (x >> _S31)


def _mix_inplace(x: np.ndarray, tmp: np.ndarray) -> None:
    """``_mix`` overwriting ``x``; ``tmp`` is scratch of the same shape (no allocations)."""
    for shift, mult in ((_S30, _M1), (_S27, _M2)):
        np.right_shift(x, shift, out=tmp)
        np.bitwise_xor(x, tmp, out=x)
        np.multiply(x, mult, out=x)
    np.right_shift(x, _S31, out=tmp)
    np.bitwise_xor(x, tmp, out=x)


#: Stream ids: the same seed gives independent streams for different consumers.
STREAM_ENV = 0
STREAM_POLICY = 1


def seed_to_key(seeds: np.ndarray | int, stream: int = STREAM_ENV) -> np.ndarray:
    """Map integer seeds (any int64 values) and a stream id to well-spread 64-bit keys."""
    s = np.asarray(seeds, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        salt = _mix(np.uint64(stream) * _M2 + np.uint64(0x5EED5EED5EED5EED))
        return _mix(_mix(s + _GOLDEN) ^ salt)


def _as_uniform(x: np.ndarray) -> np.ndarray:
    """Raw 64-bit draws -> floats in [0, 1) from their top 53 bits (``x`` is overwritten)."""
    np.right_shift(x, _S11, out=x)
    out = x.astype(np.float64)
    out *= _TWO_POW_M53
    return out


_CHUNK = 1 << 14  # draws per chunk of a large call: its scratch stays in the L2 cache
_STEPS: dict[int, np.ndarray] = {}


def _golden_steps(n: int) -> np.ndarray:
    """``pos * golden`` for pos in 0..n-1 (cached: the same few sizes recur every turn)."""
    steps = _STEPS.get(n)
    if steps is None:
        steps = np.arange(n, dtype=np.uint64) * _GOLDEN
        if len(_STEPS) < 64:
            _STEPS[n] = steps
    return steps


def _block_start(keys: np.ndarray, blocks: np.ndarray, offsets: np.ndarray | int) -> np.ndarray:
    """Per row, the SplitMix64 state before position ``offsets`` of counter block
    ``blocks``: draw ``pos`` is ``_mix(start + pos * golden)``."""
    # key + (block * BLOCK + offset + pos + 1) * golden, split into a per-row and a
    # per-position term (equal modulo 2**64). Array arithmetic wraps silently.
    return keys + (blocks * np.uint64(BLOCK) + np.asarray(offsets).astype(np.uint64) + np.uint64(1)) * _GOLDEN


class BatchRNG:
    """Independent streams for a batch of users.

    ``keys`` and ``counters`` have one entry per user. Each call to a draw method
    consumes one counter block for every user it draws for.
    """

    def __init__(self, seeds: np.ndarray, stream: int = STREAM_ENV) -> None:
        self.stream = stream
        self.keys = seed_to_key(np.asarray(seeds).reshape(-1), stream)
        self.counters = np.zeros(len(self.keys), dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.keys)

    def reseed(self, idx: np.ndarray, seeds: np.ndarray) -> None:
        """Give the users ``idx`` fresh keys from ``seeds`` and zero their counters."""
        self.keys[idx] = seed_to_key(seeds, self.stream)
        self.counters[idx] = 0

    def _bits(self, n: int, idx: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray:
        """Raw 64-bit draws (users, n); ``out`` may be a float64 array of that shape,
        which then receives the uniforms instead (computed in cache-sized row chunks)."""
        if n > BLOCK:
            raise ValueError(f"at most {BLOCK} draws per user per call, got {n}")
        keys = self.keys if idx is None else self.keys[idx]
        ctr = self.counters if idx is None else self.counters[idx]
        start = _block_start(keys, ctr, 0)
        steps = _golden_steps(n)[None, :]
        rows = max(1, _CHUNK // max(n, 1))
        if out is None and len(start) <= rows:
            x = np.add(start[:, None], steps)
            _mix_inplace(x, np.empty_like(x))
        else:
            x = np.empty((min(rows, len(start)), n), dtype=np.uint64)
            tmp = np.empty_like(x)
            full = np.empty((len(start), n), dtype=np.uint64) if out is None else None
            for a in range(0, len(start), rows):
                c = min(rows, len(start) - a)
                xc, tc = x[:c], tmp[:c]
                np.add(start[a : a + c, None], steps, out=xc)
                _mix_inplace(xc, tc)
                if out is None:
                    full[a : a + c] = xc
                else:
                    np.right_shift(xc, _S11, out=xc)
                    dst = out[a : a + c]
                    dst[...] = xc
                    dst *= _TWO_POW_M53
            x = full if out is None else out
        if idx is None:
            self.counters += np.uint64(1)
        else:
            self.counters[idx] += np.uint64(1)
        return x

    def uniform(self, n: int, idx: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Uniform floats in [0, 1), shape (users, n) (written into ``out`` when given)."""
        users = len(self.keys) if idx is None else len(idx)
        if out is not None:
            if out.shape != (users, n) or out.dtype != np.float64:
                raise ValueError(f"out must be a float64 array of shape {(users, n)}, got {out.dtype} {out.shape}")
            return self._bits(n, idx, out=out)
        if users * n > _CHUNK:
            return self._bits(n, idx, out=np.empty((users, n), dtype=np.float64))
        return _as_uniform(self._bits(n, idx))

    def uniform_at(self, blocks: np.ndarray, offsets: np.ndarray, n: int, idx: np.ndarray | None = None) -> np.ndarray:
        """The uniforms at positions ``offsets .. offsets + n`` of the given counter
        ``blocks`` (one of each per selected user), shape (users, n); no counter moves.

        Equal to the matching columns of the ``uniform`` call that consumed those
        blocks, so a block drawn in part can be read later, turn by turn.
        """
        keys = self.keys if idx is None else self.keys[idx]
        start = _block_start(keys, blocks, offsets)
        x = np.add(start[:, None], _golden_steps(n)[None, :])
        _mix_inplace(x, np.empty_like(x))
        return _as_uniform(x)

    def integers(self, high: int, n: int, idx: np.ndarray | None = None) -> np.ndarray:
        """Uniform integers in [0, high), shape (users, n).

        Each 64-bit draw gives two 32-bit halves, each mapped to [0, high) by
        multiply-shift (bias below high / 2**32).
        """
        if not 0 < high <= 1 << 31:
            raise ValueError(f"high must lie in [1, 2**31], got {high}")
        halves = self._bits((n + 1) // 2, idx).view(np.uint32)  # (users, 2 * ceil(n/2))
        x = (halves if n % 2 == 0 else halves[:, :n]).astype(np.uint64)
        np.multiply(x, np.uint64(high), out=x)
        np.right_shift(x, _S32, out=x)
        return x.view(np.int64)  # values below 2**31: the same bits


def box_muller(u: np.ndarray, n: int) -> np.ndarray:
    """``n`` standard normals per row from ``2 * ceil(n / 2)`` uniforms in [0, 1) per row."""
    half = (n + 1) // 2
    r = np.sqrt(-2.0 * np.log1p(-u[:, :half]))  # 1 - u lies in (0, 1]
    theta = 2.0 * np.pi * u[:, half : 2 * half]
    return np.concatenate([r * np.cos(theta), r * np.sin(theta)], axis=1)[:, :n]


def _repeats(rows: np.ndarray) -> np.ndarray:
    """Per row of a (..., n) integer array: whether it holds a value twice."""
    s = np.sort(rows, axis=-1)
    return (s[..., 1:] == s[..., :-1]).any(axis=-1)


def _rows_with_repeats(values: np.ndarray) -> np.ndarray:
    """Indices of the rows of a (b, n) array of ints below 2**31 that hold a value twice."""
    b, n = values.shape
    if b < 256:  # a sort per row: cheapest for few rows
        return np.flatnonzero(_repeats(values))
    # many rows: compare each column with the columns s places to its right, for every
    # s, on the transposed array (n - 1 vectorised comparisons instead of b small sorts)
    cols = np.ascontiguousarray(values.T, dtype=np.int32)
    repeat = np.zeros(b, dtype=bool)
    for shift in range(1, n):
        repeat |= (cols[: n - shift] == cols[shift:]).any(axis=0)
    return np.flatnonzero(repeat)


def _first_distinct(rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a (b, m) int array: its first ``n`` distinct values in order (a
    (b, n) array), and whether the row holds that many."""
    b, m = rows.shape
    r = np.arange(b)[:, None]
    by_value = np.argsort(rows, axis=1, kind="stable")  # equal values: earliest first
    s = rows[r, by_value]
    seen = np.zeros((b, m), dtype=bool)  # the value occurred earlier in the row
    seen[r, by_value[:, 1:]] = s[:, 1:] == s[:, :-1]
    first = np.argsort(seen, axis=1, kind="stable")[:, :n]  # unseen entries first, in order
    return rows[r, first], m - seen.sum(axis=1) >= n


def distinct_integers(rng: BatchRNG, high: int, n: int, idx: np.ndarray | None = None,
                      candidates: int = 4, sets: int = 1) -> np.ndarray:
    """``n`` distinct uniform integers in [0, high) per user (uniform over ordered
    tuples), shape (users, n); with ``sets > 1``, that many independent such rows per
    user from one call, shape (users, sets, n).

    Each row takes ``n`` values and 2 or 3 spares, all users' rows drawn in one call,
    and keeps its first ``n`` distinct values: sampling without replacement. Rows left
    short (several repeats; rare unless ``n`` is close to ``high``) are redrawn whole,
    each taking the first repeat-free row among ``candidates`` drawn per call, which
    keeps the result uniform (every distinct tuple is equally likely in every branch,
    by symmetry).
    """
    if n > high:
        raise ValueError(f"cannot draw {n} distinct values from {high}")
    if sets < 1:
        raise ValueError(f"sets must be at least 1, got {sets}")
    width = 2 * ((n + 3) // 2)  # n + 2 or n + 3: spares fill the last word
    draws = rng.integers(high, sets * width, idx).reshape(-1, width)  # row = (user, set)
    out = draws[:, :n]  # a view: fixes below write into ``draws``
    users = np.arange(len(rng)) if idx is None else np.asarray(idx)
    if n >= 2:
        todo = _rows_with_repeats(out)
        if todo.size:
            fixed, enough = _first_distinct(draws[todo], n)
            out[todo[enough]] = fixed[enough]
            todo = todo[~enough]
        while todo.size:
            # one redraw per user and call: rows of the same user need different draws
            _, first = np.unique(todo // sets, return_index=True)
            rows = todo[first]
            cand = rng.integers(high, n * candidates, users[rows // sets]).reshape(len(rows), candidates, n)
            ok = ~_repeats(cand)
            found = ok.any(axis=1)
            out[rows[found]] = cand[found, np.argmax(ok, axis=1)[found]]
            todo = np.setdiff1d(todo, rows[found], assume_unique=True)
    return out.reshape(len(users), sets, n) if sets > 1 else out.copy()

