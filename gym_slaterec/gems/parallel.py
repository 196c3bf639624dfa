"""GeMS batches split over CPU threads: data parallelism inside one process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch

from .model import GeMS


def check_workers(workers: object) -> int:
    """``workers`` as a positive int, or a ValueError naming it."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return workers


class ShardedGradients:
    """Loss terms of one GeMS batch and the gradients of its loss, in ``workers`` shards
    computed at the same time on as many threads.

    Every loss term is a mean over the batch's slates (the KL and click terms over their
    ranks and dimensions too), so the batch's term is the sum of the shards' terms
    weighted by their share of the slates. Each thread differentiates its weighted shard
    loss with ``torch.autograd.grad``; the shards' gradients are then summed in shard order,
    so a run gives the same result every time. The reparameterisation noise is drawn for
    the whole batch first, from the same generator in the same shape as the unsharded
    step, so the draws are those of ``GeMS.loss``. The result equals the unsharded step up
    to float rounding (tested).

    torch's own intra-op threads should be 1 while this runs (``TrainingStep`` sees to it):
    the threads here already use the cores, and each shard's matrices are small. Unlike
    intra-op threads, idle workers here sleep rather than spin, so a busy machine slows a
    step instead of stalling it.
    """

    def __init__(self, model: GeMS, workers: int) -> None:
        self.model = model
        self.workers = check_workers(workers)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._pool: Optional[ThreadPoolExecutor] = ThreadPoolExecutor(workers, thread_name_prefix="gems-shard")

    def __call__(
        self,
        slates: torch.Tensor,
        clicks: torch.Tensor,
        lambda_kl: float,
        lambda_click: float,
        generator: Optional[torch.Generator] = None,
        accuracy: bool = True,
        **loss_kwargs: int,
    ) -> dict[str, torch.Tensor]:
        """Set every trainable parameter's ``.grad`` to the gradient of the batch's loss;
        return the batch's loss terms (detached), as ``GeMS.loss`` names them."""
        if self._pool is None:
            raise RuntimeError("ShardedGradients is closed")
        n = slates.shape[0]
        if n == 0:
            raise ValueError("empty batch")
        dtype = self.params[0].dtype if self.params else torch.float32
        eps = torch.randn((n, self.model.latent_dim), generator=generator, dtype=dtype, device=slates.device)
        clicks = clicks.float()
        parts = zip(*(torch.tensor_split(x, min(self.workers, n)) for x in (slates, clicks, eps)))

        def shard(s: torch.Tensor, c: torch.Tensor, e: torch.Tensor):
            weight = s.shape[0] / n
            terms = self.model.loss(s, c, lambda_kl, lambda_click, accuracy=accuracy, eps=e, **loss_kwargs)
            grads = torch.autograd.grad(terms["loss"] * weight, self.params)
            return {k: v.detach() * weight for k, v in terms.items()}, grads

        results = [f.result() for f in [self._pool.submit(shard, *part) for part in parts]]
        for i, p in enumerate(self.params):
            total = results[0][1][i]
            for _, grads in results[1:]:
                total = total + grads[i]
            p.grad = total
        terms = dict(results[0][0])
        for other, _ in results[1:]:
            for k in terms:
                terms[k] = terms[k] + other[k]
        return terms

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "ShardedGradients":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
