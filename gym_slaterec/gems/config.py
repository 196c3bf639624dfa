"""Hyper-parameters of GeMS pre-training (docs/method.md section 6)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional


#: the reparameterisation noise scales of GeMS training (GeMSConfig.sample_noise)
SAMPLE_NOISES = ("std", "variance")


@dataclass
class GeMSConfig:
    """Everything that defines a GeMS model and its training run.

    Loss normalisation follows the reference implementation: the slate
    cross-entropy and the click BCE are means over (sample, rank) and the KL term
    is a mean over (sample, latent dimension), so ``lambda_kl``/``lambda_click``
    have their published meaning.
    """

    latent_dim: int = 32
    encoder_hidden: tuple[int, ...] = (512, 256)
    decoder_hidden: tuple[int, ...] = (256, 512)
    lambda_kl: float = 1.0
    lambda_click: float = 0.5
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 10
    #: "scratch" (N(0, 1) init), "ideal" (the environment's own embeddings, privileged) or "mf:PATH".
    item_init: str = "scratch"
    freeze_items: bool = False
    seed: int = 0
    val_fraction: float = 0.1
    #: Validation runs on at most this many (episode, turn) samples (a fixed seeded subset).
    val_max_samples: int = 100_000
    #: Validate every this many optimiser steps (None: at the end of every epoch).
    eval_every: Optional[int] = None
    #: Stop after this many validations without improvement (None: never stop early).
    patience: Optional[int] = None
    #: Action bounds use at most this many training samples (a fixed seeded subset).
    bounds_max_samples: int = 1_000_000
    item_dim: int = 20
    #: the scale of the reparameterisation noise in training: "std" (``z = mu + eps sigma``, the
    #: paper's text) or "variance" (``z = mu + eps sigma^2``, the reference code's; ``pretrain-gems
    #: --recipe reference``)
    sample_noise: str = "std"

    def __post_init__(self) -> None:
        self.encoder_hidden = tuple(int(h) for h in self.encoder_hidden)
        self.decoder_hidden = tuple(int(h) for h in self.decoder_hidden)
        self.validate()

    def validate(self) -> None:
        def positive_int(name: str, value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GeMSConfig.{name} must be a positive integer, got {value!r}")

        for name in ("latent_dim", "batch_size", "epochs", "val_max_samples", "bounds_max_samples", "item_dim"):
            positive_int(name, getattr(self, name))
        for name in ("eval_every", "patience"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        if not self.encoder_hidden or not self.decoder_hidden or min(self.encoder_hidden + self.decoder_hidden) < 1:
            raise ValueError("GeMSConfig hidden sizes must be non-empty lists of positive integers")
        for name in ("lambda_kl", "lambda_click"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
                raise ValueError(f"GeMSConfig.{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < float("inf"):
            raise ValueError(f"GeMSConfig.lr must be a positive number, got {self.lr!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"GeMSConfig.val_fraction must lie in (0, 1), got {self.val_fraction!r}")
        if not isinstance(self.item_init, str) or not (
            self.item_init in ("scratch", "ideal") or (self.item_init.startswith("mf:") and len(self.item_init) > 3)
        ):
            raise ValueError(f"GeMSConfig.item_init must be 'scratch', 'ideal' or 'mf:PATH', got {self.item_init!r}")
        if self.freeze_items and self.item_init == "scratch":
            raise ValueError("freeze_items=True with item_init='scratch' would keep random item embeddings; use 'ideal' or 'mf:PATH'")
        if self.sample_noise not in SAMPLE_NOISES:
            raise ValueError(f"GeMSConfig.sample_noise must be one of {', '.join(SAMPLE_NOISES)}, got {self.sample_noise!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"GeMSConfig.seed must be an integer, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["encoder_hidden"] = list(self.encoder_hidden)
        d["decoder_hidden"] = list(self.decoder_hidden)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GeMSConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GeMSConfig fields: {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> "GeMSConfig":
        return dataclasses.replace(self, **changes)
