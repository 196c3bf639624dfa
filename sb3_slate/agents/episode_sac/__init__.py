"""Episode-replay recurrent SAC: the paper's training regime (docs/method.md sections 7-8).

The unit of replay is the whole episode. Each gradient step samples ``batch_size``
episodes, unrolls the belief GRUs over every episode's whole history (the reset
observation included) and trains on every turn of the batch at once:

- the actor and the critic each have their own item table and GRU; both are
  unrolled once per step, together, as one block-diagonal GRU (:func:`unroll_pair`),
  and one backward pass serves both losses; as in the reference implementation,
  the Polyak-averaged target network is the pair of Q heads, fed the critic's belief;
- critic: ``Q_i(b^c_t, a_t)`` against ``r_t + gamma (1 - d_t) [min_i Q'_i(b^c_{t+1},
  a') - alpha log pi(a' | b^a_{t+1})]`` with ``a' ~ pi(. | b^a_{t+1})``;
- actor: ``alpha log pi(a | b^a_t) - min_i Q_i(b^c_t, a)`` (critic belief detached);
- automatic entropy: ``alpha`` tuned towards ``-dim(A)``.

Collection runs ``n_envs`` users at once through a native vector env whose action
wrapper (GeMS, TopK...) maps ``[-1, 1]^A`` to slates, with the belief carried as a
recurrent state. ``gradient_steps`` updates per collected episode are spread
evenly over the turns of each batch of episodes (with 100 users of 100 turns, one
update per turn), so the policy that collects a batch is at most one batch of
``n_envs`` episodes old - the paper collects one user at a time, with a lag of one
episode. The first ``warmup_episodes`` episodes act uniformly at random.

With ``wolpertinger_items`` (SAC+WkNN) the actor's action is a target item per rank;
acting refines it as the window regime's :class:`~sb3_slate.agents.WolpertingerPolicy`
does (the ``k_neighbours`` nearest items of each rank's target, chosen rank by rank by
the first Q head on the critic's belief), so the recurrent state carries both beliefs;
the refined action is what the env receives and the buffer stores.

The API follows sb3-contrib's recurrent algorithms: ``learn``, ``save``, ``load``,
``predict(obs, state, episode_start, deterministic) -> (action, state)``.
"""

from .algorithm import EpisodeSAC
from .buffer import EpisodeBatch, EpisodeReplayBuffer
from .checkpoint import FORMAT
from .policies import SlateBelief, SquashedGaussianActor, TwinQ, WolpertingerRefiner, unroll_pair

__all__ = ["EpisodeSAC", "EpisodeBatch", "EpisodeReplayBuffer", "FORMAT", "SlateBelief", "SquashedGaussianActor",
           "TwinQ", "WolpertingerRefiner", "unroll_pair"]
