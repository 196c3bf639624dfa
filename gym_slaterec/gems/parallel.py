"""GeMS batches split over CPU threads: data parallelism inside one process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

import torch

from .model import GeMS


def check_workers(workers: object) -> int:
    """``workers`` as a positive int, or a ValueError naming it."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return workers


#: where a sharded step's shares of a batch run (TrainingStep's and train_gems' ``shards``)
SHARD_KINDS = ("threads", "processes")


def check_shards(shards: object) -> str:
    """``shards`` as one of :data:`SHARD_KINDS`, or a ValueError naming it."""
    if shards not in SHARD_KINDS:
        raise ValueError(f"shards must be one of {', '.join(SHARD_KINDS)}, got {shards!r}")
    return str(shards)


def sum_shards(params: list[torch.Tensor], grads: list[Sequence[torch.Tensor]],
               terms: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Set each parameter's ``.grad`` to the sum of the shards' (weighted) gradients, in shard
    order, and return the sum of their (weighted) loss terms."""
    for i, p in enumerate(params):
        total = grads[0][i]
        for other in grads[1:]:
            total = total + other[i]
        p.grad = total
    summed = dict(terms[0])
    for other in terms[1:]:
        for k in summed:
            summed[k] = summed[k] + other[k]
    return summed


def split_batch(model: GeMS, slates: torch.Tensor, clicks: torch.Tensor, workers: int,
                generator: Optional[torch.Generator]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    """``(slates, clicks, noise, share)`` of each of up to ``workers`` shards of a batch. The
    reparameterisation noise is drawn for the whole batch first, as the unsharded step draws it."""
    n = slates.shape[0]
    if n == 0:
        raise ValueError("empty batch")
    dtype = next(model.parameters()).dtype
    eps = torch.randn((n, model.latent_dim), generator=generator, dtype=dtype, device=slates.device)
    parts = zip(*(torch.tensor_split(x, min(workers, n)) for x in (slates, clicks.float(), eps)))
    return [(s, c, e, s.shape[0] / n) for s, c, e in parts]


def shard_gradients(model: GeMS, params: list[torch.Tensor], slates: torch.Tensor, clicks: torch.Tensor,
                    eps: torch.Tensor, share: float, lambda_kl: float, lambda_click: float, accuracy: bool,
                    loss_kwargs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
    """One shard's loss terms and gradients, both weighted by its ``share`` of the batch."""
    terms = model.loss(slates, clicks, lambda_kl, lambda_click, accuracy=accuracy, eps=eps, **loss_kwargs)
    grads = torch.autograd.grad(terms["loss"] * share, params)
    return {k: v.detach() * share for k, v in terms.items()}, grads


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
        **loss_kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Set every trainable parameter's ``.grad`` to the gradient of the batch's loss;
        return the batch's loss terms (detached), as ``GeMS.loss`` names them."""
        if self._pool is None:
            raise RuntimeError("ShardedGradients is closed")
        parts = split_batch(self.model, slates, clicks, self.workers, generator)
        results = [f.result() for f in [self._pool.submit(shard_gradients, self.model, self.params, *part, lambda_kl,
                                                          lambda_click, accuracy, loss_kwargs) for part in parts]]
        return sum_shards(self.params, [g for _, g in results], [t for t, _ in results])

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "ShardedGradients":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def grad_views(buffer: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """One view of the flat ``buffer`` per parameter, shaped like it."""
    return [v.view_as(p) for v, p in zip(torch.split(buffer, [p.numel() for p in params]), params)]


def _shard_process(conn, model: GeMS, grad_buffer: torch.Tensor) -> None:
    """A worker process of :class:`ProcessShards`: one shard's loss terms and gradients per request."""
    import signal
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when to stop (Ctrl-C reaches the whole group)
    torch.set_num_threads(1)
    params = [p for p in model.parameters() if p.requires_grad]
    views = grad_views(grad_buffer, params)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the driver has gone
            return
        if request is None:
            return
        try:
            slates, clicks, eps, *rest = request
            terms, grads = shard_gradients(model, params, torch.from_numpy(slates), torch.from_numpy(clicks),
                                           torch.from_numpy(eps), *rest)
            for view, grad in zip(views, grads):
                view.copy_(grad)
            conn.send({k: float(v) for k, v in terms.items()})
        except Exception:  # reported to the driver, which raises it
            conn.send(traceback.format_exc())


def start_method() -> str:
    """How :class:`ProcessShards` starts its workers: forked (they inherit the model at no cost),
    except on a machine with a GPU. There, autograd's first backward pass in a process starts
    its per-device threads (even for CPU tensors), after which torch refuses autograd in forked
    children (seen on an H200 machine: any earlier backward in the process, such as a GeMS
    trained before); so the workers are spawned and receive the model, its parameters still in
    the shared memory."""
    return "spawn" if torch.cuda.is_available() else "fork"


class ProcessShards:
    """:class:`ShardedGradients` with its shards in processes: the first shard in this process,
    the others each in a worker process of its own, so that no two shards share a GIL.

    The model's parameters move to shared memory (``model.share_memory()``), so the workers
    always see the weights the optimiser last wrote; each worker writes its shard's gradients
    to a shared buffer, and this process sums them in shard order. The same noise, shares and
    weighting as :class:`ShardedGradients`, so the result equals the unsharded step up to float
    rounding (tested). Workers are forked (spawned on a machine with a GPU: :func:`start_method`;
    one torch thread each, so no OpenMP region runs in them), ignore SIGINT (the driver stops
    them) and exit when the driver closes them or goes away. CPU only.
    """

    def __init__(self, model: GeMS, workers: int) -> None:
        import torch.multiprocessing as mp

        self.model = model
        self.workers = check_workers(workers)
        if next(model.parameters()).device.type != "cpu":
            raise ValueError("ProcessShards runs on the CPU only")
        model.share_memory()
        self.params = [p for p in model.parameters() if p.requires_grad]
        total = sum(p.numel() for p in self.params)
        dtype = self.params[0].dtype if self.params else torch.float32
        try:
            ctx = mp.get_context(start_method())
        except ValueError as exc:
            raise ValueError("GeMS shards in processes need the fork start method (Linux, macOS); "
                             "use threads (--thread-mode ops or shards) here") from exc
        self._buffers = [torch.zeros(total, dtype=dtype).share_memory_() for _ in range(workers - 1)]
        self._grad_views = [grad_views(buffer, self.params) for buffer in self._buffers]
        self._conns = []
        self._procs = []
        for buffer in self._buffers:
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_shard_process, args=(theirs, model, buffer), daemon=True,
                               name="gems-shard")
            proc.start()
            theirs.close()
            self._conns.append(mine)
            self._procs.append(proc)
        self._closed = False

    def __call__(
        self,
        slates: torch.Tensor,
        clicks: torch.Tensor,
        lambda_kl: float,
        lambda_click: float,
        generator: Optional[torch.Generator] = None,
        accuracy: bool = True,
        **loss_kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Set every trainable parameter's ``.grad`` to the gradient of the batch's loss;
        return the batch's loss terms (detached), as ``GeMS.loss`` names them."""
        if self._closed:
            raise RuntimeError("ProcessShards is closed")
        parts = split_batch(self.model, slates, clicks, self.workers, generator)
        for i, (s, c, e, share) in enumerate(parts[1:]):
            self._talk(i, lambda conn: conn.send((s.numpy(), c.numpy(), e.numpy(), share, lambda_kl, lambda_click,
                                                  accuracy, loss_kwargs)))
        terms, grads = shard_gradients(self.model, self.params, *parts[0], lambda_kl, lambda_click, accuracy,
                                       loss_kwargs)
        replies = [self._talk(i, lambda conn: conn.recv()) for i in range(len(parts) - 1)]
        for reply in replies:
            if isinstance(reply, str):
                raise RuntimeError(f"a GeMS shard process failed:\n{reply}")
        return sum_shards(self.params, [grads, *self._grad_views[: len(replies)]],
                          [terms, *({k: torch.tensor(v, dtype=terms[k].dtype) for k, v in r.items()} for r in replies)])

    def _talk(self, i: int, action):
        """``action(connection)`` with worker ``i``, or a clear error when that worker has died."""
        try:
            return action(self._conns[i])
        except (EOFError, OSError) as exc:
            proc = self._procs[i]
            proc.join(timeout=1)
            self.close()
            raise RuntimeError(f"GeMS shard process {proc.pid} died (exit code {proc.exitcode}); "
                               "the step's gradients are incomplete") from exc

    def close(self) -> None:
        """Stop the worker processes."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            conn.close()
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()

    def __enter__(self) -> "ProcessShards":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
