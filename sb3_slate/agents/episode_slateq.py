"""SlateQ in the paper's regime (docs/method.md section 7; privileged): a GRU belief over the
whole history of (slate, clicks), item-wise Q-values, whole episodes replayed, random warm-up
episodes first.

The value of a slate decomposes over its items: ``Q(b, A) = sum_r P(click r | b, A) Q(b, A_r)``
with ``P(click r) = rel(A_r) * E_r`` (true relevance, divided by the diversity penalty when the
slate is crowded; examination ``E_r`` of rank ``r``). Acting shows the top-k items of
``rel(i) * Q(b_t, i)`` (best first); with probability epsilon a user gets ``k`` uniformly random
items instead, epsilon decaying exponentially with the episodes collected:
``eps = end + (start - end) exp(-episodes / decay)``.

Each gradient step takes ``batch_episodes`` whole episodes from the replay memory, unrolls the
belief over them (``b_0 .. b_T``), and regresses item values on ``y_t = 1 + gamma V(b_{t+1})``
(``V = 0`` after the last turn), ``V(b') = sum_r P(click r | b', A') Q_target(b', A'_r)`` with
``A'`` the top-k of ``rel' * Q(b')``. The switches (each the paper's reading, then the reference
code's):

- ``learn_from``: ``shown_clicks``: ``Q(b_t, i)`` for every item ``i`` clicked in the slate
  shown at turn ``t``; ``observed_first_click``: ``Q(b_t, i)`` for the first clicked item of
  *observation* ``t`` (the previous turn's slate, which ``b_t`` has already read);
- ``next_slate_by``: ``online``: ``A'`` ranked by the online network; ``target``: by the
  target network;
- ``relevance``: ``next_turn``: the true relevance of the next turn (boredom and short-term
  boost applied) for acting and targets; ``reference``: acting zeroes, for each bored topic
  ``c``, the user dimensions ``[s c, (s + 1) c)`` (``s`` the topic size: the reference
  simulator's slice, which hits other topics' dimensions), and targets use the user vector
  with no boredom at all;
- ``penalty_check``: ``per_slate``: a target slate's attractiveness is divided by the
  diversity penalty when that slate is crowded; ``whole_batch``: when the batch's target
  slates together hold ``diversity_threshold`` items of one topic (nearly always).

The relevance is privileged: :class:`PrivilegedUserState` adds the user vectors it needs to the
observation, and the replay memory keeps the target's (``d`` values per turn). The API follows
:class:`~sb3_slate.agents.EpisodeSAC` (own collection loop; ``predict(obs, state,
episode_start, deterministic) -> (slates, beliefs)``; a zip checkpoint read weights-only).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space

from gym_slaterec.policies import simulator_of
from gym_slaterec.provenance import TrainingDiverged

from ..agent_configs import SLATEQ_SWITCHES
from .episode_loop import (
    OwnLoopPlumbing, loop_state, read_zip_checkpoint, replay_learn, reset_where, restore_counters,
    write_zip_checkpoint,
)
from .episode_sac.buffer import EpisodeReplayBuffer
from .episode_sac.policies import MLP, SlateBelief
from .slateq import ObservationAdder

FORMAT = "slaterec.episode_slateq/1"


def reference_bored_mask(num_topics: int, topic_size: int) -> np.ndarray:
    """(K, d) bool: the user dimensions the reference simulator's relevance zeroes for a bored
    topic ``c``, ``[topic_size * c, (topic_size + 1) * c)``."""
    d = np.arange(num_topics * topic_size)
    c = np.arange(num_topics)[:, None]
    return (d >= topic_size * c) & (d < (topic_size + 1) * c)


class PrivilegedUserState(ObservationAdder):
    """Adds the user vectors of the next turn's relevance to a dict observation (SlateQ).

    ``act_user`` (b, d) float32: the vector acting scores items with; ``target_user``: the one
    the replay memory keeps for the targets. ``relevance="next_turn"``: both are the user vector
    the next turn uses (boredom and short-term boost applied); ``"reference"``: ``act_user`` with
    the reference simulator's boredom slice, ``target_user`` the user vector without boredom.
    """

    def __init__(self, env: VectorEnv, relevance: str = "next_turn") -> None:
        super().__init__(env)
        if relevance not in SLATEQ_SWITCHES["relevance"]:
            raise ValueError(f"relevance must be one of {', '.join(SLATEQ_SWITCHES['relevance'])}, got {relevance!r}")
        self.sim = simulator_of(env)
        self.relevance = relevance
        base = env.single_observation_space
        if not isinstance(base, spaces.Dict):
            raise ValueError("PrivilegedUserState expects a dict observation")
        d = self.sim.dim
        user = spaces.Box(-np.inf, np.inf, (d,), dtype=np.float32)
        self.single_observation_space = spaces.Dict({**base.spaces, "act_user": user, "target_user": user})
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        cfg = self.sim.config
        self._mask = reference_bored_mask(self.sim.num_topics, cfg.topic_size)

    def _add(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sim = self.sim
        if self.relevance == "next_turn":
            act = target = sim.next_effective_user().astype(np.float32)
        else:
            cfg = sim.config
            zero = (sim.bored.astype(np.float64) @ self._mask.astype(np.float64)) > 0  # (b, d)
            act = np.where(zero, 0.0, sim.user)
            if cfg.short_term_boost != 1.0:
                boost = self._mask[sim.short_term]  # the same slice for the short-term topic
                act = np.where(boost, act * cfg.short_term_boost, act)
            act, target = act.astype(np.float32), sim.user.astype(np.float32)
        return {**obs, "act_user": act, "target_user": target}


class ClickModel(torch.nn.Module):
    """The simulator's relevance and click probabilities of slates, from user vectors."""

    def __init__(self, items: np.ndarray, item_topics: np.ndarray, examination: np.ndarray, offset: float,
                 slope: float, max_score: float, diversity_penalty: float, diversity_threshold: int) -> None:
        super().__init__()
        self.register_buffer("items_t", torch.as_tensor(np.asarray(items, dtype=np.float32).T.copy()))
        self.register_buffer("item_topics", torch.as_tensor(np.asarray(item_topics, dtype=np.int64)))
        self.register_buffer("examination", torch.as_tensor(np.asarray(examination, dtype=np.float32)))
        self.offset, self.slope, self.max_score = float(offset), float(slope), float(max_score)
        self.penalty, self.threshold = float(diversity_penalty), int(diversity_threshold)
        self.num_topics = int(self.item_topics.max()) + 1

    def relevance(self, users: torch.Tensor) -> torch.Tensor:
        """(..., d) user vectors -> (..., N) attractiveness of every item (no gradient)."""
        with torch.no_grad():  # in place: a step's (B, T, N) block is written once, not four times
            x = users @ self.items_t
            return x.div_(self.max_score).sub_(self.offset).mul_(self.slope).sigmoid_()

    def click_probs(self, rel: torch.Tensor, slates: torch.Tensor, whole_batch: bool = False) -> torch.Tensor:
        """P(click r) of (..., k) slates whose items have attractiveness ``rel`` (..., k)."""
        if self.penalty != 1.0:
            topics = self.item_topics[slates]
            counts = torch.nn.functional.one_hot(topics, self.num_topics).sum(dim=-2)  # (..., K)
            if whole_batch:
                crowded = counts.reshape(-1, self.num_topics).sum(dim=0).max() >= self.threshold
                crowded = crowded.expand(slates.shape[:-1])
            else:
                crowded = counts.max(dim=-1).values >= self.threshold
            rel = torch.where(crowded[..., None], rel / self.penalty, rel)
        return rel * self.examination


def head_hidden(head: MLP, x: torch.Tensor) -> torch.Tensor:
    """The activations of ``head``'s last hidden layer, (..., hidden)."""
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    for layer in list(head)[:-1]:
        x = layer(x)
    return x.view(*lead, -1)


def item_values(last: torch.nn.Linear, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The output layer's values of ``items`` (..., m) only: ``W[items] . hidden + b[items]``.

    Rows are gathered by ``index_select``: its backward is an ``index_add_``, where a gather
    through ``Tensor.__getitem__`` back-propagates by an accumulating ``index_put_`` (the same
    sums; forward and backward took 1.6x as long on a CPU for a step's 20,000 items)."""
    flat = items.reshape(-1)
    w = last.weight.index_select(0, flat).view(*items.shape, -1)  # (..., m, hidden)
    return (w @ hidden[..., None]).squeeze(-1) + last.bias.index_select(0, flat).view(items.shape)


def pair_values(last: torch.nn.Linear, hidden: torch.Tensor, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The output layer's value of item ``items[j]`` at hidden row ``rows[j]``, (n,): one value
    per (row, item) pair, ``hidden`` (R, hidden)."""
    w = last.weight.index_select(0, items)
    return (w * hidden.index_select(0, rows)).sum(dim=1) + last.bias.index_select(0, items)


class EpisodeSlateQ(OwnLoopPlumbing):
    """SlateQ over whole-episode replay with a GRU belief (see the module docstring)."""

    recurrent = True

    def __init__(self, num_items: int, slate_size: int, episode_length: int, items: np.ndarray,
                 item_topics: np.ndarray, examination: np.ndarray, offset: float, slope: float, max_score: float,
                 diversity_penalty: float = 1.0, diversity_threshold: int = 4, item_table: Optional[np.ndarray] = None,
                 embedding_dim: int = 20, belief_size: int = 20, freeze_items: bool = False,
                 scratch_std: Optional[float] = None, net_arch: Optional[list[int]] = None, gamma: float = 0.8,
                 tau: float = 0.002, learning_rate: float = 1e-3, batch_episodes: int = 20,
                 buffer_episodes: int = 10_000, warmup_episodes: int = 2_000, updates_per_episode: float = 1.0,
                 epsilon_start: float = 1.0, epsilon_end: float = 0.01, epsilon_decay_episodes: float = 1_000.0,
                 learn_from: str = "shown_clicks", next_slate_by: str = "online", relevance: str = "next_turn",
                 penalty_check: str = "per_slate", seed: int = 0, device: str = "cpu") -> None:
        for name, value in (("learn_from", learn_from), ("next_slate_by", next_slate_by), ("relevance", relevance),
                            ("penalty_check", penalty_check)):
            if value not in SLATEQ_SWITCHES[name]:
                raise ValueError(f"{name} must be one of {', '.join(SLATEQ_SWITCHES[name])}, got {value!r}")
        self.kwargs = dict(
            num_items=num_items, slate_size=slate_size, episode_length=episode_length,
            examination=[float(x) for x in np.asarray(examination)], offset=float(offset), slope=float(slope),
            max_score=float(max_score), diversity_penalty=float(diversity_penalty),
            diversity_threshold=int(diversity_threshold), embedding_dim=embedding_dim, belief_size=belief_size,
            freeze_items=freeze_items, scratch_std=scratch_std, net_arch=list(net_arch or [256]), gamma=gamma, tau=tau,
            learning_rate=learning_rate, batch_episodes=batch_episodes, buffer_episodes=buffer_episodes,
            warmup_episodes=warmup_episodes, updates_per_episode=updates_per_episode, epsilon_start=epsilon_start,
            epsilon_end=epsilon_end, epsilon_decay_episodes=epsilon_decay_episodes, learn_from=learn_from,
            next_slate_by=next_slate_by, relevance=relevance, penalty_check=penalty_check, seed=seed, device=device)
        self.num_items, self.slate_size, self.T = int(num_items), int(slate_size), int(episode_length)
        self.gamma, self.tau = float(gamma), float(tau)
        self.batch_episodes, self.warmup_episodes = int(batch_episodes), int(warmup_episodes)
        self.gradient_steps = float(updates_per_episode)
        self.eps = (float(epsilon_start), float(epsilon_end), float(epsilon_decay_episodes))
        self.learn_from, self.next_slate_by, self.penalty_check = learn_from, next_slate_by, penalty_check
        self.device = torch.device(device)
        self.seed = int(seed)
        torch.manual_seed(self.seed)
        self.clicks_model = ClickModel(items, item_topics, examination, offset, slope, max_score, diversity_penalty,
                                       diversity_threshold).to(self.device)
        user_dim = int(np.asarray(items).shape[1])
        self.belief = SlateBelief(num_items, slate_size, item_table, embedding_dim, belief_size, freeze_items,
                                  scratch_std).to(self.device)
        self.q_head = MLP(belief_size, self.kwargs["net_arch"], num_items).to(self.device)
        self.q_target = copy.deepcopy(self.q_head).requires_grad_(False)
        self.optimizer = torch.optim.Adam([*self.belief.parameters(), *self.q_head.parameters()], lr=learning_rate)
        # per turn, the user vector of the next belief's relevance (stored as the memory's "actions")
        self.replay_buffer = EpisodeReplayBuffer(buffer_episodes, episode_length, slate_size, user_dim, num_items)
        self.rng = np.random.default_rng(self.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.num_timesteps = self.episodes_done = self.n_updates = 0
        self.seconds = {"collect": 0.0, "train": 0.0}

    @property
    def epsilon(self) -> float:
        """Exploration rate after ``episodes_done`` collected episodes (warm-up included)."""
        start, end, decay = self.eps
        return end + (start - end) * math.exp(-self.episodes_done / decay)

    # --------------------------------------------------------------- acting
    def greedy(self, q: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """Top-k of rel * Q, best first."""
        return (rel * q).topk(self.slate_size, dim=-1).indices

    def predict(self, obs: dict[str, np.ndarray], state: Optional[torch.Tensor] = None,
                episode_start: Optional[np.ndarray] = None, deterministic: bool = False) -> tuple[np.ndarray, torch.Tensor]:
        """Slates (n, k) of item ids for the newest observations; ``state``: the beliefs before them.
        Not deterministic: each user's slate is uniformly random with probability :attr:`epsilon`."""
        slates = torch.as_tensor(np.asarray(obs["slate"]), dtype=torch.long, device=self.device)
        clicks = torch.as_tensor(np.asarray(obs["clicks"]), dtype=torch.float32, device=self.device)
        users = torch.as_tensor(np.asarray(obs["act_user"]), dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            h = self.belief.step(slates, clicks, reset_where(state, episode_start))
            ids = self.greedy(self.q_head(h), self.clicks_model.relevance(users)).cpu().numpy()
        if not deterministic:
            explore = self.rng.random(len(ids)) < self.epsilon
            if explore.any():
                ids[explore] = self.rng.integers(0, self.num_items, size=(int(explore.sum()), self.slate_size))
        return ids, h

    # ------------------------------------------------------------- training
    def train_step(self) -> dict[str, float]:
        """One gradient step on ``batch_episodes`` sampled whole episodes."""
        S, C, U, _ = self.replay_buffer.sample(self.batch_episodes, self.rng).to(self.device)
        loss = self.loss(S, C, U)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        value_loss = float(loss.detach())
        if not math.isfinite(value_loss):
            raise TrainingDiverged(f"training diverged at gradient step {self.n_updates + 1} (loss {value_loss}); "
                                   "lower the learning rate")
        with torch.no_grad():
            for p, tp in zip(self.q_head.parameters(), self.q_target.parameters()):
                tp.mul_(1.0 - self.tau).add_(p, alpha=self.tau)
        self.n_updates += 1
        return {"loss": value_loss, "epsilon": self.epsilon}

    def loss(self, S: torch.Tensor, C: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        """The mean squared error of the regressed item values on whole episodes: slates and
        clicks (B, T+1, k) observations, U (B, T, d) the user vector after each turn's step."""
        b = self.belief.unroll(S, C)
        # the head's last hidden layer once over b_0..b_T; the item values of the loss are only
        # the regressed items' (a backward through all N outputs would cost most of the step)
        hidden = head_hidden(self.q_head, b)
        last = self.q_head[-1]
        with torch.no_grad():  # y_t = 1 + gamma V(b_{t+1}), t = 0..T-1
            rel = self.clicks_model.relevance(U)  # (B, T, N)
            nxt = b[:, 1:].detach()
            if self.next_slate_by == "target":
                q_rank = self.q_target(nxt)
                chosen = self.greedy(q_rank, rel)
                q_next = q_rank.gather(2, chosen)
            else:
                chosen = self.greedy(last(hidden[:, 1:].detach()), rel)
                q_next = item_values(self.q_target[-1], head_hidden(self.q_target, nxt), chosen)
            probs = self.clicks_model.click_probs(rel.gather(2, chosen), chosen, self.penalty_check == "whole_batch")
            value = (probs * q_next).sum(dim=2)
            value[:, -1] = 0.0  # the session ends after its last turn
            y = 1.0 + self.gamma * value
        # only the regressed (turn, item) pairs are computed: the other items have no loss
        B, T1, k = S.shape
        if self.learn_from == "shown_clicks":  # every item clicked in the slate shown at turn t
            shown = S[:, 1:]
            pos = (C[:, 1:].reshape(-1) > 0).nonzero().squeeze(1)  # into (B, T, k)
            turn = pos // k
        else:  # the reference's: the first clicked item of observation t
            shown = S[:, :-1]
            clicked = C[:, :-1] > 0
            turn = clicked.any(dim=2).reshape(-1).nonzero().squeeze(1)  # into (B, T)
            pos = turn * k + clicked.float().argmax(dim=2).reshape(-1).index_select(0, turn)
        items = shown.reshape(-1).index_select(0, pos)
        rows = turn + turn // (T1 - 1)  # b_t of episode e is row e (T + 1) + t of the hidden layer
        q = pair_values(last, hidden.reshape(B * T1, -1), rows, items)
        return ((q - y.reshape(-1).index_select(0, turn)) ** 2).sum() / max(len(turn), 1)

    def learn(self, total_timesteps: int, callback: Any = None, reset_num_timesteps: bool = True,
              progress_bar: bool = False) -> "EpisodeSlateQ":
        """Collect ``n_envs`` episodes at a time; their updates are spread over the turns."""
        return replay_learn(self, total_timesteps, callback, reset_num_timesteps, self.collect_action,
                            lambda obs, action: obs["target_user"])

    def collect_action(self, obs: dict[str, np.ndarray], state: Optional[torch.Tensor],
                       warm: bool) -> tuple[np.ndarray, Optional[torch.Tensor]]:
        """Random item slates during warm-up, else the epsilon-greedy policy's."""
        if warm:
            return self.rng.integers(0, self.num_items, size=(len(obs["slate"]), self.slate_size)), state
        return self.predict(obs, state)

    # ------------------------------------------------------------ save/load
    def save(self, path: Union[str, Path]) -> None:
        """A zip of ``config.json`` (constructor arguments) and ``state.pt`` (tensors only)."""
        write_zip_checkpoint(path, FORMAT, self.kwargs, {
            "click_model": self.clicks_model.state_dict(), "belief": self.belief.state_dict(),
            "q_head": self.q_head.state_dict(), "q_target": self.q_target.state_dict(),
            "optimizer": self.optimizer.state_dict(), **loop_state(self)})

    @classmethod
    def load(cls, path: Union[str, Path], env: Any = None, device: str = "cpu") -> "EpisodeSlateQ":
        """The model of checkpoint ``path`` (read weights-only), acting on ``env`` when given."""
        kwargs, state = read_zip_checkpoint(path, FORMAT, "EpisodeSlateQ")
        cm = state["click_model"]
        kwargs.update(device=device, items=cm["items_t"].numpy().T, item_topics=cm["item_topics"].numpy())
        model = cls(**kwargs)
        model.clicks_model.load_state_dict(cm)
        model.belief.load_state_dict(state["belief"])
        model.q_head.load_state_dict(state["q_head"])
        model.q_target.load_state_dict(state["q_target"])
        model.optimizer.load_state_dict(state["optimizer"])
        restore_counters(model, state)
        if env is not None:
            model.set_env(env)
        return model

    def save_replay_buffer(self, path: Union[str, Path]) -> None:
        self.replay_buffer.save(path)

    def load_replay_buffer(self, path: Union[str, Path]) -> None:
        self.replay_buffer.load(path)
