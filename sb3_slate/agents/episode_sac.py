"""Episode-replay recurrent SAC: the paper's training regime (docs/method.md sections 7-8).

The unit of replay is the whole episode. Each gradient step samples ``batch_size``
episodes, unrolls the belief GRUs over every episode's whole history (the reset
observation included) and trains on every turn of the batch at once:

- the actor and the critic each have their own item table and GRU; both are
  unrolled once per step, together, as one block-diagonal GRU (:func:`unroll_pair`),
  and one backward pass serves both losses; as in the reference implementation,
  the Polyak-averaged target network is the pair of Q heads, fed the critic's belief;
- critic: ``Q_i(b^c_t, a_t)`` against ``r_t + gamma (1 - d_t) [min_i Q'_i(b^c_{t+1},
  a') - alpha log pi(a' | b^a_{t+1})]`` with ``a' ~ pi(. | b^a_{t+1})``;
- actor: ``alpha log pi(a | b^a_t) - min_i Q_i(b^c_t, a)`` (critic belief detached);
- automatic entropy: ``alpha`` tuned towards ``-dim(A)``.

Collection runs ``n_envs`` users at once through a native vector env whose action
wrapper (GeMS, TopK...) maps ``[-1, 1]^A`` to slates, with the belief carried as a
recurrent state. ``gradient_steps`` updates per collected episode are spread
evenly over the turns of each batch of episodes (with 100 users of 100 turns, one
update per turn), so the policy that collects a batch is at most one batch of
``n_envs`` episodes old - the paper collects one user at a time, with a lag of one
episode. The first ``warmup_episodes`` episodes act uniformly at random.

With ``wolpertinger_items`` (SAC+WkNN) the actor's action is a target item per rank;
acting refines it as the window regime's :class:`~sb3_slate.agents.WolpertingerPolicy`
does (the ``k_neighbours`` nearest items of each rank's target, chosen rank by rank by
the first Q head on the critic's belief), so the recurrent state carries both beliefs;
the refined action is what the env receives and the buffer stores.

The API follows sb3-contrib's recurrent algorithms: ``learn``, ``save``, ``load``,
``predict(obs, state, episode_start, deterministic) -> (action, state)``.
"""

from __future__ import annotations

import copy
import io
import json
import math
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gym_slaterec.provenance import TrainingDiverged

from ..belief import item_table as make_item_table
from .gru_sequence import unroll_gru
from .wolpertinger import embedding_box, greedy_item_choice

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
FORMAT = "slaterec.episode_sac/1"


# ------------------------------------------------------------------ replay
class EpisodeReplayBuffer:
    """The newest ``capacity`` episodes as item ids (int16/int32), clicks (uint8),
    actions and rewards (float32); sampling draws whole episodes."""

    def __init__(self, capacity: int, episode_length: int, slate_size: int, action_dim: int, num_items: int) -> None:
        for name, v in (("capacity", capacity), ("episode_length", episode_length), ("slate_size", slate_size),
                        ("action_dim", action_dim), ("num_items", num_items)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.capacity, self.T, self.k = int(capacity), int(episode_length), int(slate_size)
        self.action_dim, self.num_items = int(action_dim), int(num_items)
        ids = np.int16 if num_items <= np.iinfo(np.int16).max else np.int32
        self.slates = np.zeros((self.capacity, self.T + 1, self.k), dtype=ids)
        self.clicks = np.zeros((self.capacity, self.T + 1, self.k), dtype=np.uint8)
        self.actions = np.zeros((self.capacity, self.T, self.action_dim), dtype=np.float32)
        self.rewards = np.zeros((self.capacity, self.T), dtype=np.float32)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, slates: np.ndarray, clicks: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Append ``n`` whole episodes: (n, T+1, k), (n, T+1, k), (n, T, A), (n, T)."""
        n = len(slates)
        if slates.shape != (n, self.T + 1, self.k) or clicks.shape != slates.shape:
            raise ValueError(f"episodes must be ({n}, {self.T + 1}, {self.k}); got {slates.shape} and {clicks.shape}")
        if actions.shape != (n, self.T, self.action_dim) or rewards.shape != (n, self.T):
            raise ValueError(f"actions/rewards must be ({n}, {self.T}, {self.action_dim}) / ({n}, {self.T}); "
                             f"got {actions.shape} and {rewards.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("refusing to store non-finite actions in the replay buffer")
        idx = (self.pos + np.arange(n)) % self.capacity
        self.slates[idx], self.clicks[idx] = slates, clicks
        self.actions[idx], self.rewards[idx] = actions, rewards
        self.pos = int((self.pos + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``batch_size`` whole episodes drawn uniformly (with replacement)."""
        if self.size == 0:
            raise ValueError("the replay buffer is empty")
        idx = np.sort(rng.integers(0, self.size, size=batch_size))
        return {
            "slates": torch.from_numpy(self.slates[idx].astype(np.int64)),
            "clicks": torch.from_numpy(self.clicks[idx].astype(np.float32)),
            "actions": torch.from_numpy(self.actions[idx]),
            "rewards": torch.from_numpy(self.rewards[idx]),
        }

    def save(self, path: Union[str, Path]) -> None:
        """An ``.npz`` archive (no pickle) of the stored episodes."""
        with open(path, "wb") as f:
            np.savez(f, slates=self.slates[: self.size], clicks=self.clicks[: self.size],
                     actions=self.actions[: self.size], rewards=self.rewards[: self.size],
                     meta=np.array([self.pos, self.size, self.capacity, self.T, self.k, self.action_dim, self.num_items]))

    def load(self, path: Union[str, Path]) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                pos, size, cap, T, k, A, n = (int(x) for x in data["meta"])
                arrays = {name: data[name] for name in ("slates", "clicks", "actions", "rewards")}
        except Exception as exc:  # truncated, foreign or pickled content
            raise ValueError(f"replay buffer {path} is damaged ({type(exc).__name__}: {exc})") from exc
        if (cap, T, k, A, n) != (self.capacity, self.T, self.k, self.action_dim, self.num_items):
            raise ValueError(f"replay buffer {path} holds episodes of another shape {(cap, T, k, A, n)}")
        for name, arr in arrays.items():
            if len(arr) != size:
                raise ValueError(f"replay buffer {path} is damaged ({name} holds {len(arr)} of {size} episodes)")
            getattr(self, name)[:size] = arr
        self.pos, self.size = pos, size


# ---------------------------------------------------------------- networks
class SlateBelief(nn.Module):
    """Item table + GRU over turns ``concat(E[slate], clicks)`` (``k*(d+1)`` values)."""

    def __init__(self, num_items: int, slate_size: int, item_table: Optional[np.ndarray] = None,
                 embedding_dim: int = 20, hidden_size: int = 20, freeze: bool = False) -> None:
        super().__init__()
        self.items = make_item_table(num_items, item_table, embedding_dim, freeze, "item table")
        self.slate_size = slate_size
        self.gru = nn.GRU(slate_size * (self.items.embedding_dim + 1), hidden_size, batch_first=True)

    def inputs(self, slates: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
        """(B, L, k) ids and clicks -> (B, L, k*(d+1))."""
        b, length, _ = slates.shape
        # index_select rather than the embedding op: same values, a cheaper backward (index_add)
        embedded = self.items.weight.index_select(0, slates.reshape(-1)).view(b, length, -1)
        return torch.cat([embedded, clicks], dim=2)

    def forward(self, slates: torch.Tensor, clicks: torch.Tensor, h0: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Beliefs after each turn, (B, L, H): row t has seen turns 0..t."""
        out, _ = self.gru(self.inputs(slates, clicks), None if h0 is None else h0[None].contiguous())
        return out

    def step(self, slates: torch.Tensor, clicks: torch.Tensor, h: Optional[torch.Tensor]) -> torch.Tensor:
        """One turn for a batch of users: (B, k), (B, k), belief (B, H) or None -> (B, H)."""
        return self.forward(slates[:, None], clicks[:, None], h)[:, 0]


def _block_diagonal_gates(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GRU weights (3 Ha, ·) and (3 Hb, ·) -> (3 (Ha + Hb), ·), block-diagonal per gate (r, z, n)."""
    return torch.cat([torch.block_diag(x, y) for x, y in zip(a.chunk(3, 0), b.chunk(3, 0))], dim=0)


def _stack_gates(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.cat([x, y]) for x, y in zip(a.chunk(3), b.chunk(3))])


def unroll_pair(first: SlateBelief, second: SlateBelief, slates: torch.Tensor, clicks: torch.Tensor,
                unroll: Callable[..., torch.Tensor] = unroll_gru) -> tuple[torch.Tensor, torch.Tensor]:
    """Both beliefs over the same episodes in one GRU unroll, (B, L, H1) and (B, L, H2).

    A GRU's gates act unit by unit, so two GRUs are exactly one GRU whose hidden
    state is the concatenation of theirs and whose weights are block-diagonal per
    gate. One unroll of ``H1 + H2`` units costs about half of two unrolls (the time
    goes into the per-turn steps, not the arithmetic); gradients reach each belief's
    own parameters only (the off-diagonal blocks are constant zeros). ``unroll``
    computes the GRU from its inputs and weights (on CPU :func:`gru_sequence`, whose
    backward pass is written by hand; cuDNN's GRU on CUDA).
    """
    x = torch.cat([first.inputs(slates, clicks), second.inputs(slates, clicks)], dim=2)
    g1, g2 = first.gru, second.gru
    out = unroll(x, _block_diagonal_gates(g1.weight_ih_l0, g2.weight_ih_l0),
                 _block_diagonal_gates(g1.weight_hh_l0, g2.weight_hh_l0),
                 _stack_gates(g1.bias_ih_l0, g2.bias_ih_l0), _stack_gates(g1.bias_hh_l0, g2.bias_hh_l0))
    h1 = g1.hidden_size
    return out[..., :h1], out[..., h1:]


class MLP(nn.Sequential):
    """Linear layers with ReLUs between them, applied to the last dimension of any input.

    Leading dimensions are flattened first, so every layer sees a plain matrix: the
    in-place ReLUs then act on a fresh product rather than on a view of one (which
    autograd would have to copy).
    """

    def __init__(self, inp: int, hidden: list[int], out: int) -> None:
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(inp, h), nn.ReLU(inplace=True)]
            inp = h
        layers.append(nn.Linear(inp, out))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return super().forward(x.reshape(-1, x.shape[-1])).view(*lead, -1)


class TwinQ(nn.Module):
    """Two Q heads over (belief, action)."""

    def __init__(self, hidden: int, action_dim: int, net_arch: list[int]) -> None:
        super().__init__()
        self.q1 = MLP(hidden + action_dim, net_arch, 1)
        self.q2 = MLP(hidden + action_dim, net_arch, 1)

    def values(self, b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([b, a], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class SquashedGaussianActor(nn.Module):
    """The actor's belief and a tanh-Gaussian policy head."""

    def __init__(self, belief: SlateBelief, hidden: int, action_dim: int, net_arch: list[int]) -> None:
        super().__init__()
        self.belief = belief
        self.net = MLP(hidden, net_arch, 2 * action_dim)

    def distribution(self, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(b).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, b: torch.Tensor, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised tanh-Gaussian action and its log-probability (summed over dimensions)."""
        return self.sample_from(*self.distribution(b), generator)

    @staticmethod
    def sample_from(mean: torch.Tensor, log_std: torch.Tensor,
                    generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`sample` given the Gaussian's mean and log standard deviation."""
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        u = mean + log_std.exp() * noise
        # log N(u; mean, std) - sum log(1 - tanh(u)^2), the latter in a stable form
        logp = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), logp

    def act(self, b: torch.Tensor, deterministic: bool, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if deterministic:
            return torch.tanh(self.distribution(b)[0])
        return self.sample(b, generator)[0]


class WolpertingerRefiner(nn.Module):
    """SAC+WkNN's action refinement in the agent's ``[-1, 1]`` action scale.

    Each rank's target (``d`` values) is mapped to the item table's box (per-dimension
    minimum and maximum, :func:`~sb3_slate.agents.wolpertinger.embedding_box`), then
    :func:`~sb3_slate.agents.wolpertinger.greedy_item_choice` picks the items, as in the
    window regime.
    """

    def __init__(self, items: np.ndarray, slate_size: int, k_neighbours: int) -> None:
        super().__init__()
        table = torch.as_tensor(np.asarray(items, dtype=np.float32))
        if table.ndim != 2 or not torch.isfinite(table).all():
            raise ValueError(f"wolpertinger_items must be a finite (N, d) table, got shape {tuple(table.shape)}")
        if isinstance(k_neighbours, bool) or int(k_neighbours) != k_neighbours or k_neighbours < 1:
            raise ValueError(f"k_neighbours must be a positive integer, got {k_neighbours!r}")
        box = embedding_box(table.numpy(), 1)  # the box the env maps unit actions onto
        low, high = torch.as_tensor(box.low), torch.as_tensor(box.high)
        self.register_buffer("items", table)
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        self.register_buffer("unit_items", 2.0 * (table - low) / (high - low) - 1.0)
        self.slate_size, self.k_neighbours = int(slate_size), int(k_neighbours)
        self.action_dim = self.slate_size * table.shape[1]

    def refine(self, proto: torch.Tensor, belief: torch.Tensor, q: nn.Module) -> torch.Tensor:
        """(B, k*d) unit targets, (B, H) critic beliefs, a Q head -> (B, k*d) unit actions of items."""
        b, k, d = proto.shape[0], self.slate_size, self.items.shape[1]
        target = self.low + (proto.reshape(b, k, d) + 1.0) * 0.5 * (self.high - self.low)
        return greedy_item_choice(target, self.items, self.unit_items, self.k_neighbours, belief, q).reshape(b, k * d)


# --------------------------------------------------------------- algorithm
class EpisodeSAC:
    """SAC over whole-episode replay with GRU beliefs (see the module docstring).

    :param num_items, slate_size, episode_length, action_dim: the problem's sizes.
    :param actor_items, critic_items: initial item tables of the two beliefs (None: scratch).
    :param batch_size: episodes per gradient step (paper 20).
    :param buffer_size: episodes kept (paper 10,000).
    :param warmup_episodes: episodes of uniform random actions first (paper 2,000).
    :param gradient_steps: gradient steps per collected episode (paper 1).
    :param wolpertinger_items: (N, d) item table of SAC+WkNN's per-rank targets (None: act with
        the actor's action as it is); the env must map unit actions to the table's box
        (:class:`~sb3_slate.agents.NearestItemPerRank` with ``unit=True``).
    :param k_neighbours: candidate items per rank (SAC+WkNN).
    """

    recurrent = True

    def __init__(
        self,
        num_items: int,
        slate_size: int,
        episode_length: int,
        action_dim: int,
        actor_items: Optional[np.ndarray] = None,
        critic_items: Optional[np.ndarray] = None,
        embedding_dim: int = 20,
        belief_size: int = 20,
        freeze_items: bool = False,
        net_arch: Optional[list[int]] = None,
        gamma: float = 0.8,
        tau: float = 0.002,
        learning_rate: float = 1e-3,
        actor_learning_rate: float = 3e-3,
        ent_coef: Union[str, float] = "auto",
        target_entropy: Union[str, float] = "auto",
        batch_size: int = 20,
        buffer_size: int = 10_000,
        warmup_episodes: int = 2_000,
        gradient_steps: float = 1.0,
        wolpertinger_items: Optional[np.ndarray] = None,
        k_neighbours: int = 10,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.kwargs = dict(
            num_items=num_items, slate_size=slate_size, episode_length=episode_length, action_dim=action_dim,
            embedding_dim=embedding_dim, belief_size=belief_size, freeze_items=freeze_items,
            net_arch=list(net_arch or [256]), gamma=gamma, tau=tau, learning_rate=learning_rate,
            actor_learning_rate=actor_learning_rate, ent_coef=ent_coef, target_entropy=target_entropy,
            batch_size=batch_size, buffer_size=buffer_size, warmup_episodes=warmup_episodes,
            gradient_steps=gradient_steps, wolpertinger=wolpertinger_items is not None, k_neighbours=int(k_neighbours),
            seed=seed, device=device,
        )
        self.num_items, self.slate_size, self.T, self.action_dim = num_items, slate_size, episode_length, action_dim
        self.gamma, self.tau = float(gamma), float(tau)
        self.batch_size, self.warmup_episodes = int(batch_size), int(warmup_episodes)
        self.gradient_steps = float(gradient_steps)
        self.device = torch.device(device)
        self.seed = int(seed)
        torch.manual_seed(self.seed)
        arch = self.kwargs["net_arch"]
        beliefs = [SlateBelief(num_items, slate_size, table, embedding_dim, belief_size, freeze_items)
                   for table in (actor_items, critic_items)]
        self.actor = SquashedGaussianActor(beliefs[0], belief_size, action_dim, arch).to(self.device)
        self.critic_belief = beliefs[1].to(self.device)
        self.critic = TwinQ(belief_size, action_dim, arch).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=actor_learning_rate)
        self.critic_optimizer = torch.optim.Adam([*self.critic_belief.parameters(), *self.critic.parameters()],
                                                 lr=learning_rate)
        self.target_entropy = float(-action_dim if target_entropy == "auto" else target_entropy)
        if isinstance(ent_coef, str) and ent_coef.startswith("auto"):
            init = float(ent_coef.split("_")[1]) if "_" in ent_coef else 1.0
            self.log_alpha = torch.tensor(math.log(init), requires_grad=True, device=self.device)
            self.alpha_optimizer: Optional[torch.optim.Optimizer] = torch.optim.Adam([self.log_alpha], lr=learning_rate)
        else:
            self.log_alpha = torch.tensor(math.log(float(ent_coef)), device=self.device)
            self.alpha_optimizer = None
        self.refiner: Optional[WolpertingerRefiner] = None
        if wolpertinger_items is not None:
            self.refiner = WolpertingerRefiner(wolpertinger_items, slate_size, k_neighbours).to(self.device)
            if self.refiner.action_dim != action_dim:
                raise ValueError(f"wolpertinger_items of shape {tuple(self.refiner.items.shape)} give {slate_size} ranks x "
                                 f"{self.refiner.items.shape[1]} = {self.refiner.action_dim} action values, not {action_dim}")
        self.replay_buffer = EpisodeReplayBuffer(buffer_size, episode_length, slate_size, action_dim, num_items)
        self.rng = np.random.default_rng(self.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.num_timesteps = 0
        self.episodes_done = 0
        self.n_updates = 0
        #: seconds spent acting in the env (collect) and in gradient steps (train), over the run
        self.seconds = {"collect": 0.0, "train": 0.0}
        self.logger: Any = None
        self.env: Any = None
        self.first_user_seed: Callable[[int], int] = lambda episodes: episodes

    # ------------------------------------------------------------- plumbing
    def set_logger(self, logger: Any) -> None:
        self.logger = logger

    def get_env(self) -> Any:
        return self.env

    def set_env(self, env: Any, first_user_seed: Optional[Callable[[int], int]] = None) -> None:
        """``env``: a gymnasium vector env acting in ``[-1, 1]^A``; ``first_user_seed(episodes_done)``
        gives the seed of the first user of each new batch of episodes."""
        self.env = env
        if first_user_seed is not None:
            self.first_user_seed = first_user_seed

    def _obs_tensors(self, obs: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.as_tensor(np.asarray(obs["slate"]), dtype=torch.long, device=self.device),
                torch.as_tensor(np.asarray(obs["clicks"]), dtype=torch.float32, device=self.device))

    # --------------------------------------------------------------- acting
    def predict(self, obs: dict[str, np.ndarray], state: Optional[torch.Tensor] = None,
                episode_start: Optional[np.ndarray] = None, deterministic: bool = False) -> tuple[np.ndarray, torch.Tensor]:
        """Actions for a batch of users from their newest observation; ``state`` is the
        belief before it (None, or zeroed where ``episode_start``, at the first turn)."""
        slates, clicks = self._obs_tensors(obs)
        with torch.inference_mode():
            if state is not None and episode_start is not None:
                keep = torch.as_tensor(~np.asarray(episode_start, dtype=bool), dtype=torch.float32,
                                       device=self.device)[:, None]
                state = state * keep
            if self.refiner is None:
                h = self.actor.belief.step(slates, clicks, state)
                return self.actor.act(h, deterministic, self.generator).cpu().numpy(), h
            # SAC+WkNN: the state holds both beliefs, the critic's to refine the actor's targets
            ha = self.actor.belief.gru.hidden_size
            h_actor = self.actor.belief.step(slates, clicks, None if state is None else state[:, :ha])
            h_critic = self.critic_belief.step(slates, clicks, None if state is None else state[:, ha:])
            proto = self.actor.act(h_actor, deterministic, self.generator)
            action = self.refiner.refine(proto, h_critic, self.critic.q1)
        return action.cpu().numpy(), torch.cat([h_actor, h_critic], dim=1)

    # ------------------------------------------------------------- training
    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def train_step(self) -> dict[str, float]:
        """One gradient step on ``batch_size`` sampled episodes (every turn of each)."""
        batch = {k: v.to(self.device, non_blocking=True)
                 for k, v in self.replay_buffer.sample(self.batch_size, self.rng).items()}
        S, C = batch["slates"], batch["clicks"]
        A, R = batch["actions"], batch["rewards"]
        done = torch.zeros_like(R)
        done[:, -1] = 1.0  # the session ends after its last turn (termination, not truncation)
        # (B, T+1, H) each: both GRUs unrolled once, together, over every sampled episode
        b_actor, b_critic = unroll_pair(self.actor.belief, self.critic_belief, S, C)
        alpha = self.alpha
        # the policy head once over all T+1 beliefs: turns 1..T for the target, 0..T-1 for the actor loss
        mean, log_std = self.actor.distribution(b_actor)
        with torch.no_grad():
            a_next, logp_next = self.actor.sample_from(mean[:, 1:].detach(), log_std[:, 1:].detach(), self.generator)
            q1_t, q2_t = self.critic_target.values(b_critic[:, 1:].detach(), a_next)
            target = R + self.gamma * (1.0 - done) * (torch.min(q1_t, q2_t) - alpha * logp_next)
        q1, q2 = self.critic.values(b_critic[:, :-1], A)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        a_pi, logp = self.actor.sample_from(mean[:, :-1], log_std[:, :-1], self.generator)
        self.critic.requires_grad_(False)  # the actor's loss must not train the critic
        q1_pi, q2_pi = self.critic.values(b_critic[:, :-1].detach(), a_pi)
        self.critic.requires_grad_(True)
        actor_loss = (alpha * logp - torch.min(q1_pi, q2_pi)).mean()
        # The two losses touch disjoint parameters (the target and the actor's Q values
        # see detached beliefs), so one backward pass through the shared unroll gives
        # each optimiser exactly its own loss's gradients.
        self.critic_optimizer.zero_grad(set_to_none=True)
        self.actor_optimizer.zero_grad(set_to_none=True)
        (critic_loss + actor_loss).backward()
        self.critic_optimizer.step()
        self.actor_optimizer.step()
        metrics = {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "ent_coef": alpha.item(),
                   "entropy": -logp.detach().mean().item()}
        if not (math.isfinite(metrics["critic_loss"]) and math.isfinite(metrics["actor_loss"])):
            raise TrainingDiverged(f"training diverged at gradient step {self.n_updates + 1} (critic loss "
                                   f"{metrics['critic_loss']}, actor loss {metrics['actor_loss']}); lower the learning rate")
        if self.alpha_optimizer is not None:
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self.alpha_optimizer.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_optimizer.step()
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.mul_(1.0 - self.tau).add_(p, alpha=self.tau)
        self.n_updates += 1
        return metrics

    def learn(self, total_timesteps: int, callback: Any = None, reset_num_timesteps: bool = True,
              progress_bar: bool = False) -> "EpisodeSAC":
        """Collect and train for ``total_timesteps`` more turns (whole batches of ``n_envs`` episodes).

        ``callback`` is an SB3 ``BaseCallback``; it is called once per batch of
        episodes with ``infos`` holding each finished episode's ``"episode"`` record.
        """
        if self.env is None:
            raise ValueError("no environment: call set_env(env) before learn()")
        env, T, A = self.env, self.T, self.action_dim
        n = env.num_envs
        if reset_num_timesteps:
            self.num_timesteps = 0
        target = self.num_timesteps + int(total_timesteps)
        if callback is not None:
            callback.init_callback(self)
            callback.on_training_start(locals(), globals())
        updates_per_turn = self.gradient_steps * n / T
        owed = 0.0
        last_metrics: dict[str, float] = {}
        stop = False
        clock = time.perf_counter
        while self.num_timesteps < target and not stop:
            batch_start, train_s = clock(), 0.0
            obs, _ = env.reset(seed=self.first_user_seed(self.episodes_done))
            slates = np.empty((n, T + 1, self.slate_size), dtype=np.int64)
            clicks = np.empty((n, T + 1, self.slate_size), dtype=np.uint8)
            actions = np.empty((n, T, A), dtype=np.float32)
            rewards = np.empty((n, T), dtype=np.float32)
            bored, diversity = np.zeros(n), np.zeros(n)
            slates[:, 0], clicks[:, 0] = obs["slate"], obs["clicks"]
            warm = self.episodes_done < self.warmup_episodes
            state = None
            for t in range(T):
                if warm:
                    action = self.rng.uniform(-1.0, 1.0, size=(n, A)).astype(np.float32)
                else:
                    action, state = self.predict(obs, state, deterministic=False)
                    if not np.isfinite(action).all():
                        raise TrainingDiverged(f"training diverged at gradient step {self.n_updates} (the policy's "
                                               "actions are not finite); lower the learning rate")
                obs, reward, terminated, truncated, info = env.step(action)
                slates[:, t + 1], clicks[:, t + 1] = obs["slate"], obs["clicks"]
                actions[:, t], rewards[:, t] = action, reward
                if "bored" in info:
                    bored += np.asarray(info["bored"]).any(axis=1)
                if "diversity" in info:
                    diversity += np.asarray(info["diversity"])
                self.num_timesteps += n
                if len(self.replay_buffer) and self.episodes_done >= self.warmup_episodes:
                    owed += updates_per_turn
                    while owed >= 1.0:
                        step_start = clock()
                        last_metrics = self.train_step()
                        train_s += clock() - step_start
                        owed -= 1.0
            if not np.asarray(terminated).all():
                raise RuntimeError(f"episodes did not end after {T} turns (episode_length mismatch)")
            self.replay_buffer.add(slates, clicks, actions, rewards)
            self.episodes_done += n
            self.seconds["train"] += train_s
            self.seconds["collect"] += clock() - batch_start - train_s
            if self.logger is not None:
                for key, value in last_metrics.items():
                    self.logger.record(f"train/{key}", value)
                self.logger.record("train/n_updates", self.n_updates)
                for key, value in self.seconds.items():
                    self.logger.record(f"time/{key}_s", value)
            if callback is not None:
                returns = rewards.sum(axis=1)
                infos = [{"episode": {"r": float(returns[i]), "l": T, "clicks_per_turn": float(returns[i] / T),
                                      "boredom": float(bored[i] / T), "diversity": float(diversity[i] / T)}}
                         for i in range(n)]
                callback.update_locals({"infos": infos})
                stop = not callback.on_step()
        if callback is not None:
            callback.on_training_end()
        return self

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(), "critic_belief": self.critic_belief.state_dict(),
            "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(), "critic_optimizer": self.critic_optimizer.state_dict(),
            "alpha_optimizer": None if self.alpha_optimizer is None else self.alpha_optimizer.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "counters": torch.tensor([self.num_timesteps, self.episodes_done, self.n_updates], dtype=torch.int64),
            "rng": torch.from_numpy(np.frombuffer(json.dumps(self.rng.bit_generator.state).encode(), dtype=np.uint8).copy()),
            "generator": self.generator.get_state(),
            "seconds": torch.tensor([self.seconds["collect"], self.seconds["train"]], dtype=torch.float64),
            **({} if self.refiner is None else {"wolpertinger_items": self.refiner.items.cpu()}),
        }

    def save(self, path: Union[str, Path]) -> None:
        """A zip of ``config.json`` (constructor arguments) and ``state.pt`` (tensors only)."""
        buf = io.BytesIO()
        torch.save(self._state(), buf)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("format.txt", FORMAT)
            z.writestr("config.json", json.dumps(self.kwargs))
            z.writestr("state.pt", buf.getvalue())

    @classmethod
    def load(cls, path: Union[str, Path], env: Any = None, device: str = "cpu") -> "EpisodeSAC":
        try:
            with zipfile.ZipFile(path) as z:
                fmt = z.read("format.txt").decode()
                if fmt != FORMAT:
                    raise ValueError(f"format {fmt!r}, expected {FORMAT!r}")
                kwargs = json.loads(z.read("config.json"))
                state = torch.load(io.BytesIO(z.read("state.pt")), map_location="cpu", weights_only=True)
        except Exception as exc:  # damaged zip, foreign file, or objects weights_only refuses to unpickle
            raise ValueError(f"{path} is not a readable EpisodeSAC checkpoint ({type(exc).__name__}: {exc})") from exc
        kwargs["device"] = device
        if kwargs.pop("wolpertinger", False):
            if "wolpertinger_items" not in state:
                raise ValueError(f"{path} is not a readable EpisodeSAC checkpoint (its Wolpertinger item table is missing)")
            kwargs["wolpertinger_items"] = state["wolpertinger_items"].numpy()
        model = cls(**kwargs)
        model.actor.load_state_dict(state["actor"])
        model.critic_belief.load_state_dict(state["critic_belief"])
        model.critic.load_state_dict(state["critic"])
        model.critic_target.load_state_dict(state["critic_target"])
        model.actor_optimizer.load_state_dict(state["actor_optimizer"])
        model.critic_optimizer.load_state_dict(state["critic_optimizer"])
        with torch.no_grad():
            model.log_alpha.copy_(state["log_alpha"])
        if model.alpha_optimizer is not None and state["alpha_optimizer"] is not None:
            model.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        model.num_timesteps, model.episodes_done, model.n_updates = (int(x) for x in state["counters"])
        if "seconds" in state:  # not in checkpoints written before the timing existed
            model.seconds = dict(zip(("collect", "train"), (float(x) for x in state["seconds"])))
        model.rng.bit_generator.state = json.loads(bytes(state["rng"].numpy()).decode())
        if state["generator"].numel() == model.generator.get_state().numel():
            model.generator.set_state(state["generator"])
        # else: saved on another kind of device; the acting noise restarts from the seed
        if env is not None:
            model.set_env(env)
        return model

    def save_replay_buffer(self, path: Union[str, Path]) -> None:
        self.replay_buffer.save(path)

    def load_replay_buffer(self, path: Union[str, Path]) -> None:
        self.replay_buffer.load(path)
