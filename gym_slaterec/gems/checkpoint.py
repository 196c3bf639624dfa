"""GeMS checkpoints: one file with weights, hyper-parameters, action bounds and provenance."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional, Union

import warnings

import numpy as np
import torch

from ..provenance import (
    PartialArtifactError,
    PathLike,
    ProvenanceFields,
    ProvenanceMismatchError,
    sha256_file,
    write_bytes_atomic,
)
from .config import GeMSConfig
from .model import GeMS

FORMAT = "slaterec.gems/1"


class GeMSCheckpoint(ProvenanceFields):
    """A trained GeMS (in eval mode) with its action bounds and provenance.

    The RL action ``a`` in ``[-1, 1]^latent_dim`` maps to the latent code
    ``z = center + scale * a`` with ``center = (high + low) / 2`` and
    ``scale = (high - low) / 2`` (docs/method.md section 6).
    """

    def __init__(
        self,
        model: GeMS,
        config: GeMSConfig,
        low: np.ndarray,
        high: np.ndarray,
        provenance: dict[str, Any],
        val_metrics: Optional[dict[str, float]] = None,
        path: Optional[Path] = None,
        fingerprint: Optional[str] = None,
        training: Optional[dict[str, Any]] = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.low = np.asarray(low, dtype=np.float32)
        self.high = np.asarray(high, dtype=np.float32)
        if self.low.shape != (model.latent_dim,) or self.high.shape != (model.latent_dim,):
            raise ValueError(f"action bounds must have shape ({model.latent_dim},)")
        if not (np.isfinite(self.low).all() and np.isfinite(self.high).all() and (self.high > self.low).all()):
            raise ValueError("action bounds must be finite with high > low in every dimension")
        self.provenance = provenance
        self.val_metrics = dict(val_metrics or {})
        self.training = dict(training or {})
        self.path = path
        self.fingerprint = fingerprint

    # -------------------------------------------------------------- metadata
    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    @property
    def num_items(self) -> int:
        return self.model.num_items

    @property
    def slate_size(self) -> int:
        return self.model.slate_size

    @property
    def center(self) -> np.ndarray:
        return (self.high + self.low) / 2

    @property
    def scale(self) -> np.ndarray:
        return (self.high - self.low) / 2

    # ------------------------------------------------------------- numerics
    def to_action(self, z: np.ndarray) -> np.ndarray:
        """Latent codes -> agent actions (``[-1, 1]`` inside the bounds), float32."""
        return ((np.asarray(z, dtype=np.float32) - self.center) / self.scale).astype(np.float32)

    def from_action(self, a: np.ndarray) -> np.ndarray:
        """Agent actions -> latent codes ``center + scale * a``, float32."""
        return (self.center + self.scale * np.asarray(a, dtype=np.float32)).astype(np.float32)

    def encode_latent(self, slates: np.ndarray, clicks: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Encoder means of (slate, clicks) pairs: (B, k), (B, k) -> (B, latent_dim) float32."""
        s = np.asarray(slates)
        c = np.asarray(clicks)
        k = self.slate_size
        if s.ndim != 2 or s.shape[1] != k or c.shape != s.shape:
            raise ValueError(f"slates and clicks must both have shape (B, {k}); got {s.shape} and {c.shape}")
        if not np.issubdtype(s.dtype, np.integer):
            raise ValueError(f"slates must hold integer item ids, got dtype {s.dtype}")
        if s.size and (s.min() < 0 or s.max() >= self.num_items):
            raise ValueError(f"slates hold item ids outside [0, {self.num_items - 1}]")
        out = np.empty((len(s), self.latent_dim), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(s), batch_size):
                mu, _ = self.model.encode(
                    torch.from_numpy(s[i : i + batch_size].astype(np.int64)),
                    torch.from_numpy(c[i : i + batch_size].astype(np.float32)),
                )
                out[i : i + batch_size] = mu.numpy()
        return out

    def decode_latent(self, z: np.ndarray) -> np.ndarray:
        """Latent codes (B, latent_dim) -> slates (B, k) int64 (argmax per rank)."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latent codes must have shape (B, {self.latent_dim}), got {z.shape}")
        if not np.isfinite(z).all():
            raise ValueError("latent codes contain NaN or infinite values")
        with torch.inference_mode():
            return self.model.decode_slates(torch.from_numpy(z)).numpy().astype(np.int64)

    def item_embedding_table(self) -> np.ndarray:
        """The model's item table (N, item_dim) float32 (a copy)."""
        return self.model.item_embeddings.weight.detach().numpy().astype(np.float32, copy=True)

    # ------------------------------------------------------------------- I/O
    def _payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "num_items": self.num_items,
            "slate_size": self.slate_size,
            "state_dict": self.model.state_dict(),
            "low": torch.from_numpy(self.low.copy()),
            "high": torch.from_numpy(self.high.copy()),
            "provenance": self.provenance,
            "val_metrics": self.val_metrics,
            "training": self.training,
        }

    @property
    def partial(self) -> bool:
        """True when training was interrupted before its planned steps."""
        tr = self.training or {}
        return self.provenance.get("complete") is False or bool(tr.get("interrupted"))

    def partial_note(self) -> str:
        p = self.provenance
        steps = f" after {p['steps_done']} of {p['steps_planned']} steps" if "steps_done" in p else ""
        return f"GeMS checkpoint {self.path} is partial: its training was interrupted{steps}"

    def non_finite(self) -> list[str]:
        """Names of the weights and bounds that hold NaN or infinite values."""
        bad = [name for name, t in self.model.state_dict().items()
               if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        bad += [name for name, a in (("low", self.low), ("high", self.high)) if not np.isfinite(a).all()]
        return bad

    def save(self, path: PathLike, overwrite: bool = False) -> Path:
        """Write the checkpoint (atomically; refuses an existing file unless ``overwrite``,
        and refuses a model with non-finite weights)."""
        bad = self.non_finite()
        if bad:
            raise ValueError(f"refusing to write GeMS checkpoint {path}: non-finite values in {', '.join(bad[:5])} "
                             "(training diverged; try a lower learning rate)")
        buf = io.BytesIO()
        torch.save(self._payload(), buf)
        self.fingerprint = write_bytes_atomic(path, buf.getvalue(), overwrite, kind="gems_checkpoint")
        self.path = Path(path)
        return self.path

    @classmethod
    def load(
        cls,
        path: PathLike,
        expect_env_id: Optional[str] = None,
        expect_item_embeddings_fingerprint: Optional[str] = None,
        allow_env_mismatch: bool = False,
        allow_partial: bool = False,
    ) -> "GeMSCheckpoint":
        """Read a checkpoint; refuse one trained for another env / item table unless allowed,
        and one whose training was interrupted unless ``allow_partial`` (then it warns)."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"GeMS checkpoint not found: {p}")
        if not p.is_file():
            raise ValueError(f"{p} is not a file (expected a GeMS checkpoint .pt file)")
        try:
            payload = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, garbage bytes, foreign pickle...
            raise ValueError(f"{p} is not a readable GeMS checkpoint (corrupt or truncated file?): {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(f"{p} is not a GeMS checkpoint (format {found!r}, expected {FORMAT!r})")
        try:
            config = GeMSConfig.from_dict(payload["config"])
            model = GeMS(
                payload["num_items"], payload["slate_size"], config.latent_dim, config.item_dim,
                config.encoder_hidden, config.decoder_hidden,
            )
            model.load_state_dict(payload["state_dict"])
            ckpt = cls(
                model, config, payload["low"].numpy(), payload["high"].numpy(), payload["provenance"],
                payload.get("val_metrics"), p, sha256_file(p), payload.get("training"),
            )
        except (KeyError, RuntimeError, TypeError, AttributeError) as exc:
            raise ValueError(f"{p} is a damaged GeMS checkpoint: {type(exc).__name__}: {exc}") from exc
        bad = ckpt.non_finite()
        if bad:
            raise ValueError(f"{p} is a damaged GeMS checkpoint: NaN or infinite values in {', '.join(bad[:5])}")
        if not allow_env_mismatch:
            ckpt.check_env(expect_env_id, expect_item_embeddings_fingerprint)
        if ckpt.partial:
            if not allow_partial:
                raise PartialArtifactError(ckpt.partial_note() + "; pass --allow-partial (allow_partial=True) "
                                           "to use it anyway, or train it to the end")
            warnings.warn(ckpt.partial_note(), UserWarning, stacklevel=2)
        return ckpt

    def check_env(self, env_id: Optional[str], item_embeddings_fingerprint: Optional[str] = None) -> None:
        """Raise :class:`ProvenanceMismatchError` if this GeMS was trained on data of another env / item table."""
        where = f"GeMS checkpoint {self.path}" if self.path else "this GeMS checkpoint"
        if env_id is not None and self.env_id is not None and env_id != self.env_id:
            raise ProvenanceMismatchError(
                f"{where} was trained on data from {self.env_id!r}, but the environment is {env_id!r} "
                "(pass allow_env_mismatch=True to use it anyway)"
            )
        fp = self.item_embeddings_fingerprint
        if item_embeddings_fingerprint is not None and fp is not None and fp != item_embeddings_fingerprint:
            raise ProvenanceMismatchError(
                f"{where} was trained on {self.env_id!r} with item embeddings {fp[:12]}, but the environment "
                f"uses item embeddings {item_embeddings_fingerprint[:12]} (pass allow_env_mismatch=True to use it anyway)"
            )

    def summary(self) -> dict[str, Any]:
        """Everything ``slaterec gems-info`` shows, JSON-ready."""
        return {
            "path": str(self.path) if self.path else None,
            "fingerprint": self.fingerprint,
            "env_id": self.env_id,
            "latent_dim": self.latent_dim,
            "num_items": self.num_items,
            "slate_size": self.slate_size,
            "config": self.config.to_dict(),
            "bounds": {"low": self.low.tolist(), "high": self.high.tolist()},
            "val_metrics": self.val_metrics,
            "training": self.training,
            "provenance": self.provenance,
        }


CheckpointLike = Union[GeMSCheckpoint, str, Path]


def as_checkpoint(ckpt: CheckpointLike, **load_kwargs: Any) -> GeMSCheckpoint:
    if isinstance(ckpt, GeMSCheckpoint):
        return ckpt
    if isinstance(ckpt, (str, Path)):
        return GeMSCheckpoint.load(ckpt, **load_kwargs)
    raise ValueError(f"expected a GeMSCheckpoint or a checkpoint path, got {type(ckpt).__name__}")
