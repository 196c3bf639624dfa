"""The checkpoint format of :class:`~sb3_slate.agents.EpisodeSAC`: a zip of ``format.txt``,
``config.json`` (constructor arguments) and ``state.pt`` (tensors only, read with
``weights_only=True``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import torch

from ..episode_loop import loop_state, read_zip_checkpoint, restore_counters, write_zip_checkpoint

FORMAT = "slaterec.episode_sac/1"


def state_of(self: Any) -> dict[str, Any]:
    """Every tensor of an EpisodeSAC that a checkpoint keeps (weights, optimisers, counters, random states)."""
    return {
        "actor": self.actor.state_dict(), "critic_belief": self.critic_belief.state_dict(),
        "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
        "actor_optimizer": self.actor_optimizer.state_dict(), "critic_optimizer": self.critic_optimizer.state_dict(),
        "alpha_optimizer": None if self.alpha_optimizer is None else self.alpha_optimizer.state_dict(),
        "log_alpha": self.log_alpha.detach().clone(),
        **loop_state(self),
        **({} if self.refiner is None else {"wolpertinger_items": self.refiner.items.cpu()}),
        **(self.extra_tensors() if hasattr(self, "extra_tensors") else {}),
    }

def save(self: Any, path: Union[str, Path]) -> None:
    """Write ``self`` (an EpisodeSAC) to ``path``: a zip of ``config.json`` (constructor
    arguments) and ``state.pt`` (tensors only)."""
    write_zip_checkpoint(path, FORMAT, self.kwargs, state_of(self))

def load(cls: type, path: Union[str, Path], env: Any = None, device: str = "cpu") -> Any:
    """An instance of ``cls`` (EpisodeSAC) from checkpoint ``path``, read weights-only."""
    kwargs, state = read_zip_checkpoint(path, FORMAT, "EpisodeSAC")
    kwargs["device"] = device
    if kwargs.pop("wknn", False):  # SAC+WkNN with switchable reference-code differences
        from .wknn import EpisodeWkNN

        if "wknn_table" not in state:
            raise ValueError(f"{path} is not a readable EpisodeSAC checkpoint (its k-NN item table is missing)")
        cls = EpisodeWkNN
        kwargs["wknn_items"] = state["wknn_table"].numpy()  # the table it acted with, whatever its source
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
    restore_counters(model, state)
    if env is not None:
        model.set_env(env)
    return model
