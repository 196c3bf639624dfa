"""Feasibility of fused seeds (issue #22): N paper-regime SAC gradient steps computed as one.

The fused step computes, for N independent :class:`~sb3_slate.agents.EpisodeSAC` models
(their own replay memories, random streams and optimisers), what their N ``train_step``
calls compute, in shared operations:

- the 2N belief GRUs (actor and critic of every seed) are one GRU whose weights are
  block-diagonal per gate (the unroll of :func:`~sb3_slate.agents.episode_sac.unroll_pair`
  generalised from 2 to 2N beliefs), over the seeds' inputs side by side;
- every MLP head is applied to all seeds at once by batched matrix products over the seed
  dimension (weights stacked per layer);
- the N losses are summed: the seeds' parameters are disjoint, so one backward pass gives
  every seed exactly its own gradients; each seed's optimisers then step as before.

The weights are stacked from the N models at every step (a real implementation would keep
them stacked), so the timing is a lower bound of what fusing gains.

    python scripts/bench_fused_seeds.py --seeds 1 5 10 --steps 20
    python scripts/bench_fused_seeds.py --device cuda --seeds 1 5 10 20 --steps 10   # on a GPU

It first checks, for each N, that one fused step leaves every model where N separate
``train_step`` calls leave it (parameters equal up to float rounding), then times
gradient steps per second per seed, separate against fused, one thread.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import numpy as np
import torch
from torch.nn import functional as F

from gym_slaterec.devices import resolve_device
from sb3_slate.agents.episode_sac import EpisodeSAC
from sb3_slate.agents.episode_sac.policies import LOG_STD_MAX, LOG_STD_MIN
from sb3_slate.agents.gru_sequence import unroll_gru

T, K, N_ITEMS, LATENT, BATCH = 100, 10, 1000, 32, 20


def make_models(n: int, seed0: int = 0, device: str = "cpu") -> list[EpisodeSAC]:
    models = []
    for i in range(n):
        m = EpisodeSAC(N_ITEMS, K, T, LATENT, batch_size=BATCH, buffer_size=200, warmup_episodes=0, seed=seed0 + i,
                       device=device)
        rng = np.random.default_rng(100 + i)
        m.replay_buffer.add(rng.integers(0, N_ITEMS, (200, T + 1, K)), rng.integers(0, 2, (200, T + 1, K)).astype(np.uint8),
                            rng.uniform(-1, 1, (200, T, LATENT)).astype(np.float32),
                            rng.integers(0, 4, (200, T)).astype(np.float32))
        models.append(m)
    return models


def block_diagonal_gates(ws: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([torch.block_diag(*[w.chunk(3, 0)[g] for w in ws]) for g in range(3)], dim=0)


def stacked_gates(bs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([torch.cat([b.chunk(3)[g] for b in bs]) for g in range(3)])


def batched_gru(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
                b_hh: torch.Tensor) -> torch.Tensor:
    """G independent GRUs at once, batched over a leading dimension (plain autograd): x (G, B, L, in),
    weights (G, 3H, in), (G, 3H, H), biases (G, 3H) -> (G, B, L, H)."""
    g, b, length, _ = x.shape
    hidden = w_hh.shape[2]
    gi = torch.baddbmm(b_ih[:, None, :], x.reshape(g, b * length, -1), w_ih.transpose(1, 2)).view(g, b, length, -1)
    w_hh_t = w_hh.transpose(1, 2)
    h = x.new_zeros(g, b, hidden)
    out = []
    for t in range(length):
        gh = torch.baddbmm(b_hh[:, None, :], h, w_hh_t)
        i_r, i_z, i_n = gi[:, :, t].chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = n + z * (h - n)
        out.append(h)
    return torch.stack(out, dim=2)


def stacked_mlp(mlps: list[torch.nn.Sequential], x: torch.Tensor) -> torch.Tensor:
    """``mlps[i](x[i])`` for every seed at once: x (N, M, in) -> (N, M, out)."""
    linears = [[layer for layer in mlp if isinstance(layer, torch.nn.Linear)] for mlp in mlps]
    for depth in range(len(linears[0])):
        w = torch.stack([ls[depth].weight for ls in linears])  # (N, out, in)
        b = torch.stack([ls[depth].bias for ls in linears])  # (N, out)
        x = torch.baddbmm(b[:, None, :], x, w.transpose(1, 2))
        if depth < len(linears[0]) - 1:
            x = torch.relu(x)
    return x


def sample_from(mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u = mean + log_std.exp() * noise
    logp = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    logp = logp - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), logp


def fused_step(models: list[EpisodeSAC], gru: str = "block") -> None:
    """What ``[m.train_step() for m in models]`` does, in shared operations; ``gru``: "block" (one
    block-diagonal GRU, the hand-written unroll) or "batched" (the 2N GRUs batched, autograd)."""
    n = len(models)
    batches = [m.replay_buffer.sample(m.batch_size, m.rng).to(m.device) for m in models]
    beliefs = [b for m in models for b in (m.actor.belief, m.critic_belief)]
    inputs = [b.inputs(batch.slates, batch.clicks) for m, batch in zip(models, batches)
              for b in (m.actor.belief, m.critic_belief)]
    grus = [b.gru for b in beliefs]
    h = grus[0].hidden_size
    if gru == "block":
        out = unroll_gru(torch.cat(inputs, dim=2), block_diagonal_gates([g.weight_ih_l0 for g in grus]),
                         block_diagonal_gates([g.weight_hh_l0 for g in grus]),
                         stacked_gates([g.bias_ih_l0 for g in grus]), stacked_gates([g.bias_hh_l0 for g in grus]))
        bsz, length = out.shape[:2]
        per = out.view(bsz, length, 2 * n, h).permute(2, 0, 1, 3)  # (2N, B, L, H)
    else:
        per = batched_gru(torch.stack(inputs), torch.stack([g.weight_ih_l0 for g in grus]),
                          torch.stack([g.weight_hh_l0 for g in grus]), torch.stack([g.bias_ih_l0 for g in grus]),
                          torch.stack([g.bias_hh_l0 for g in grus]))
        bsz, length = per.shape[1:3]
    b_actor, b_critic = per[0::2], per[1::2]  # (N, B, L, H) each
    A = torch.stack([b.actions for b in batches])
    R = torch.stack([b.rewards for b in batches])
    done = torch.zeros_like(R)
    done[..., -1] = 1.0
    alpha = torch.stack([m.alpha for m in models])[:, None, None]
    gamma = models[0].gamma
    raw = stacked_mlp([m.actor.net for m in models], b_actor.reshape(n, bsz * length, h)).view(n, bsz, length, -1)
    mean, log_std = raw.chunk(2, dim=-1)
    log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
    shape = (bsz, length - 1, A.shape[-1])
    noise_next, noise_pi = [], []
    for m in models:  # each seed's own generator, in the order train_step draws
        noise_next.append(torch.randn(shape, generator=m.generator, device=m.device))
        noise_pi.append(torch.randn(shape, generator=m.generator, device=m.device))

    def q_values(heads: list, bel: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        inp = torch.cat([bel, act], dim=-1).reshape(n, -1, bel.shape[-1] + act.shape[-1])
        return stacked_mlp(heads, inp).view(n, bsz, length - 1)

    with torch.no_grad():
        a_next, logp_next = sample_from(mean[:, :, 1:], log_std[:, :, 1:], torch.stack(noise_next))
        bc_next = b_critic[:, :, 1:]
        q1_t = q_values([m.critic_target.q1 for m in models], bc_next, a_next)
        q2_t = q_values([m.critic_target.q2 for m in models], bc_next, a_next)
        target = R + gamma * (1.0 - done) * (torch.min(q1_t, q2_t) - alpha * logp_next)
    bc = b_critic[:, :, :-1]
    q1 = q_values([m.critic.q1 for m in models], bc, A)
    q2 = q_values([m.critic.q2 for m in models], bc, A)
    critic_loss = ((q1 - target) ** 2).mean(dim=(1, 2)) + ((q2 - target) ** 2).mean(dim=(1, 2))
    a_pi, logp = sample_from(mean[:, :, :-1], log_std[:, :, :-1], torch.stack(noise_pi))
    for m in models:
        m.critic.requires_grad_(False)
    q1_pi = q_values([m.critic.q1 for m in models], bc.detach(), a_pi)
    q2_pi = q_values([m.critic.q2 for m in models], bc.detach(), a_pi)
    for m in models:
        m.critic.requires_grad_(True)
    actor_loss = (alpha * logp - torch.min(q1_pi, q2_pi)).mean(dim=(1, 2))
    for m in models:
        m.critic_optimizer.zero_grad(set_to_none=True)
        m.actor_optimizer.zero_grad(set_to_none=True)
    (critic_loss + actor_loss).sum().backward()
    for m in models:
        m.critic_optimizer.step()
        m.actor_optimizer.step()
    for i, m in enumerate(models):
        m.finish_update(logp[i])


def max_difference(a: list[EpisodeSAC], b: list[EpisodeSAC]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        for mod in ("actor", "critic_belief", "critic", "critic_target"):
            for p, q in zip(getattr(x, mod).parameters(), getattr(y, mod).parameters()):
                worst = max(worst, float((p.detach() - q.detach()).abs().max()))
        worst = max(worst, float((x.log_alpha.detach() - y.log_alpha.detach()).abs()))
    return worst


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--gru", choices=["block", "batched"], default="batched",
                   help="how the 2N belief GRUs are fused (block: one block-diagonal GRU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the GPU measurement of issue #22)")
    args = p.parse_args()
    torch.set_num_threads(1)
    resolve_device(args.device)  # checked; on CUDA, float32 as on the CPU (no TF32)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    for n in args.seeds:
        separate = make_models(n, device=args.device)
        fused = copy.deepcopy(separate)
        for _ in range(3):
            for m in separate:
                m.train_step()
            fused_step(fused, args.gru)
        print(f"N={n}: after 3 steps, largest parameter difference fused vs separate {max_difference(separate, fused):.2e}",
              flush=True)
        rates = {"separate": [], "fused": []}
        for _ in range(args.rounds):
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                for m in separate:
                    m.train_step()
            sync()
            rates["separate"].append(args.steps * n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fused_step(fused, args.gru)
            sync()
            rates["fused"].append(args.steps * n / (time.perf_counter() - t0))
        sep, fus = np.median(rates["separate"]), np.median(rates["fused"])
        print(f"N={n} ({args.device}, gru {args.gru}): gradient steps/s per seed: separate {sep:.1f}, "
              f"fused {fus:.1f} (x{fus / sep:.2f}); all seeds together: separate {sep * n:.1f}, fused {fus * n:.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
