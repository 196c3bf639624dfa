"""SAC+WkNN in the episode regime with every difference between the reference code and the
paper's text as a switch (docs/method.md section 7, "Variants").

:class:`EpisodeWkNN` acts with item ids (the env takes slates as they are) and works in the
k-NN table's own units, as the reference code does: the actor's ``[-1, 1]`` output is mapped
to the table's per-dimension box (tiled rank after rank), the critic reads item embeddings.
Each switch has the paper's reading (first value) and the reference code's (second):

- ``item_source``: ``configured`` (the MF or ideal table given) | ``belief_copy`` (a frozen
  copy of the critic belief's initial table; in the reference, an untrained N(0, 1) table);
- ``critic_slate``: ``shown`` (Q(b_t, a_t) on the slate shown at turn t) | ``observed`` (on the
  slate of the observation b_t was built from: the previous turn's);
- ``layout``: ``rank_major`` (the action is k targets of d values) | ``dim_major`` (the k-NN
  lookup reads it as (d, k) while the Q input and the box read it as (k, d));
- ``scorer``: ``critic`` (Q1 on the critic's belief) | ``target_actor`` (the target Q1 on the
  actor's belief);
- ``fill``: ``nearest`` (while rank r is chosen, the later ranks hold their nearest items) |
  ``candidate`` (they repeat the candidate);
- ``next_action``: ``proto`` (the target's next action is the actor's sample, as in the
  actor's loss) | ``refined`` (the slate the sample refines to);
- ``warmup``: ``uniform`` (uniform targets, each rank's nearest item) | ``random_items``
  (uniformly random item slates).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch.nn import functional as F

from gym_slaterec.provenance import TrainingDiverged

from ...agent_configs import WKNN_SWITCHES as SWITCHES
from ..episode_loop import reset_where
from ..wolpertinger import greedy_slates, nearest_items
from .algorithm import EpisodeSAC
from .buffer import EpisodeReplayBuffer
from .policies import unroll_pair

PAPER_SWITCHES = {k: v[0] for k, v in SWITCHES.items()}
REFERENCE_SWITCHES = {k: v[1] for k, v in SWITCHES.items()}


def check_switches(switches: dict[str, str]) -> dict[str, str]:
    """``switches`` completed with the paper's readings; unknown names and values refused."""
    for key, value in switches.items():
        if key not in SWITCHES:
            raise ValueError(f"unknown SAC+WkNN switch {key!r} (switches: {', '.join(SWITCHES)})")
        if value not in SWITCHES[key]:
            raise ValueError(f"SAC+WkNN switch {key} must be {' or '.join(SWITCHES[key])}, got {value!r}")
    return {**PAPER_SWITCHES, **switches}


class EpisodeWkNN(EpisodeSAC):
    """:class:`EpisodeSAC` acting through a Wolpertinger k-NN refinement, its reference-code
    differences switchable (module docstring). Actions given to the env are item ids (n, k).

    :param wknn_items: the (N, d) k-NN table: the configured one, or with ``item_source=belief_copy``
        None (the copy is made here) or the copy made before (a checkpoint's).
    :param switches: switch -> value (absent: the paper's reading).
    """

    def __init__(self, *args: Any, wknn_items: Optional[np.ndarray] = None, k_neighbours: int = 10,
                 switches: Optional[dict[str, str]] = None, **kwargs: Any) -> None:
        kwargs.pop("wolpertinger_items", None)
        super().__init__(*args, k_neighbours=k_neighbours, **kwargs)
        self.switches = check_switches(dict(switches or {}))
        if isinstance(k_neighbours, bool) or int(k_neighbours) != k_neighbours or k_neighbours < 1:
            raise ValueError(f"k_neighbours must be a positive integer, got {k_neighbours!r}")
        self.k_neighbours = int(k_neighbours)
        if wknn_items is not None:
            table = torch.as_tensor(np.asarray(wknn_items, dtype=np.float32), device=self.device)
        elif self.switches["item_source"] == "belief_copy":
            table = self.critic_belief.items.weight.detach().clone()
        else:
            raise ValueError("EpisodeWkNN needs wknn_items (N, d) unless item_source=belief_copy")
        if table.ndim != 2 or table.shape[0] != self.num_items or not torch.isfinite(table).all():
            raise ValueError(f"the k-NN item table must be a finite ({self.num_items}, d) table, got shape {tuple(table.shape)}")
        self.item_dim = int(table.shape[1])
        if self.slate_size * self.item_dim != self.action_dim:
            raise ValueError(f"a {self.slate_size}-item slate of {self.item_dim}-d items is {self.slate_size * self.item_dim} "
                             f"action values, not action_dim={self.action_dim}")
        self.table = table.to(self.device)
        low, high = self.table.min(dim=0).values, self.table.max(dim=0).values
        high = torch.maximum(high, low + 1e-6)
        # the box tiled rank after rank (k, d), as the Q input reads the action
        self.center = ((low + high) / 2).repeat(self.slate_size)
        self.scale = ((high - low) / 2).repeat(self.slate_size)
        self.kwargs.update(wolpertinger=False, wknn=True, switches=dict(self.switches), k_neighbours=self.k_neighbours)
        # the actions are slates, which the memory keeps as ids already: no (T, k*d) copy of their vectors
        self.replay_buffer = EpisodeReplayBuffer(self.replay_buffer.capacity, self.T, self.slate_size, 1, self.num_items)

    # ------------------------------------------------------------ the k-NN refinement
    def to_box(self, unit: torch.Tensor) -> torch.Tensor:
        """Actor outputs in ``[-1, 1]^A`` -> the table's units."""
        return self.center + self.scale * unit

    def targets(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, k*d) actions in table units -> per-rank targets (B, k, d) as the k-NN lookup reads them."""
        b = raw.shape[0]
        if self.switches["layout"] == "dim_major":
            return raw.reshape(b, self.item_dim, self.slate_size).transpose(1, 2)
        return raw.reshape(b, self.slate_size, self.item_dim)

    def candidates(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, k*d) actions -> ids (B, k, k') of each rank's nearest items (Euclidean), nearest first."""
        t = self.targets(raw)
        b, k, d = t.shape
        kp = min(self.k_neighbours, self.num_items)
        return nearest_items(t.reshape(b * k, d), self.table, kp).view(b, k, kp)

    def refine(self, unit: torch.Tensor, actor_belief: torch.Tensor, critic_belief: torch.Tensor) -> torch.Tensor:
        """Actor outputs (B, A) -> slates (B, k) of item ids."""
        cand = self.candidates(self.to_box(unit))
        if self.switches["scorer"] == "target_actor":
            belief, q = actor_belief, self.critic_target.q1
        else:
            belief, q = critic_belief, self.critic.q1
        return greedy_slates(cand, self.table, belief, q, self.switches["fill"])

    def slate_vectors(self, slates: torch.Tensor) -> torch.Tensor:
        """Item ids (..., k) -> the Q input's action part (..., k*d)."""
        return self.table[slates].flatten(-2)

    # --------------------------------------------------------------------- acting
    def predict(self, obs: dict[str, np.ndarray], state: Optional[torch.Tensor] = None,
                episode_start: Optional[np.ndarray] = None, deterministic: bool = False) -> tuple[np.ndarray, torch.Tensor]:
        """Slates (n, k) of item ids; the state holds the actor's and the critic's beliefs."""
        slates, clicks = self._obs_tensors(obs)
        with torch.inference_mode():
            state = reset_where(state, episode_start)
            ha = self.actor.belief.gru.hidden_size
            h_actor = self.actor.belief.step(slates, clicks, None if state is None else state[:, :ha])
            h_critic = self.critic_belief.step(slates, clicks, None if state is None else state[:, ha:])
            unit = self.actor.act(h_actor, deterministic, self.generator)
            if not torch.isfinite(unit).all():
                raise TrainingDiverged(f"training diverged at gradient step {self.n_updates} (the policy's "
                                       "actions are not finite); lower the learning rate")
            ids = self.refine(unit, h_actor, h_critic)
        return ids.cpu().numpy(), torch.cat([h_actor, h_critic], dim=1)

    def collect_action(self, obs: dict[str, np.ndarray], state: Optional[torch.Tensor],
                       warm: bool) -> tuple[np.ndarray, Optional[torch.Tensor]]:
        if not warm:
            return self.predict(obs, state, deterministic=False)
        n = len(obs["slate"])
        if self.switches["warmup"] == "random_items":
            return self.rng.integers(0, self.num_items, size=(n, self.slate_size)), state
        s = self.warmup_scale
        unit = torch.as_tensor(self.rng.uniform(-s, s, size=(n, self.action_dim)), dtype=torch.float32,
                               device=self.device)
        return self.candidates(self.to_box(unit))[:, :, 0].cpu().numpy(), state

    def stored_action(self, action: np.ndarray) -> np.ndarray:
        """Nothing: the training step reads the slates the memory keeps anyway (one placeholder value)."""
        return np.zeros((len(action), 1), dtype=np.float32)

    # ------------------------------------------------------------------- training
    def train_step(self) -> dict[str, float]:
        """One gradient step on ``batch_size`` sampled episodes, Q inputs in table units."""
        S, C, _, R = self.replay_buffer.sample(self.batch_size, self.rng).to(self.device)
        done = torch.zeros_like(R)
        done[:, -1] = 1.0
        b_actor, b_critic = unroll_pair(self.actor.belief, self.critic_belief, S, C)
        alpha = self.alpha
        mean, log_std = self.actor.distribution(b_actor)
        shown = S[:, 1:] if self.switches["critic_slate"] == "shown" else S[:, :-1]
        with torch.no_grad():
            u_next, logp_next = self.actor.sample_from(mean[:, 1:].detach(), log_std[:, 1:].detach(), self.generator)
            if self.switches["next_action"] == "refined":
                bsz, T = u_next.shape[:2]
                ids = self.refine(u_next.reshape(bsz * T, -1), b_actor[:, 1:].reshape(bsz * T, -1).detach(),
                                  b_critic[:, 1:].reshape(bsz * T, -1).detach())
                a_next = self.slate_vectors(ids).view(bsz, T, -1)
            else:
                a_next = self.to_box(u_next)
            q1_t, q2_t = self.critic_target.values(b_critic[:, 1:].detach(), a_next)
            target = R + self.gamma * (1.0 - done) * (torch.min(q1_t, q2_t) - alpha * logp_next)
        q1, q2 = self.critic.values(b_critic[:, :-1], self.slate_vectors(shown))
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        u_pi, logp = self.actor.sample_from(mean[:, :-1], log_std[:, :-1], self.generator)
        self.critic.requires_grad_(False)
        q1_pi, q2_pi = self.critic.values(b_critic[:, :-1].detach(), self.to_box(u_pi))
        self.critic.requires_grad_(True)
        actor_loss = (alpha * logp - torch.min(q1_pi, q2_pi)).mean()
        return self.apply_losses(critic_loss, actor_loss, logp, alpha)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"wknn_table": self.table.cpu()}
