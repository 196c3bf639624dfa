"""REINFORCE+SoftMax in the paper's regime (docs/method.md section 7): a GRU belief over the
whole history of (slate, clicks), a softmax over the N items, whole episodes per update, and
random warm-up episodes first.

Acting: a slate is ``k`` draws with replacement from ``pi(. | b_t)`` (deterministic: the
``k`` most probable items), ``b_t`` the belief after observation ``t`` (the reset
observation, then each shown slate with its clicks). Each update takes ``batch_episodes``
of the newest episodes and minimises ``-mean_episodes sum_t G_t log p_t``, with ``G_t`` the
discounted return-to-go of turn ``t``. ``loss`` chooses ``log p_t``:

- ``sampled_slate`` (corrected: the policy gradient of the slate taken):
  ``log pi(a_t | b_t) = sum_j log pi(a_t,j | b_t)``;
- ``first_click`` (the reference code's): for each turn whose *observation* has a click,
  ``log(1 - (1 - pi(i | b_t))^k)`` of the first clicked item ``i`` of that observation (the
  previous turn's slate, already inside ``b_t``), weighted by ``G_t``.

``train_on_warmup`` (the reference code's) also updates on the random warm-up episodes,
which an on-policy gradient should not. The API follows :class:`~sb3_slate.agents.EpisodeSAC`
(own collection loop over a native vector env; ``predict(obs, state, episode_start,
deterministic) -> (slates, beliefs)``; a zip checkpoint of tensors read weights-only).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from gym_slaterec.provenance import TrainingDiverged

from .episode_loop import (
    BatchStats, OwnLoopPlumbing, loop_state, read_zip_checkpoint, report_batch, reset_where, restore_counters,
    write_zip_checkpoint,
)
from .episode_sac.policies import MLP, SlateBelief

FORMAT = "slaterec.episode_reinforce/1"
LOSSES = ("sampled_slate", "first_click")


class EpisodeREINFORCE(OwnLoopPlumbing):
    """REINFORCE+SoftMax over whole episodes (module docstring)."""

    recurrent = True

    def __init__(self, num_items: int, slate_size: int, episode_length: int, item_table: Optional[np.ndarray] = None,
                 embedding_dim: int = 20, belief_size: int = 20, freeze_items: bool = False,
                 scratch_std: Optional[float] = None, net_arch: Optional[list[int]] = None, gamma: float = 0.8,
                 learning_rate: float = 3e-3, batch_episodes: int = 1, warmup_episodes: int = 2_000,
                 loss: str = "sampled_slate", train_on_warmup: bool = False, seed: int = 0, device: str = "cpu") -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.kwargs = dict(num_items=num_items, slate_size=slate_size, episode_length=episode_length,
                           embedding_dim=embedding_dim, belief_size=belief_size, freeze_items=freeze_items,
                           scratch_std=scratch_std, net_arch=list(net_arch or [256]), gamma=gamma,
                           learning_rate=learning_rate, batch_episodes=batch_episodes, warmup_episodes=warmup_episodes,
                           loss=loss, train_on_warmup=train_on_warmup, seed=seed, device=device)
        self.num_items, self.slate_size, self.T = int(num_items), int(slate_size), int(episode_length)
        self.gamma, self.batch_episodes, self.warmup_episodes = float(gamma), int(batch_episodes), int(warmup_episodes)
        self.loss, self.train_on_warmup = loss, bool(train_on_warmup)
        self.device = torch.device(device)
        self.seed = int(seed)
        torch.manual_seed(self.seed)
        self.belief = SlateBelief(num_items, slate_size, item_table, embedding_dim, belief_size, freeze_items,
                                  scratch_std).to(self.device)
        self.head = MLP(belief_size, self.kwargs["net_arch"], num_items).to(self.device)
        self.optimizer = torch.optim.Adam([*self.belief.parameters(), *self.head.parameters()], lr=learning_rate)
        self.rng = np.random.default_rng(self.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.num_timesteps = self.episodes_done = self.n_updates = 0
        self.seconds = {"collect": 0.0, "train": 0.0}
        self.replay_buffer = None  # on-policy: nothing to keep between batches

    # --------------------------------------------------------------- acting
    def predict(self, obs: dict[str, np.ndarray], state: Optional[torch.Tensor] = None,
                episode_start: Optional[np.ndarray] = None, deterministic: bool = False) -> tuple[np.ndarray, torch.Tensor]:
        """Slates (n, k) of item ids for the newest observations; ``state``: the beliefs before them."""
        slates = torch.as_tensor(np.asarray(obs["slate"]), dtype=torch.long, device=self.device)
        clicks = torch.as_tensor(np.asarray(obs["clicks"]), dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            h = self.belief.step(slates, clicks, reset_where(state, episode_start))
            logits = self.head(h)
            if deterministic:
                ids = logits.topk(self.slate_size, dim=1).indices
            else:
                ids = torch.multinomial(logits.softmax(dim=1), self.slate_size, replacement=True, generator=self.generator)
        return ids.cpu().numpy(), h

    # ------------------------------------------------------------- training
    def returns_to_go(self, rewards: torch.Tensor) -> torch.Tensor:
        """(B, T) rewards -> (B, T) discounted returns from each turn on."""
        out = torch.empty_like(rewards)
        running = torch.zeros_like(rewards[:, 0])
        for t in range(rewards.shape[1] - 1, -1, -1):
            running = rewards[:, t] + self.gamma * running
            out[:, t] = running
        return out

    def train_on(self, slates: np.ndarray, clicks: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> float:
        """One gradient step on whole episodes: slates/clicks (B, T+1, k) observations, actions
        (B, T, k) the sampled slates, rewards (B, T)."""
        S = torch.as_tensor(slates, dtype=torch.long, device=self.device)
        C = torch.as_tensor(clicks, dtype=torch.float32, device=self.device)
        A = torch.as_tensor(actions, dtype=torch.long, device=self.device)
        G = self.returns_to_go(torch.as_tensor(rewards, dtype=torch.float32, device=self.device))
        b = self.belief.unroll(S[:, :-1], C[:, :-1])  # (B, T, H): b_t has seen observations 0..t
        logp_items = torch.log_softmax(self.head(b), dim=-1)  # (B, T, N)
        if self.loss == "sampled_slate":
            logp = logp_items.gather(2, A).sum(dim=2)  # (B, T)
            weight = G
        else:  # the reference's: the first clicked item of observation t, if any
            clicked = C[:, :-1] > 0  # (B, T, k)
            has = clicked.any(dim=2)
            first = clicked.float().argmax(dim=2)
            item = S[:, :-1].gather(2, first[..., None])  # (B, T, 1)
            pi = logp_items.gather(2, item).squeeze(2).exp()
            logp = torch.log(1.0 - (1.0 - pi).pow(self.slate_size) + 1e-6)
            weight = G * has
        loss = -(weight * logp).sum(dim=1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(f"training diverged at update {self.n_updates + 1} (loss {value}); lower the learning rate")
        self.n_updates += 1
        return value

    def learn(self, total_timesteps: int, callback: Any = None, reset_num_timesteps: bool = True,
              progress_bar: bool = False) -> "EpisodeREINFORCE":
        """Collect ``n_envs`` episodes at a time and update on them, ``batch_episodes`` per update."""
        target = self.start_learning(total_timesteps, callback, reset_num_timesteps)
        env, T, k = self.env, self.T, self.slate_size
        n = env.num_envs
        clock = time.perf_counter
        stop, last_loss = False, math.nan
        while self.num_timesteps < target and not stop:
            start = clock()
            obs, _ = env.reset(seed=self.first_user_seed(self.episodes_done))
            slates = np.empty((n, T + 1, k), dtype=np.int64)
            clicks = np.empty((n, T + 1, k), dtype=np.uint8)
            actions = np.empty((n, T, k), dtype=np.int64)
            rewards = np.empty((n, T), dtype=np.float32)
            stats = BatchStats(n)
            slates[:, 0], clicks[:, 0] = obs["slate"], obs["clicks"]
            warm = self.episodes_done < self.warmup_episodes
            state = None
            for t in range(T):
                if warm:
                    action = self.rng.integers(0, self.num_items, size=(n, k))
                else:
                    action, state = self.predict(obs, state)
                obs, reward, terminated, truncated, info = env.step(action)
                slates[:, t + 1], clicks[:, t + 1] = obs["slate"], obs["clicks"]
                actions[:, t], rewards[:, t] = action, reward
                stats.add(info)
                self.num_timesteps += n
            if not np.asarray(terminated).all():
                raise RuntimeError(f"episodes did not end after {T} turns (episode_length mismatch)")
            train_start = clock()
            if not warm or self.train_on_warmup:
                for i in range(0, n, self.batch_episodes):
                    part = slice(i, i + self.batch_episodes)
                    last_loss = self.train_on(slates[part], clicks[part], actions[part], rewards[part])
            self.episodes_done += n
            self.seconds["train"] += clock() - train_start
            self.seconds["collect"] += train_start - start
            stop = report_batch(self, rewards, stats, {"loss": last_loss}, callback)
        if callback is not None:
            callback.on_training_end()
        return self

    # ------------------------------------------------------------ save/load
    def save(self, path: Union[str, Path]) -> None:
        """A zip of ``config.json`` (constructor arguments) and ``state.pt`` (tensors only)."""
        write_zip_checkpoint(path, FORMAT, self.kwargs, {
            "belief": self.belief.state_dict(), "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(), **loop_state(self)})

    @classmethod
    def load(cls, path: Union[str, Path], env: Any = None, device: str = "cpu") -> "EpisodeREINFORCE":
        """The model of checkpoint ``path`` (read weights-only), acting on ``env`` when given."""
        kwargs, state = read_zip_checkpoint(path, FORMAT, "EpisodeREINFORCE")
        kwargs["device"] = device
        model = cls(**kwargs)
        model.belief.load_state_dict(state["belief"])
        model.head.load_state_dict(state["head"])
        model.optimizer.load_state_dict(state["optimizer"])
        restore_counters(model, state)
        if env is not None:
            model.set_env(env)
        return model

