"""The checkpoint format of :class:`~sb3_slate.agents.EpisodeSAC`: a zip of ``format.txt``,
``config.json`` (constructor arguments) and ``state.pt`` (tensors only, read with
``weights_only=True``)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

FORMAT = "slaterec.episode_sac/1"


def state_of(self: Any) -> dict[str, Any]:
    """Every tensor of an EpisodeSAC that a checkpoint keeps (weights, optimisers, counters, random states)."""
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
        **(self.extra_tensors() if hasattr(self, "extra_tensors") else {}),
    }

def save(self: Any, path: Union[str, Path]) -> None:
    """Write ``self`` (an EpisodeSAC) to ``path``: a zip of ``config.json`` (constructor
    arguments) and ``state.pt`` (tensors only)."""
    buf = io.BytesIO()
    torch.save(state_of(self), buf)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("format.txt", FORMAT)
        z.writestr("config.json", json.dumps(self.kwargs))
        z.writestr("state.pt", buf.getvalue())

def load(cls: type, path: Union[str, Path], env: Any = None, device: str = "cpu") -> Any:
    """An instance of ``cls`` (EpisodeSAC) from checkpoint ``path``, read weights-only."""
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
