"""The episode-replay recurrent SAC algorithm (the module docstring of
:mod:`sb3_slate.agents.episode_sac` describes what it computes)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.nn import functional as F

from gym_slaterec.provenance import TrainingDiverged

from ..episode_loop import OwnLoopPlumbing, replay_learn, reset_where
from . import checkpoint
from .buffer import EpisodeReplayBuffer
from .policies import SlateBelief, SquashedGaussianActor, TwinQ, WolpertingerRefiner, unroll_pair


#: the entropy coefficient's losses: SAC's (on log alpha), the reference code's (on alpha)
ALPHA_LOSSES = ("log_alpha", "alpha")
#: the reference code's alpha at its first gradient step (its configured ``alpha``)
REFERENCE_FIRST_ALPHA = 0.2


class EpisodeSAC(OwnLoopPlumbing):
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
    :param scratch_std: standard deviation of scratch item tables (None: 1/sqrt(embedding_dim);
        the reference code's are N(0, 1)).
    :param alpha_loss: the entropy coefficient's loss: ``log_alpha`` (SAC's, on log alpha) or
        ``alpha`` (the reference code's: on alpha itself, and alpha 0.2 at the first step).
    :param warmup_scale: warm-up actions are uniform in ``[-warmup_scale, warmup_scale]^A``
        (1: the whole box; the reference code's 0.5: its middle half).
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
        scratch_std: Optional[float] = None,
        alpha_loss: str = "log_alpha",
        warmup_scale: float = 1.0,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        if alpha_loss not in ALPHA_LOSSES:
            raise ValueError(f"alpha_loss must be one of {', '.join(ALPHA_LOSSES)}, got {alpha_loss!r}")
        self.kwargs = dict(
            num_items=num_items, slate_size=slate_size, episode_length=episode_length, action_dim=action_dim,
            embedding_dim=embedding_dim, belief_size=belief_size, freeze_items=freeze_items,
            net_arch=list(net_arch or [256]), gamma=gamma, tau=tau, learning_rate=learning_rate,
            actor_learning_rate=actor_learning_rate, ent_coef=ent_coef, target_entropy=target_entropy,
            batch_size=batch_size, buffer_size=buffer_size, warmup_episodes=warmup_episodes,
            gradient_steps=gradient_steps, wolpertinger=wolpertinger_items is not None, k_neighbours=int(k_neighbours),
            scratch_std=scratch_std, alpha_loss=alpha_loss, warmup_scale=warmup_scale, seed=seed, device=device,
        )
        self.alpha_loss = alpha_loss
        if not 0 < float(warmup_scale) <= 1:
            raise ValueError(f"warmup_scale must be in (0, 1], got {warmup_scale!r}")
        self.warmup_scale = float(warmup_scale)
        self.num_items, self.slate_size, self.T, self.action_dim = num_items, slate_size, episode_length, action_dim
        self.gamma, self.tau = float(gamma), float(tau)
        self.batch_size, self.warmup_episodes = int(batch_size), int(warmup_episodes)
        self.gradient_steps = float(gradient_steps)
        self.device = torch.device(device)
        self.seed = int(seed)
        torch.manual_seed(self.seed)
        arch = self.kwargs["net_arch"]
        beliefs = [SlateBelief(num_items, slate_size, table, embedding_dim, belief_size, freeze_items, scratch_std)
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
            state = reset_where(state, episode_start)
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

    def collect_action(self, obs: dict[str, np.ndarray], state: Optional[torch.Tensor],
                       warm: bool) -> tuple[np.ndarray, Optional[torch.Tensor]]:
        """The env action of a collection turn: uniform in ``[-s, s]^A`` (``s = warmup_scale``)
        during warm-up, else sampled from the policy."""
        if warm:
            n = len(obs["slate"])
            s = self.warmup_scale
            return self.rng.uniform(-s, s, size=(n, self.action_dim)).astype(np.float32), state
        action, state = self.predict(obs, state, deterministic=False)
        if not np.isfinite(action).all():
            raise TrainingDiverged(f"training diverged at gradient step {self.n_updates} (the policy's "
                                   "actions are not finite); lower the learning rate")
        return action, state

    def stored_action(self, action: np.ndarray) -> np.ndarray:
        """What the replay memory keeps of an env action ((n, A) values)."""
        return action

    # ------------------------------------------------------------- training
    @property
    def alpha(self) -> torch.Tensor:
        if self.alpha_loss == "alpha" and self.alpha_optimizer is not None and self.n_updates == 0:
            return torch.tensor(REFERENCE_FIRST_ALPHA, device=self.device)
        return self.log_alpha.detach().exp()

    def train_step(self) -> dict[str, float]:
        """One gradient step on ``batch_size`` sampled episodes (every turn of each)."""
        S, C, A, R = self.replay_buffer.sample(self.batch_size, self.rng).to(self.device)
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
        return self.apply_losses(critic_loss, actor_loss, logp, alpha)

    def apply_losses(self, critic_loss: torch.Tensor, actor_loss: torch.Tensor, logp: torch.Tensor,
                     alpha: torch.Tensor) -> dict[str, float]:
        """Step both optimisers on their losses, check them, and :meth:`finish_update`."""
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
        self.finish_update(logp)
        return metrics

    def finish_update(self, logp: torch.Tensor) -> None:
        """The end of a gradient step after the actor and critic updates: the entropy coefficient
        towards the target entropy (``logp``: the policy's log-probabilities of the step), the
        Polyak-averaged target critic, the update count."""
        if self.alpha_optimizer is not None:
            coef = self.log_alpha if self.alpha_loss == "log_alpha" else self.log_alpha.exp()
            alpha_loss = -(coef * (logp.detach() + self.target_entropy)).mean()
            self.alpha_optimizer.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_optimizer.step()
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.mul_(1.0 - self.tau).add_(p, alpha=self.tau)
        self.n_updates += 1

    def learn(self, total_timesteps: int, callback: Any = None, reset_num_timesteps: bool = True,
              progress_bar: bool = False) -> "EpisodeSAC":
        """Collect and train for ``total_timesteps`` more turns (whole batches of ``n_envs`` episodes).

        ``callback`` is an SB3 ``BaseCallback``; it is called once per batch of
        episodes with ``infos`` holding each finished episode's ``"episode"`` record.
        """
        return replay_learn(self, total_timesteps, callback, reset_num_timesteps, self.collect_action,
                            lambda obs, action: self.stored_action(action))

    # ------------------------------------------------------------ save/load
    def save(self, path: Union[str, Path]) -> None:
        """A zip of ``config.json`` (constructor arguments) and ``state.pt`` (tensors only)."""
        checkpoint.save(self, path)

    @classmethod
    def load(cls, path: Union[str, Path], env: Any = None, device: str = "cpu") -> "EpisodeSAC":
        """The model of checkpoint ``path`` (read weights-only), acting on ``env`` when given."""
        return checkpoint.load(cls, path, env, device)

    def save_replay_buffer(self, path: Union[str, Path]) -> None:
        self.replay_buffer.save(path)

    def load_replay_buffer(self, path: Union[str, Path]) -> None:
        self.replay_buffer.load(path)
