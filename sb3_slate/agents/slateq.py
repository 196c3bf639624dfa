"""SlateQ (docs/method.md section 7; privileged): item-wise Q-values combined with the true click model.

The value of a slate decomposes over its items: ``Q(s, A) = sum_r P(click r | s, A) Q(s, A_r)``
with ``P(click r) = rel(A_r) * E_r`` (true relevance, divided by the diversity penalty when the
slate is crowded; examination of rank r). The
policy shows the top-k items of ``rel(i) * Q(s, i)`` (best first), which
maximises that sum for a decreasing examination. Learning is Q-learning on the
clicked items: ``Q(s, i) <- 1 + gamma * V(s')`` with ``V(s')`` the decomposed value
of the slate the policy would show in ``s'`` (top-k by the online network, value by
the target network).

Privileged: :class:`PrivilegedRelevance` adds the true relevance of every item for
the next turn to the observation (read from ``env.unwrapped.simulator``).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import LinearSchedule, polyak_update
from torch import nn
from torch.nn import functional as F

from gym_slaterec.core.simulator import sigmoid
from gym_slaterec.policies import simulator_of


def true_relevance(sim: Any) -> np.ndarray:
    """Attractiveness of every item for every user at the next turn, (b, N)."""
    cfg = sim.config
    scores = sim.next_item_scores() / sim.max_score
    return sigmoid((scores - cfg.offset) * cfg.slope)


class ObservationAdder(VectorWrapper):
    """A vector-env wrapper whose observations are the env's with entries added by ``_add``."""

    def _add(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        return self._add(obs), info

    def step(self, actions: Any):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        return self._add(obs), reward, terminated, truncated, info


class PrivilegedRelevance(ObservationAdder):
    """Adds ``relevance`` (b, N) float16, the true next-turn relevance of every item, to a dict observation."""

    def __init__(self, env: VectorEnv) -> None:
        super().__init__(env)
        self.sim = simulator_of(env)
        base = env.single_observation_space
        if not isinstance(base, spaces.Dict):
            raise ValueError("PrivilegedRelevance expects a dict observation (wrap a history window first)")
        self.single_observation_space = spaces.Dict(
            {**base.spaces, "relevance": spaces.Box(0.0, 1.0, (self.sim.num_items,), dtype=np.float16)}
        )
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

    def _add(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**obs, "relevance": true_relevance(self.sim).astype(np.float16)}


class _ItemQ(nn.Module):
    def __init__(self, extractor: BaseFeaturesExtractor, net_arch: list[int], num_items: int) -> None:
        super().__init__()
        self.features_extractor = extractor
        layers: list[nn.Module] = []
        dim = extractor.features_dim
        for h in net_arch:
            layers += [nn.Linear(dim, h), nn.ReLU()]
            dim = h
        layers.append(nn.Linear(dim, num_items))
        self.head = nn.Sequential(*layers)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.features_extractor(obs))


class SlateQPolicy(BasePolicy):
    """Item-wise Q network (belief -> N values) and its target; slates by top-k of rel * Q."""

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.MultiDiscrete,
        lr_schedule: Schedule,
        examination: Optional[np.ndarray] = None,
        item_topics: Optional[np.ndarray] = None,
        diversity_penalty: float = 1.0,
        diversity_threshold: int = 4,
        net_arch: Optional[list[int]] = None,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: Optional[dict[str, Any]] = None,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: Optional[dict[str, Any]] = None,
        **_: Any,
    ) -> None:
        super().__init__(observation_space, action_space, features_extractor_class, features_extractor_kwargs,
                         optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs)
        if "relevance" not in observation_space.spaces:
            raise ValueError("SlateQ needs the privileged 'relevance' observation (PrivilegedRelevance wrapper)")
        self.num_items = int(action_space.nvec[0])
        self.slate_size = int(action_space.shape[0])
        self.net_arch = list(net_arch if net_arch is not None else [256])
        exam = np.ones(self.slate_size) if examination is None else np.asarray(examination, dtype=np.float32)
        self.register_buffer("examination", torch.as_tensor(exam, dtype=torch.float32))
        # the click model's diversity penalty (not a buffer: checkpoints written before it load as they are)
        self.item_topics = None if item_topics is None else torch.as_tensor(np.asarray(item_topics), dtype=torch.long)
        self.diversity_penalty, self.diversity_threshold = float(diversity_penalty), int(diversity_threshold)
        self.q_net = _ItemQ(self.make_features_extractor(), self.net_arch, self.num_items)
        self.q_net_target = _ItemQ(self.make_features_extractor(), self.net_arch, self.num_items)
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.train(False)
        self.optimizer = self.optimizer_class(self.q_net.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(examination=self.examination.cpu().numpy(), net_arch=self.net_arch,
                    item_topics=None if self.item_topics is None else self.item_topics.numpy(),
                    diversity_penalty=self.diversity_penalty, diversity_threshold=self.diversity_threshold,
                    features_extractor_class=self.features_extractor_class,
                    features_extractor_kwargs=self.features_extractor_kwargs)
        return data

    def select(self, q: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """Top-k of rel * Q, best first."""
        return (relevance.float() * q).topk(self.slate_size, dim=1).indices

    def click_probs(self, rel: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        """P(click r) of (b, k) slates whose items have attractiveness ``rel`` (b, k): divided by the
        diversity penalty where a slate is crowded, times the examination of each rank."""
        if self.diversity_penalty != 1.0 and self.item_topics is not None:
            topics = self.item_topics.to(slates.device)[slates]
            counts = F.one_hot(topics, int(self.item_topics.max()) + 1).sum(dim=1)
            crowded = counts.max(dim=1).values >= self.diversity_threshold
            rel = torch.where(crowded[:, None], rel / self.diversity_penalty, rel)
        return rel * self.examination

    def _predict(self, observation: Any, deterministic: bool = True) -> torch.Tensor:
        return self.select(self.q_net(observation), observation["relevance"])

    def set_training_mode(self, mode: bool) -> None:
        self.q_net.train(mode)
        self.training = mode


class SlateQ(OffPolicyAlgorithm):
    """SlateQ with epsilon-greedy exploration (a random slate with probability epsilon)."""

    policy_aliases = {"MultiInputPolicy": SlateQPolicy, "SlateQPolicy": SlateQPolicy}

    def __init__(
        self,
        policy: Any,
        env: Any,
        learning_rate: float = 1e-3,
        buffer_size: int = 50_000,
        learning_starts: int = 1000,
        batch_size: int = 64,
        tau: float = 0.005,
        gamma: float = 0.8,
        train_freq: int = 1,
        gradient_steps: int = 1,
        exploration_fraction: float = 0.2,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.05,
        policy_kwargs: Optional[dict[str, Any]] = None,
        tensorboard_log: Optional[str] = None,
        verbose: int = 0,
        seed: Optional[int] = None,
        device: str = "cpu",
        _init_setup_model: bool = True,
    ) -> None:
        super().__init__(
            policy, env, learning_rate, buffer_size, learning_starts, batch_size, tau, gamma, train_freq,
            gradient_steps, policy_kwargs=policy_kwargs, tensorboard_log=tensorboard_log, verbose=verbose,
            device=device, support_multi_env=True, monitor_wrapper=False, seed=seed, sde_support=False,
            supported_action_spaces=(spaces.MultiDiscrete,),
        )
        self.exploration_fraction = exploration_fraction
        self.exploration_initial_eps = exploration_initial_eps
        self.exploration_final_eps = exploration_final_eps
        self.exploration_rate = exploration_initial_eps
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self.exploration_schedule = LinearSchedule(
            self.exploration_initial_eps, self.exploration_final_eps, self.exploration_fraction
        )
        self._explore_rng = np.random.default_rng(self.seed)

    def _on_step(self) -> None:
        self.exploration_rate = self.exploration_schedule(self._current_progress_remaining)
        self.logger.record("rollout/exploration_rate", self.exploration_rate)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False):
        action, state = self.policy.predict(observation, state, episode_start, deterministic)
        if not deterministic and action.ndim == 2:
            explore = self._explore_rng.random(len(action)) < self.exploration_rate
            if explore.any():
                action = action.copy()
                action[explore] = self._explore_rng.integers(0, self.policy.num_items, (int(explore.sum()), action.shape[1]))
        return action, state

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        q_net, target = self.policy.q_net, self.policy.q_net_target
        losses = []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            obs, nxt = data.observations, data.next_observations
            slate = data.actions.long()
            last = nxt["mask"].float().sum(dim=1).long().clamp(min=1) - 1
            clicks = nxt["clicks"][torch.arange(len(last)), last].float()
            with torch.no_grad():
                rel = nxt["relevance"].float()
                chosen = self.policy.select(q_net(nxt), rel)
                q_next = target(nxt).gather(1, chosen)
                v_next = (self.policy.click_probs(rel.gather(1, chosen), chosen) * q_next).sum(dim=1)
                y = 1.0 + self.gamma * (1.0 - data.dones.flatten()) * v_next
            q = q_net(obs).gather(1, slate)
            loss = (F.mse_loss(q, y[:, None].expand_as(q), reduction="none") * clicks).sum() / clicks.sum().clamp(min=1.0)
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(q_net.parameters(), 10.0)
            self.policy.optimizer.step()
            polyak_update(q_net.parameters(), target.parameters(), self.tau)
            losses.append(loss.item())
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates)
        self.logger.record("train/loss", float(np.mean(losses)))

    def _excluded_save_params(self) -> list[str]:
        return super()._excluded_save_params() + ["_explore_rng", "exploration_schedule"]
