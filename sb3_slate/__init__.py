"""sb3_slate: online RL for slate recommendation with Stable-Baselines3 (docs/method.md sections 7-8).

- :mod:`sb3_slate.envs`: history-window observations (:class:`HistoryWindow`,
  :class:`VectorHistoryWindow`) and the SB3 ``VecEnv`` bridge (:class:`SB3VecEnv`);
- :mod:`sb3_slate.belief`: :class:`GRUBeliefExtractor`, the GRU belief encoder as an
  SB3 features extractor (SAC, TD3, PPO through ``policy_kwargs``);
- :mod:`sb3_slate.agents`: ``SlateSAC`` (distinct actor / critic learning rates),
  ``WolpertingerSAC`` (SAC+WkNN), ``REINFORCE`` (SoftMax), ``SlateQ``, reference agents;
- :mod:`sb3_slate.methods`: the benchmark's methods, their default configurations
  (``sb3_slate/configs/*.yaml``) and env stacks;
- :mod:`sb3_slate.protocol`: fixed validation / test users, evaluation, callbacks;
- :mod:`sb3_slate.runs`: ``train_run`` (run directories, resume), ``load_agent``,
  ``evaluate_run_dir``; command line ``slaterec train``.
"""

from typing import Any

__all__ = ["GRUBeliefExtractor", "HistoryWindow", "SB3VecEnv", "VectorHistoryWindow"]


def __getattr__(name: str) -> Any:  # lazy: `slaterec` sub-commands must not import torch / SB3 up front
    if name == "GRUBeliefExtractor":
        from .belief import GRUBeliefExtractor

        return GRUBeliefExtractor
    if name in ("HistoryWindow", "SB3VecEnv", "VectorHistoryWindow"):
        from . import envs

        return getattr(envs, name)
    raise AttributeError(f"module 'sb3_slate' has no attribute {name!r}")
