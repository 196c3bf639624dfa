"""A deliberately naive one-user implementation of docs/method.md section 3, for tests.

Written from the spec with plain Python loops and deques, independently of the
batched core; it draws its random numbers from the same per-user stream so that
both implementations can be compared turn by turn.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from gym_slaterec.core.config import SimulatorConfig
from gym_slaterec.core.rng import BatchRNG


class NaiveUser:
    def __init__(self, cfg: SimulatorConfig, items: np.ndarray, seed: int) -> None:
        self.cfg = cfg
        self.items = items.astype(np.float64)
        self.m = cfg.topic_size
        self.K = items.shape[1] // self.m
        self.k = cfg.slate_size
        blocks = [np.linalg.norm(items[:, self.m * t : self.m * (t + 1)], axis=1) for t in range(self.K)]
        self.topic_of = np.argmax(np.stack(blocks, axis=1), axis=1)
        self.initial = [int(np.argmax(blocks[t])) for t in range(self.k)]
        self.max_score = float(np.max(np.linalg.norm(items, axis=1)))
        self.rng = BatchRNG(np.array([seed]))

    def _norm(self, e):
        return sum(np.linalg.norm(e[self.m * t : self.m * (t + 1)]) for t in range(self.K))

    def _interact(self, slate, stamp, influence=True):
        cfg = self.cfg
        e = self.user.copy()
        for t in range(self.K):
            if self.bored[t]:
                e[self.m * t : self.m * (t + 1)] = 0.0
        u = self.click_u[stamp]
        topics = [self.topic_of[i] for i in slate]
        most = max(topics.count(t) for t in set(topics))
        clicks = []
        for r, item in enumerate(slate):
            s = float(self.items[item] @ e) / self.max_score
            a = 1.0 / (1.0 + np.exp(-(s - cfg.offset) * cfg.slope))
            if most >= cfg.diversity_threshold:
                a /= cfg.diversity_penalty
            if cfg.click_model == "TopDown":
                ex = cfg.position_decay**r
            else:
                ex = 0.5 * cfg.position_decay**r + 0.5 * cfg.position_decay ** (self.k - 1 - r)
            clicks.append(bool(u[r] < a * ex))
        for r, item in enumerate(slate):
            if clicks[r]:
                self.log.append((self.topic_of[item], stamp))
        while self.log and self.log[0][1] < stamp - cfg.boredom_moving_window:
            self.log.popleft()
        for r, item in enumerate(slate):
            if clicks[r] and influence:
                self.user = cfg.omega * self.user + (1 - cfg.omega) * self.items[item]
                self.user = self.user / self._norm(self.user)
        return clicks

    def reset(self):
        cfg = self.cfg
        # The episode's random numbers, laid out as documented in TopicRecSimulator.reset.
        n = self.K * self.m
        half = (n + 1) // 2
        T = cfg.episode_length
        u = self.rng.uniform(2 * half + self.K + 1 + (T + 1) * self.k)[0]
        r = np.sqrt(-2.0 * np.log(1.0 - u[:half]))
        normal = np.concatenate([r * np.cos(2 * np.pi * u[half : 2 * half]), r * np.sin(2 * np.pi * u[half : 2 * half])])[:n]
        self.click_u = u[2 * half + self.K + 1 :].reshape(T + 1, self.k)
        comps = np.abs(np.clip(cfg.user_component_std * normal, -1, 1))
        w = u[2 * half : 2 * half + self.K] ** cfg.user_weight_power
        w = w / w.sum()
        self.user = comps * np.repeat(w, self.m)
        self.user = self.user / self._norm(self.user)
        self.bored = [False] * self.K
        self.timeout = [cfg.boredom_timeout] * self.K
        self.log = deque(maxlen=cfg.recent_items_maxlen)
        self.t = 0
        # the reset clicks are logged with stamp 0 but do not move the user (docs/method.md section 3)
        clicks = self._interact(list(self.initial), 0, influence=False)
        return list(self.initial), clicks

    def boredom_update(self):
        cfg = self.cfg
        for t in range(self.K):
            if self.bored[t]:
                self.timeout[t] -= 1
                if self.timeout[t] == 0:
                    self.bored[t] = False
            if not self.bored[t]:
                self.timeout[t] = cfg.boredom_timeout
        counts = [0] * self.K
        for topic, _ in self.log:
            counts[topic] += 1
        for t in range(self.K):
            if counts[t] >= cfg.boredom_threshold:
                self.bored[t] = True

    def step(self, slate):
        self.t += 1
        self.boredom_update()
        clicks = self._interact(list(slate), self.t)
        return clicks, sum(clicks)
