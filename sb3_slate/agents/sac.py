"""SAC with distinct learning rates for the Q networks and the policy (docs/method.md section 7)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
from stable_baselines3 import SAC
from stable_baselines3.common.utils import FloatSchedule, update_learning_rate

Schedule = Union[float, Callable[[float], float]]


class SlateSAC(SAC):
    """SB3 ``SAC`` whose actor has its own learning rate.

    ``learning_rate`` drives the critics and the entropy coefficient (paper: Q lr
    1e-3); ``actor_learning_rate`` drives the policy (paper: 3e-3). ``None`` falls
    back to ``learning_rate`` (plain SB3 behaviour).
    """

    def __init__(self, *args: Any, actor_learning_rate: Optional[Schedule] = None, **kwargs: Any) -> None:
        self.actor_learning_rate = actor_learning_rate
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        rate = self.learning_rate if self.actor_learning_rate is None else self.actor_learning_rate
        self.actor_lr_schedule = FloatSchedule(rate)
        update_learning_rate(self.actor.optimizer, self.actor_lr_schedule(1.0))

    def _update_learning_rate(self, optimizers: Union[list[torch.optim.Optimizer], torch.optim.Optimizer]) -> None:
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        others = [opt for opt in optimizers if opt is not self.actor.optimizer]
        super()._update_learning_rate(others)
        if len(others) != len(optimizers):
            lr = self.actor_lr_schedule(self._current_progress_remaining)
            self.logger.record("train/actor_learning_rate", lr)
            update_learning_rate(self.actor.optimizer, lr)
