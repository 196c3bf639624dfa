"""The GeMS slate VAE (docs/method.md section 6) as a torch module."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class ChunkedRankCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of per-rank logits ``ranks @ table.T`` against item ids,
    computed ``chunk`` rows at a time so that no (rows, N) logit matrix is ever stored.

    The gradient with respect to ``ranks`` does not depend on anything downstream but
    a scalar, so the forward pass computes it while a chunk's logits are in cache:
    logits, then ``exp(logits - max)`` in place (whose row sums give the log-sum-exp),
    then its product with the table; after the loop, for all rows at once, that product
    divided by the sums minus the target's row (``softmax @ table - onehot @ table``,
    normalised on d columns rather than N) and the target's logit. Backward only
    scales the stored (rows, d) gradient. The table gets no gradient (the slate head must
    not train the item table). Equal to ``F.cross_entropy(ranks @ table.T, targets)`` in
    value and gradient (tested). Also returns the number of rows whose argmax is the
    target (no gradient).
    """

    @staticmethod
    def forward(ctx, ranks: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, chunk: int,
                count_correct: bool) -> tuple[torch.Tensor, torch.Tensor]:
        m = ranks.shape[0]
        need_grad = bool(ctx.needs_input_grad[0])
        picked_rows = table[targets]  # (m, d): each row's target item
        # Per chunk only what needs its logits (kept to a few kernels: a step's Python overhead
        # does not shrink with more threads); every (m,)-sized finish runs once, after the loop.
        top = torch.empty((m, 1), dtype=ranks.dtype, device=ranks.device)
        best = torch.empty((m, 1), dtype=torch.long, device=ranks.device) if count_correct else None
        norm = torch.empty((m,), dtype=ranks.dtype, device=ranks.device)
        grad = torch.empty_like(ranks) if need_grad else None
        table_t = table.t()
        for a in range(0, m, chunk):
            b = min(a + chunk, m)
            logits = torch.mm(ranks[a:b], table_t)
            if count_correct:  # maxima and argmax in one pass
                torch.max(logits, dim=1, keepdim=True, out=(top[a:b], best[a:b]))
            else:
                torch.amax(logits, dim=1, keepdim=True, out=top[a:b])
            e = logits.sub_(top[a:b]).exp_()  # in place: the chunk's only (rows, N) buffer
            torch.sum(e, dim=1, out=norm[a:b])
            if need_grad:
                torch.mm(e, table, out=grad[a:b])  # unnormalised softmax @ table
        picked = (ranks * picked_rows).sum(dim=1)  # the target's logit
        total = (top[:, 0] + norm.log() - picked).sum(dtype=torch.float64)
        if need_grad:
            # d CE / d rank = softmax @ table - table[target]: normalised on d columns, not N
            grad.div_(norm[:, None]).sub_(picked_rows)
            ctx.save_for_backward(grad)
        correct = (best[:, 0] == targets).sum() if count_correct else torch.zeros((), dtype=torch.int64)
        ctx.m = m
        ctx.mark_non_differentiable(correct)
        return (total / m).to(ranks.dtype), correct

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_correct: Optional[torch.Tensor]):
        (grad,) = ctx.saved_tensors
        return grad * (grad_loss / ctx.m), None, None, None, None


def mlp(sizes: Sequence[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class GeMS(nn.Module):
    """Variational auto-encoder of (slate, clicks) pairs.

    - ``encode(slates (B,k) long, clicks (B,k) float) -> (mu, logvar)``, each (B, latent_dim);
    - ``decode(z) -> (item_logits (B,k,N), click_logits (B,k))``; the item logits are
      the dot products of a per-rank 20-d vector with the (detached) item table;
    - ``decode_slates(z) -> (B,k)`` long: argmax per rank (duplicates allowed).
    """

    def __init__(
        self,
        num_items: int,
        slate_size: int,
        latent_dim: int = 32,
        item_dim: int = 20,
        encoder_hidden: Sequence[int] = (512, 256),
        decoder_hidden: Sequence[int] = (256, 512),
        item_embeddings: Optional[torch.Tensor] = None,
        freeze_items: bool = False,
    ) -> None:
        super().__init__()
        self.num_items = int(num_items)
        self.slate_size = int(slate_size)
        self.latent_dim = int(latent_dim)
        self.item_dim = int(item_dim)
        self.item_embeddings = nn.Embedding(self.num_items, self.item_dim)
        if item_embeddings is not None:
            init = torch.as_tensor(item_embeddings, dtype=torch.float32)
            if tuple(init.shape) != (self.num_items, self.item_dim):
                raise ValueError(
                    f"initial item embeddings have shape {tuple(init.shape)}, expected {(self.num_items, self.item_dim)}"
                )
            with torch.no_grad():
                self.item_embeddings.weight.copy_(init)
        self.item_embeddings.weight.requires_grad_(not freeze_items)
        k, d = self.slate_size, self.item_dim
        self.encoder = mlp([k * (d + 1), *encoder_hidden, 2 * self.latent_dim], last_activation=False)
        self.decoder = mlp([self.latent_dim, *decoder_hidden], last_activation=True)
        self.slate_head = nn.Linear(decoder_hidden[-1], k * d)
        self.click_head = nn.Linear(decoder_hidden[-1], k)

    def encode(self, slates: torch.Tensor, clicks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of the latent code of each (slate, clicks)."""
        emb = self.item_embeddings(slates).flatten(1)
        h = self.encoder(torch.cat([emb, clicks.to(emb.dtype)], dim=1))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-rank item logits (B, k, N) and click logits (B, k)."""
        h = self.decoder(z)
        ranks = self.slate_head(h).view(-1, self.slate_size, self.item_dim)
        # The slate head must not train the item table (docs/method.md section 6): detach it here.
        item_logits = ranks @ self.item_embeddings.weight.detach().T
        return item_logits, self.click_head(h)

    @torch.no_grad()
    def decode_slates(self, z: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """The most likely item at every rank, (B, k) long.

        Works through ``chunk`` codes at a time so that the (chunk, k, N) logits
        stay in cache (measured fastest on CPU; see BENCHMARKS.md).
        """
        out = torch.empty((z.shape[0], self.slate_size), dtype=torch.long, device=z.device)
        table_t = self.item_embeddings.weight.T
        for i in range(0, z.shape[0], chunk):
            h = self.decoder(z[i : i + chunk])
            ranks = self.slate_head(h).view(-1, self.slate_size, self.item_dim)
            logits = ranks @ table_t
            if logits.device.type == "cpu":  # numpy's argmax: same result (first maximum), ~6x faster on CPU
                out[i : i + chunk] = torch.from_numpy(np.argmax(logits.numpy(), axis=-1))
            else:
                out[i : i + chunk] = logits.argmax(dim=-1)
        return out

    def loss(
        self,
        slates: torch.Tensor,
        clicks: torch.Tensor,
        lambda_kl: float,
        lambda_click: float,
        sample: bool = True,
        generator: Optional[torch.Generator] = None,
        accuracy: bool = True,
        chunk: int = 128,
        eps: Optional[torch.Tensor] = None,
        noise: str = "std",
    ) -> dict[str, torch.Tensor]:
        """The loss terms of one batch (``sample=False`` decodes the posterior mean).

        Returns ``loss``, ``slate`` (cross-entropy), ``click`` (BCE), ``kl`` and
        ``slate_acc`` (fraction of ranks whose argmax is the logged item, no gradient;
        left out when ``accuracy=False``). The slate cross-entropy runs through
        :class:`ChunkedRankCrossEntropy`, ``chunk`` rank rows at a time (0: the plain
        materialised version, same value and gradients). ``eps``: the (B, latent_dim)
        standard normal noise of the reparameterisation, given instead of drawn from
        ``generator`` (a shard of a batch whose noise was drawn whole). ``noise``: its scale,
        ``std`` (``z = mu + eps sigma``) or ``variance`` (``z = mu + eps sigma^2``, the reference
        code's).
        """
        clicks = clicks.float()
        mu, logvar = self.encode(slates, clicks)
        if sample:
            if eps is None:
                eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            elif eps.shape != mu.shape:
                raise ValueError(f"eps has shape {tuple(eps.shape)}, expected {tuple(mu.shape)}")
            if noise not in ("std", "variance"):
                raise ValueError(f"noise must be std or variance, got {noise!r}")
            z = mu + eps * torch.exp(0.5 * logvar if noise == "std" else logvar)
        else:
            z = mu
        h = self.decoder(z)
        ranks = self.slate_head(h).reshape(-1, self.item_dim)  # (B * k, d)
        targets = slates.reshape(-1)
        table = self.item_embeddings.weight.detach()  # docs/method.md section 6: no gradient from this branch
        if chunk:
            slate_loss, correct = ChunkedRankCrossEntropy.apply(ranks, table, targets, int(chunk), accuracy)
        else:
            logits = ranks @ table.T
            slate_loss = F.cross_entropy(logits, targets)
            correct = (logits.detach().argmax(-1) == targets).sum()
        click_loss = F.binary_cross_entropy_with_logits(self.click_head(h), clicks)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        total = slate_loss + lambda_click * click_loss + lambda_kl * kl
        terms = {"loss": total, "slate": slate_loss, "click": click_loss, "kl": kl}
        if accuracy:
            terms["slate_acc"] = correct.float() / targets.numel()
        return terms
