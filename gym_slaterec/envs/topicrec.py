"""The six published TopicRec environments (docs/method.md section 4).

Each class fixes the item embeddings, the click model and the diversity penalty;
everything else is shared and documented on :class:`SlateRecEnv`.
"""

from __future__ import annotations

from .slate_env import SlateRecEnv
from .vector_env import SlateRecVectorEnv

_SHARED = """

    ## Spaces, rewards, episode end
    See :class:`gym_slaterec.envs.slate_env.SlateRecEnv`: action and observation
    are slates of ``k = 10`` item ids out of ``N = 1000`` (plus the clicks in the
    observation), the reward is the number of clicks, an episode terminates after
    100 turns.
"""


def _doc(embeddings: str, clicks: str, penalty: str) -> str:
    return (
        f"TopicRec with {embeddings}\n\n    Click model: {clicks}\n\n    Diversity: {penalty}\n" + _SHARED
    )


_TOPDOWN = "TopDown: the item at rank r is examined with probability 0.85**r."
_MIXED = (
    "Mixed: rank r is examined with probability 0.5 * 0.85**r + 0.5 * 0.85**(k-1-r)\n"
    "    (users read from the top or from the bottom)."
)
_NO_PENALTY = "no penalty (diversity_penalty = 1)."
_PENALTY = (
    "when 4 or more items of the slate share a main topic, every item's\n"
    "    attractiveness is divided by 3 (diversity_penalty = 3)."
)
_FOCUSED = "focused item embeddings: each item is concentrated on a few topics."
_DIFFUSE = "diffuse item embeddings: each item spreads over many topics."


class FocusedTopDownEnv(SlateRecEnv):
    __doc__ = _doc(_FOCUSED, _TOPDOWN, _NO_PENALTY)
    env_id = "SlateRec/FocusedTopDown-v0"


class FocusedMixedEnv(SlateRecEnv):
    __doc__ = _doc(_FOCUSED, _MIXED, _NO_PENALTY)
    env_id = "SlateRec/FocusedMixed-v0"


class FocusedDivPenEnv(SlateRecEnv):
    __doc__ = _doc(_FOCUSED, _MIXED, _PENALTY)
    env_id = "SlateRec/FocusedDivPen-v0"


class DiffuseTopDownEnv(SlateRecEnv):
    __doc__ = _doc(_DIFFUSE, _TOPDOWN, _NO_PENALTY)
    env_id = "SlateRec/DiffuseTopDown-v0"


class DiffuseMixedEnv(SlateRecEnv):
    __doc__ = _doc(_DIFFUSE, _MIXED, _NO_PENALTY)
    env_id = "SlateRec/DiffuseMixed-v0"


class DiffuseDivPenEnv(SlateRecEnv):
    __doc__ = _doc(_DIFFUSE, _MIXED, _PENALTY)
    env_id = "SlateRec/DiffuseDivPen-v0"


SINGLE_ENVS = {
    cls.env_id: cls
    for cls in (FocusedTopDownEnv, FocusedMixedEnv, FocusedDivPenEnv, DiffuseTopDownEnv, DiffuseMixedEnv, DiffuseDivPenEnv)
}


def make_vector_env_class(env_id: str) -> type:
    """The vector env class of ``env_id`` (same preset, batched)."""
    name = SINGLE_ENVS[env_id].__name__.replace("Env", "VectorEnv")
    return type(name, (SlateRecVectorEnv,), {"env_id": env_id, "__doc__": SINGLE_ENVS[env_id].__doc__})


VECTOR_ENVS = {env_id: make_vector_env_class(env_id) for env_id in SINGLE_ENVS}
