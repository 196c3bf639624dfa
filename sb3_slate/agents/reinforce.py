"""REINFORCE+SoftMax (docs/method.md section 7): a softmax over the N items, k samples with replacement.

:class:`SoftmaxSlatePolicy` maps the belief to N item logits; a slate is k
independent draws from that softmax (its log-probability is the sum of the k
draws'), the deterministic slate the k most probable items. :class:`REINFORCE`
is an SB3 on-policy algorithm whose rollouts are whole episodes (``n_steps`` =
episode length) and whose update is the Monte-Carlo policy gradient with the
discounted return-to-go, standardised over the batch as the baseline.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from gymnasium import spaces
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn


class SoftmaxSlatePolicy(BasePolicy):
    """Belief -> MLP -> N logits; slates of k draws with replacement."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.MultiDiscrete,
        lr_schedule: Schedule,
        net_arch: Optional[list[int]] = None,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: Optional[dict[str, Any]] = None,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: Optional[dict[str, Any]] = None,
        use_sde: bool = False,
        **_: Any,
    ) -> None:
        super().__init__(
            observation_space, action_space, features_extractor_class, features_extractor_kwargs,
            optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs,
        )
        if not isinstance(action_space, spaces.MultiDiscrete):
            raise ValueError(f"SoftmaxSlatePolicy needs a MultiDiscrete slate action space, got {action_space}")
        self.net_arch = list(net_arch if net_arch is not None else [256])
        self.num_items = int(action_space.nvec[0])
        self.slate_size = int(action_space.shape[0])
        self.features_extractor = self.make_features_extractor()
        layers: list[nn.Module] = []
        dim = self.features_extractor.features_dim
        for h in self.net_arch:
            layers += [nn.Linear(dim, h), nn.ReLU()]
            dim = h
        layers.append(nn.Linear(dim, self.num_items))
        self.logits_net = nn.Sequential(*layers)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(net_arch=self.net_arch, features_extractor_class=self.features_extractor_class,
                    features_extractor_kwargs=self.features_extractor_kwargs)
        return data

    def logits(self, obs: Any) -> torch.Tensor:
        return self.logits_net(self.extract_features(obs, self.features_extractor))

    def distribution(self, obs: Any) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.logits(obs))

    def forward(self, obs: Any, deterministic: bool = False):
        dist = self.distribution(obs)
        actions = self._select(dist, deterministic)
        log_prob = dist.log_prob(actions.T).T.sum(dim=1)
        return actions, torch.zeros(len(actions)), log_prob

    def _select(self, dist: torch.distributions.Categorical, deterministic: bool) -> torch.Tensor:
        if deterministic:
            return dist.logits.topk(self.slate_size, dim=1).indices
        return dist.sample((self.slate_size,)).T  # (B, k), with replacement

    def _predict(self, observation: Any, deterministic: bool = False) -> torch.Tensor:
        return self._select(self.distribution(observation), deterministic)

    def evaluate_actions(self, obs: Any, actions: torch.Tensor):
        dist = self.distribution(obs)
        log_prob = dist.log_prob(actions.long().T).T.sum(dim=1)
        return torch.zeros(len(actions)), log_prob, dist.entropy()

    def predict_values(self, obs: Any) -> torch.Tensor:
        return torch.zeros(obs[next(iter(obs))].shape[0] if isinstance(obs, dict) else obs.shape[0], 1)


class REINFORCE(OnPolicyAlgorithm):
    """Monte-Carlo policy gradient over whole episodes (SB3 on-policy structure)."""

    policy_aliases = {"MultiInputPolicy": SoftmaxSlatePolicy, "SoftmaxSlatePolicy": SoftmaxSlatePolicy}

    def __init__(
        self,
        policy: Any,
        env: Any,
        learning_rate: float = 1e-3,
        n_steps: int = 100,
        gamma: float = 0.8,
        ent_coef: float = 0.0,
        max_grad_norm: float = 10.0,
        normalize_returns: bool = True,
        policy_kwargs: Optional[dict[str, Any]] = None,
        tensorboard_log: Optional[str] = None,
        verbose: int = 0,
        seed: Optional[int] = None,
        device: str = "cpu",
        _init_setup_model: bool = True,
    ) -> None:
        super().__init__(
            policy, env, learning_rate=learning_rate, n_steps=n_steps, gamma=gamma, gae_lambda=1.0,
            ent_coef=ent_coef, vf_coef=0.0, max_grad_norm=max_grad_norm, use_sde=False, sde_sample_freq=-1,
            tensorboard_log=tensorboard_log, monitor_wrapper=False, policy_kwargs=policy_kwargs, verbose=verbose,
            seed=seed, device=device, _init_setup_model=False, supported_action_spaces=(spaces.MultiDiscrete,),
        )
        self.normalize_returns = normalize_returns
        if _init_setup_model:
            self._setup_model()

    def train(self) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        data = next(self.rollout_buffer.get(batch_size=None))
        returns = data.returns
        if self.normalize_returns and returns.numel() > 1:
            returns = (returns - returns.mean()) / (returns.std() + 1e-8)
        _, log_prob, entropy = self.policy.evaluate_actions(data.observations, data.actions)
        pg_loss = -(log_prob * returns).mean()
        loss = pg_loss - self.ent_coef * entropy.mean()
        self.policy.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
        self._n_updates += 1
        self.logger.record("train/policy_gradient_loss", pg_loss.item())
        self.logger.record("train/entropy", entropy.mean().item())
        self.logger.record("train/n_updates", self._n_updates)
