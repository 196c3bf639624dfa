"""The TopicRec user simulator (docs/method.md sections 2-3), batched over users.

All state carries a leading user dimension and one call advances every selected
user by one turn; no Python loop runs over users or items (the only loop is over
the k ranks of the slate, for the order-dependent influence update).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from scipy.special import expit

from .arrays import row_count
from .config import SimulatorConfig
from .embeddings import EmbeddingsLike, ItemCatalogue, load_item_embeddings
from .rng import BatchRNG, box_muller
from .topk import float32_top, top_k

Selection = Union[slice, np.ndarray]
ALL: slice = slice(None)
EMPTY_STAMP = -(1 << 40)  # stamp of an empty click-log slot
SCORE_CHUNK = 256  # users per chunk of the slate-score product (its gather fits the L2 cache)


@dataclass
class Turn:
    """What one turn produced for the selected users."""

    slates: np.ndarray  # (b, k) int64, the slates shown
    clicks: np.ndarray  # (b, k) bool
    rewards: np.ndarray  # (b,) float64, number of clicks
    scores: np.ndarray  # (b, k) float64, <e_i, e'_u> / max_score
    click_probs: np.ndarray  # (b, k) float64, A_r * E_r
    bored: np.ndarray  # (b, K) bool, boredom in force during this turn
    slate_topics: np.ndarray  # (b, k) int64, main topic of each shown item


def topic_norm_sum(x: np.ndarray, topic_size: int) -> np.ndarray:
    """Sum over topics of each topic block's L2 norm: (b, d) -> (b,), or (d,) -> scalar."""
    sq = np.square(x)
    if topic_size == 2:  # strided halves beat a reshape + sum over a length-2 axis
        s = sq[..., 0::2] + sq[..., 1::2]
    else:
        s = sq.reshape(sq.shape[:-1] + (-1, topic_size)).sum(axis=-1)
    np.sqrt(s, out=s)
    return s.sum(axis=-1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function; scipy's ``expit`` is one ufunc call (no overflow warnings),
    which matters at the single env's size, where call overhead dominates."""
    return expit(x)


def row_counts(values: np.ndarray, num_values: int, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-row histogram of small non-negative ints: (b, n) -> (b, num_values); only the
    entries where ``valid`` holds count (then the counts come as float64)."""
    b = values.shape[0]
    if b == 1:
        v = values[valid] if valid is not None else values.ravel()
        return np.bincount(v, minlength=num_values)[None, :]
    flat = (values + (np.arange(b) * num_values)[:, None]).ravel()
    if valid is not None:  # weights: half the cost of binning invalid entries away first
        return np.bincount(flat, weights=valid.ravel(), minlength=b * num_values).reshape(b, num_values)
    return np.bincount(flat, minlength=b * num_values).reshape(b, num_values)


class TopicRecSimulator:
    """A population of ``num_users`` simultaneous users of the TopicRec simulator.

    Users are addressed by index; every method takes an optional selection (an
    index array or ``slice(None)`` for all) so that a vector environment can reset
    some users while the others keep going.
    """

    def __init__(
        self,
        config: SimulatorConfig,
        num_users: int = 1,
        item_embeddings: Optional[EmbeddingsLike] = None,
    ) -> None:
        if isinstance(num_users, bool) or not isinstance(num_users, (int, np.integer)) or num_users < 1:
            raise ValueError(f"num_users must be a positive integer, got {num_users!r}")
        self.config = config
        spec = config.item_embeddings if item_embeddings is None else item_embeddings
        emb, source = load_item_embeddings(spec, config.topic_size)
        self.catalogue = ItemCatalogue(emb, config.topic_size, source)
        cat = self.catalogue
        if config.slate_size > cat.num_items:
            raise ValueError(
                f"slate_size={config.slate_size} exceeds the number of items ({cat.num_items})"
            )
        self.num_users = int(num_users)
        self.num_items = cat.num_items
        self.num_topics = cat.num_topics
        self.slate_size = config.slate_size
        self.dim = cat.dim
        self.items = cat.embeddings  # (N, d) float32
        self._items64 = cat.embeddings.astype(np.float64)  # gathered every turn
        self._items64_t = np.ascontiguousarray(self._items64.T)
        self._items32_t = np.ascontiguousarray(cat.embeddings.T.astype(np.float32))
        self.item_topics = cat.item_topics  # (N,)
        self.max_score = cat.max_score
        r = np.arange(config.slate_size, dtype=np.float64)
        decay = config.position_decay
        if config.click_model == "TopDown":
            self.examination = decay**r
        else:
            self.examination = 0.5 * decay**r + 0.5 * decay ** (config.slate_size - 1 - r)
        self.initial_slate = cat.initial_slate(config.slate_size)

        b, K, L, k = self.num_users, self.num_topics, config.recent_items_maxlen, config.slate_size
        self.user = np.zeros((b, self.dim), dtype=np.float64)
        self.bored = np.zeros((b, K), dtype=bool)
        # int16 where timeouts fit: the boredom update runs on it every turn
        timeout_dtype = np.int16 if config.boredom_timeout < 1 << 15 else np.int64
        self.bored_timeout = np.full((b, K), config.boredom_timeout, dtype=timeout_dtype)
        self.log_topic = np.zeros((b, L), dtype=np.int64)  # empty slots: topic 0, stamp EMPTY_STAMP
        self.log_stamp = np.full((b, L), EMPTY_STAMP, dtype=np.int64)
        self.log_ptr = np.zeros(b, dtype=np.int64)
        self.t = np.zeros(b, dtype=np.int64)
        self.short_term = np.zeros(b, dtype=np.int64)
        self.last_slate = np.tile(self.initial_slate, (b, 1))
        self.last_clicks = np.zeros((b, k), dtype=bool)
        self.rng = BatchRNG(np.arange(b))
        # Every random number of an episode comes from one counter block of the user's
        # stream: the new user's sampling first, then k click uniforms per turn.
        # One user (the single env) draws the whole block at reset; a batch reads each
        # turn's uniforms from the block when it plays the turn (same values), which
        # keeps them contiguous in memory instead of 8 MB of per-user rows.
        T, half = config.episode_length, (K * config.topic_size + 1) // 2
        self._u_user = 2 * half + K + 1
        self._whole_block = b == 1
        width = self._u_user + (T + 1) * k if self._whole_block else self._u_user
        self._episode_u = np.zeros((b, width), dtype=np.float64)
        self._episode_block = np.zeros(b, dtype=np.uint64)  # counter block of each user's episode
        if self._whole_block:
            self.click_u = self._episode_u[:, self._u_user :].reshape(b, T + 1, k)  # a view
        self._rows = np.arange(b)
        self._gather_buf = np.empty((min(b, SCORE_CHUNK), k, self.dim))
        self._pull = (1.0 - config.omega) * self._items64  # an item's pull on the user (step 8)
        # Each user's last oracle slate and the e'_u it was computed for (NaN: none yet).
        self._oracle_eff = np.full((b, self.dim), np.nan)
        self._oracle_slate = np.zeros((b, k), dtype=np.int64)
        # Relative error bound of a float32 score (a dim-term dot product of non-negative
        # float32 items and a rounded user is within ~(dim + 2) * 2**-24 of float64), x8.
        self._f32_margin = 8 * (self.dim + 2) * 2.0**-24
        self._one_user_fast = b == 1 and config.short_term_boost == 1.0 and k <= L

    # ------------------------------------------------------------------ helpers
    def _n(self, sel: Selection) -> int:
        return self.num_users if isinstance(sel, slice) else len(sel)

    def _boredom_update(self, sel: Selection, turn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step 1 of turn ``turn``, computed without touching the state.

        The click log is a ring buffer of the newest L clicks; entries that the
        previous turn's step 7 would have dropped (stamp < turn - 1 - window) are
        masked here instead of being removed.
        """
        cfg = self.config
        timeout = self.bored_timeout[sel] - self.bored[sel].view(np.int8)  # int8 keeps the int16 dtype
        bored = self.bored[sel] & (timeout != 0)
        timeout = np.where(bored, timeout, cfg.boredom_timeout)
        log = self.log_topic[sel]
        # Empty slots hold stamp EMPTY_STAMP, always below the cut-off.
        live = self.log_stamp[sel] >= (turn - 1 - cfg.boredom_moving_window)[:, None]
        counts = row_counts(log, self.num_topics, live)
        bored |= counts >= cfg.boredom_threshold
        return bored, timeout

    def _effective_user(self, sel: Selection, bored: np.ndarray) -> np.ndarray:
        """Step 2: bored topics zeroed, short-term topic boosted."""
        b = bored.shape[0]
        # a float factor: multiplying by a bool array casts it on the fly, which is slower
        factor = (~bored).astype(np.float64) if self.config.short_term_boost == 1.0 else self._boost(sel, bored)
        user = self.user[sel].reshape(b, self.num_topics, self.config.topic_size)
        return (user * factor[:, :, None]).reshape(b, self.dim)

    def _boost(self, sel: Selection, bored: np.ndarray) -> np.ndarray:
        factor = (~bored).astype(np.float64)
        factor[np.arange(len(bored)), self.short_term[sel]] *= self.config.short_term_boost
        return factor

    def _interact(self, sel: Selection, slates: np.ndarray, eff_user: np.ndarray, bored: np.ndarray,
                  influence: bool = True) -> Turn:
        """Steps 3-8 of a turn for the selected users (stamp = their turn counter);
        ``influence=False`` skips step 8 (the reset interaction)."""
        cfg = self.config
        scores = self._slate_scores(slates, eff_user)
        if self.max_score != 1.0:
            scores /= self.max_score
        click_probs = scores - cfg.offset  # becomes A_r * E_r in place
        click_probs *= cfg.slope
        expit(click_probs, out=click_probs)
        slate_topics = np.take(self.item_topics, slates)
        if cfg.diversity_penalty != 1.0:  # with a penalty of 1 the check cannot change anything
            crowded = row_counts(slate_topics, self.num_topics).max(axis=1) >= cfg.diversity_threshold
            click_probs = np.where(crowded[:, None], click_probs / cfg.diversity_penalty, click_probs)
        click_probs *= self.examination
        t = self.t[sel]
        clicks = self._click_uniforms(sel, t) < click_probs
        n_clicks = row_count(clicks)
        rewards = n_clicks.astype(np.float64)

        if self.num_users == 1 and self.slate_size <= cfg.recent_items_maxlen:
            ranks = np.flatnonzero(clicks[0])
            if len(ranks):
                self._one_user_clicks(int(t[0]), ranks, slates[0], slate_topics[0], influence)
        else:
            flat = np.flatnonzero(clicks)  # row-major: each user's clicks in rank order
            if flat.size:
                rows = flat // self.slate_size
                # each click's index among its user's clicks
                order = np.arange(len(flat)) - (np.cumsum(n_clicks, dtype=np.int64) - n_clicks)[rows]
                self._update_log(sel, t, n_clicks, rows, order, np.take(slate_topics, flat))
                if influence:
                    self._influence(sel, np.take(slates, flat), rows, order)
        self.last_slate[sel] = slates
        self.last_clicks[sel] = clicks
        return Turn(slates, clicks, rewards, scores, click_probs, bored, slate_topics)

    def _slate_scores(self, slates: np.ndarray, eff_user: np.ndarray) -> np.ndarray:
        """<e_i, e'_u> of the items of each slate, (b, k) float64 (not yet divided by
        max_score). Slates must hold valid ids (the environments check them)."""
        b = len(slates)
        if b <= 16:  # einsum's set-up cost dominates for tiny batches
            return np.matmul(np.take(self._items64, slates, axis=0), eff_user[:, :, None])[:, :, 0]
        # Chunks of users: each chunk's (chunk, k, d) item vectors go into a buffer that
        # stays in the L2 cache (the whole batch's, 1.6 MB at 1,024 users, would evict
        # the rest of the turn's working set and be page-faulted in anew on most turns).
        # mode="clip" skips the range check that makes np.take buffer its output.
        scores = np.empty(slates.shape)
        buf, chunk = self._gather_buf, len(self._gather_buf)
        for a in range(0, b, chunk):
            e = min(a + chunk, b)
            vecs = np.take(self._items64, slates[a:e], axis=0, out=buf[: e - a], mode="clip")
            np.einsum("bkd,bd->bk", vecs, eff_user[a:e], out=scores[a:e])
        return scores

    def _click_uniforms(self, sel: Selection, t: np.ndarray) -> np.ndarray:
        """(b, k) uniforms of the click decisions of turn ``t`` of the selected users."""
        k = self.slate_size
        if self._whole_block:
            return self.click_u[0, t]
        idx = None if isinstance(sel, slice) else sel
        blocks = self._episode_block if idx is None else self._episode_block[idx]
        return self.rng.uniform_at(blocks, self._u_user + t * k, k, idx)

    def _one_user_clicks(self, t: int, ranks: np.ndarray, slate: np.ndarray, slate_topics: np.ndarray,
                         influence: bool = True) -> None:
        """Steps 7-8 for a population of one user (the single env): same updates as
        ``_update_log`` and ``_influence`` on 1-D arrays, which avoids their batch
        bookkeeping. Tests pin both paths to the same trajectories."""
        L = self.config.recent_items_maxlen
        ptr, n = int(self.log_ptr[0]), len(ranks)
        pos = slice(ptr, ptr + n) if ptr + n <= L else np.arange(ptr, ptr + n) % L
        self.log_topic[0, pos] = slate_topics[ranks]
        self.log_stamp[0, pos] = t
        self.log_ptr[0] = (ptr + n) % L
        if not influence:
            return
        omega, m = self.config.omega, self.config.topic_size
        user = self.user[0]
        pull = self._pull.take(slate.take(ranks), axis=0)
        for x in pull:
            user = omega * user
            user += x
            user /= topic_norm_sum(user, m)
        self.user[0] = user

    def _update_log(self, sel: Selection, t: np.ndarray, n_clicks: np.ndarray, rows: np.ndarray,
                    order: np.ndarray, topics: np.ndarray) -> None:
        """Step 7: append the clicked items' topics, stamped with the turn, to the ring buffer.

        A ring of length L keeps exactly the L newest entries; entries older than the
        moving window are ignored when counted (see ``_boredom_update``).
        """
        L = self.config.recent_items_maxlen
        whole = isinstance(sel, slice)
        ptr = self.log_ptr if whole else self.log_ptr[sel]
        if self.slate_size > L:  # more than L clicks in one turn: the last L survive
            skip = np.maximum(n_clicks.astype(np.int64) - L, 0)
            keep = order >= skip[rows]
            rows, order, topics = rows[keep], order[keep], topics[keep]
            order = order - skip[rows]
            n_clicks = np.minimum(n_clicks, L)
        users = rows if whole else sel[rows]
        cells = users * L + (ptr[rows] + order) % L  # flat positions in the (num_users, L) log
        np.put(self.log_topic, cells, topics)
        np.put(self.log_stamp, cells, t[rows])
        if whole:
            ptr += n_clicks
            ptr %= L
        else:
            self.log_ptr[sel] = (ptr + n_clicks) % L

    def _influence(self, sel: Selection, items: np.ndarray, rows: np.ndarray, order: np.ndarray) -> None:
        """Step 8: each clicked item pulls e_u towards itself, in rank order.

        ``items`` are the clicked item ids, ``rows`` their users (row-major click
        order) and ``order`` each click's index among its user's clicks. Iterates
        over click order (first click of every user, then second, ...), so the loop
        runs max-clicks-per-user times, not k times.
        """
        omega, m = self.config.omega, self.config.topic_size
        user = self.user if isinstance(sel, slice) else self.user[sel]
        pull = np.take(self._pull, items, axis=0)  # (clicks, d): (1 - omega) * e_i
        last = int(order.max())
        if last == 0:  # nobody clicked twice
            groups = [(rows, pull)]
        else:  # clicks grouped by their order, each group a contiguous slice
            by_order = np.argsort(order, kind="stable")
            ends = np.cumsum(np.bincount(order)).tolist()
            rows_o, pull_o = rows[by_order], pull[by_order]
            groups = [(rows_o[a:e], pull_o[a:e]) for a, e in zip([0] + ends[:-1], ends)]
        for r, x in groups:
            u = omega * user[r]
            u += x
            u /= topic_norm_sum(u, m)[:, None]
            user[r] = u
        if not isinstance(sel, slice):
            self.user[sel] = user

    # --------------------------------------------------------------- public API
    def seed(self, seeds: np.ndarray, sel: Selection = ALL) -> None:
        """Give the selected users the random streams of ``seeds`` (one int per user)."""
        idx = np.arange(self.num_users)[sel]
        seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
        if len(seeds) != len(idx):
            raise ValueError(f"expected {len(idx)} seeds, got {len(seeds)}")
        self.rng.reseed(idx, seeds)

    def reset(self, sel: Selection = ALL) -> Turn:
        """Start a new episode for the selected users: new user, then the initial slate
        (steps 3-7 with stamp 0: its clicks are logged but do not influence the user).

        All random numbers of the episode come from one draw of the user's stream:
        ``2 * ceil(K*m / 2)`` uniforms for the user's topic components (Box-Muller),
        ``K`` for its topic weights, 1 for the fallback short-term topic, then
        ``(episode_length + 1) * k`` for the click decisions (reset turn first).
        """
        cfg = self.config
        b, K, m, k, T = self._n(sel), self.num_topics, cfg.topic_size, self.slate_size, cfg.episode_length
        half = (K * m + 1) // 2
        n = self._episode_u.shape[1]
        self._episode_block[sel] = self.rng.counters[sel]
        if isinstance(sel, slice):
            u = self.rng.uniform(n, out=self._episode_u)
        else:
            u = self.rng.uniform(n, sel)
            self._episode_u[sel] = u
        normal = box_muller(u[:, : 2 * half], K * m)
        comps = np.abs(np.clip(cfg.user_component_std * normal, -1.0, 1.0))
        weights = u[:, 2 * half : 2 * half + K] ** cfg.user_weight_power
        weights /= weights.sum(axis=1, keepdims=True)
        random_topic = np.minimum((u[:, 2 * half + K] * K).astype(np.int64), K - 1)

        user = comps * np.repeat(weights, m, axis=1)
        self.user[sel] = user / topic_norm_sum(user, m)[:, None]
        self.bored[sel] = False
        self.bored_timeout[sel] = cfg.boredom_timeout
        self.log_topic[sel] = 0
        self.log_stamp[sel] = EMPTY_STAMP
        self.log_ptr[sel] = 0
        self.t[sel] = 0
        bored = np.zeros((b, K), dtype=bool)
        slates = np.tile(self.initial_slate, (b, 1))
        # The reset clicks are logged (stamp 0) but do not move the user: the reference
        # implementation applies the influence only in its step(), and the published
        # returns were produced that way (docs/method.md section 3).
        turn = self._interact(sel, slates, self._effective_user(sel, bored), bored, influence=False)
        # Short-term topic: that of the last clicked item, else a random one.
        self.short_term[sel] = np.where(
            turn.clicks.any(axis=1), turn.slate_topics[np.arange(b), _last_true(turn.clicks)], random_topic
        )
        return turn

    def step(self, slates: np.ndarray, sel: Selection = ALL) -> Turn:
        """One turn for the selected users, who are shown ``slates`` (b, k)."""
        if self._one_user_fast and isinstance(sel, slice):
            return self._step_one_user(slates)
        self.t[sel] += 1
        bored, timeout = self._boredom_update(sel, self.t[sel])
        self.bored[sel] = bored
        self.bored_timeout[sel] = timeout
        turn = self._interact(sel, slates, self._effective_user(sel, bored), bored)
        if self.config.short_term_boost != 1.0:
            rows = np.arange(len(bored))
            st = self.short_term[sel]
            switch = bored[rows, st] & turn.clicks.any(axis=1)
            self.short_term[sel] = np.where(switch, turn.slate_topics[rows, _last_true(turn.clicks)], st)
        return turn

    def _step_one_user(self, slates: np.ndarray) -> Turn:
        """``step`` for a population of one user (the single env): steps 1-8 on 1-D
        views with in-place numpy operations, which removes the batch bookkeeping
        that dominates at this size. Same arithmetic as the batched path; tests pin
        the two to identical trajectories."""
        cfg = self.config
        self.t[0] += 1
        t = int(self.t[0])
        bored, timeout = self.bored[0], self.bored_timeout[0]
        # 1. boredom update (timeouts of topics that are not bored always hold the
        # full timeout, so with no bored topic only the count can change anything)
        # np.count_nonzero is the cheapest reduction on a 10-element array
        if np.count_nonzero(bored):
            timeout -= bored
            bored &= timeout != 0
            timeout[~bored] = cfg.boredom_timeout
        live = self.log_stamp[0] >= t - 1 - cfg.boredom_moving_window
        if np.count_nonzero(live) >= cfg.boredom_threshold:  # else no topic can reach it
            counts = np.bincount(self.log_topic[0][live], minlength=self.num_topics)
            bored |= counts >= cfg.boredom_threshold
        # 2. effective user
        if np.count_nonzero(bored):
            eff = (self.user[0].reshape(self.num_topics, -1) * ~bored[:, None]).ravel()
        else:
            eff = self.user[0]
        # 3-6. relevance, attractiveness, clicks
        slate = slates[0]
        item_vecs = self._items64.take(slate, axis=0)
        scores = item_vecs @ eff
        if self.max_score != 1.0:
            scores /= self.max_score
        attract = sigmoid((scores - cfg.offset) * cfg.slope)
        slate_topics = self.item_topics.take(slate)
        if cfg.diversity_penalty != 1.0:
            if np.bincount(slate_topics, minlength=self.num_topics).max() >= cfg.diversity_threshold:
                attract /= cfg.diversity_penalty
        click_probs = attract * self.examination
        clicks = self.click_u[0, t] < click_probs
        ranks = clicks.nonzero()[0]
        # 7-8. click log and influence
        if len(ranks):
            self._one_user_clicks(t, ranks, slate, slate_topics)
        self.last_slate[0] = slate
        self.last_clicks[0] = clicks
        return Turn(slates, clicks[None, :], np.array([float(len(ranks))]), scores[None, :],
                    click_probs[None, :], bored[None, :].copy(), slate_topics[None, :])

    def terminated(self, sel: Selection = ALL) -> np.ndarray:
        return self.t[sel] >= self.config.episode_length

    # ---------------------------------------------------- privileged quantities
    def next_effective_user(self, sel: Selection = ALL) -> np.ndarray:
        """e'_u that the next turn will use (its boredom update applied to a copy)."""
        bored, _ = self._boredom_update(sel, self.t[sel] + 1)
        return self._effective_user(sel, bored)

    def next_item_scores(self, sel: Selection = ALL) -> np.ndarray:
        """<e_i, e'_u> for every item at the next turn, shape (b, N), float64.

        Float64 on purpose: BLAS rounds differently for different batch shapes (in
        either precision), which can reorder near-tied items and make the oracle
        depend on how many users are simulated together; in float64 the
        differences are ~1e-16 relative instead of ~1e-7, so this is negligibly rare.
        """
        return self.next_effective_user(sel) @ self._items64_t

    def oracle_slates(self, sel: Selection = ALL) -> np.ndarray:
        """Short-term oracle: the k items with the highest next-turn score, best first.

        The answer depends only on e'_u, which stays bit-identical on every turn
        without a click or a boredom change (about 60 % of an epsilon-greedy
        rollout's turns): such users get the slate computed last time for them.
        """
        eff = self.next_effective_user(sel)
        rows = self._rows[sel]
        stale = np.flatnonzero(np.count_nonzero(eff != self._oracle_eff[rows], axis=1))
        if stale.size:
            fresh = eff[stale]
            self._oracle_slate[rows[stale]] = self._exact_top_k(fresh)
            self._oracle_eff[rows[stale]] = fresh
        return self._oracle_slate[rows]

    def _exact_top_k(self, eff: np.ndarray) -> np.ndarray:
        """The float64 top-k of ``eff @ items.T`` (best first), found through float32.

        Candidates come from the float32 product (3x cheaper); they are ordered by
        their float64 scores. A row is recomputed in float64 unless every item
        outside its candidates scores below the k-th candidate by more than the
        float32 error bound, which then proves the sets equal (all scores are sums
        of non-negative terms, so the bound is relative).
        """
        k = self.slate_size
        if k >= self.num_items:
            return top_k(eff @ self._items64_t, k)
        # the (k+1)-th value bounds everything outside the candidates
        values, best = float32_top(eff.astype(np.float32), self._items32_t, k + 1)
        cand = best[:, :k]
        exact = np.einsum("bkd,bd->bk", np.take(self._items64, cand, axis=0), eff)
        out = np.take_along_axis(cand, np.argsort(-exact, axis=1, kind="stable"), axis=1)
        unsure = np.flatnonzero(values[:, k] >= values[:, k - 1] * np.float32(1.0 - self._f32_margin))
        if unsure.size:
            out[unsure] = top_k(eff[unsure] @ self._items64_t, k)
        return out


def _last_true(mask: np.ndarray) -> np.ndarray:
    """Index of the last True per row (0 where none)."""
    k = mask.shape[1]
    return k - 1 - np.argmax(mask[:, ::-1], axis=1)
