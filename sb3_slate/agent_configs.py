"""Typed configurations of the belief and of every agent: the only code defaults.

Each field carries its documentation and its check (``metadata``); a configuration
read from YAML, ``--set`` or a run's ``config.json`` goes through :meth:`AgentConfig.from_dict`,
which refuses unknown keys and ill-typed values by name. Keys say what they count:
``batch_transitions`` / ``buffer_transitions`` in the regimes that replay transitions,
``batch_episodes`` / ``buffer_episodes`` / ``updates_per_episode`` in the episode regime.

``slaterec methods METHOD`` prints these fields with their defaults and documentation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .settings import (
    OPTIONAL_POSITIVE, BOOL, DISCOUNT, ENT_COEF, LAYERS, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, SMOOTHING,
    TARGET_ENTROPY, UNIT, Check, one_of,
)


def setting(default: Any, doc: str, check: tuple[str, Check]) -> Any:
    """A config field: ``default`` (a list is copied per instance), its documentation and check."""
    meta = {"doc": doc, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class AgentConfig:
    """Base of the typed configuration sections (``agent.*``, ``belief.*``)."""

    #: old key -> new key (configurations written before the keys said what they count)
    renamed: ClassVar[dict[str, str]] = {}
    #: what the code before typed configs used for a key a ``config.json`` lacked (new names)
    legacy_defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Any, section: str = "agent", owner: str = "") -> "AgentConfig":
        """The config of ``values`` (a mapping), every key and value checked, named on error."""
        if isinstance(values, cls):
            values.check(section)
            return values
        if not isinstance(values, dict):
            raise ValueError(f"{section} must be a mapping of settings, got {values!r}")
        known = {f.name for f in cls.settings()}
        for key in values:
            if key in known:
                continue
            where = f" for {owner}" if owner else ""
            if key in cls.renamed:
                raise ValueError(f"{section}.{key} is now {section}.{cls.renamed[key]}{where} "
                                 f"({_doc(cls, cls.renamed[key])})")
            raise ValueError(f"unknown setting {section}.{key}{where} (its {section} settings: "
                             f"{', '.join(sorted(known)) or 'none'})")
        cfg = cls(**values)
        cfg.check(section)
        return cfg

    @classmethod
    def from_legacy(cls, values: dict[str, Any]) -> "AgentConfig":
        """A section of a ``config.json`` written before typed configs: old names renamed, absent
        keys filled with the defaults that code used."""
        out = {**cls.legacy_defaults}
        out.update({cls.renamed.get(k, k): v for k, v in values.items()})
        return cls.from_dict(out)

    def check(self, section: str = "agent") -> None:
        for f in self.settings():
            what, ok = f.metadata["check"]
            value = getattr(self, f.name)
            if not ok(value):
                raise ValueError(f"{section}.{f.name} must be {what}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "AgentConfig":
        return dataclasses.replace(self, **changes)


def _doc(cls: type, name: str) -> str:
    return next((f.metadata["doc"] for f in dataclasses.fields(cls) if f.name == name), "")


# ------------------------------------------------------------------ belief
@dataclass
class BeliefConfig(AgentConfig):
    """The GRU belief over the history of slates and clicks (docs/method.md section 7)."""

    item_init: str = setting("auto", "initial item table of the belief: auto (the method's own: GeMS's, the "
                             "ideal or MF table it acts with, else scratch), scratch, ideal, mf or gems",
                             one_of("auto", "scratch", "ideal", "mf", "gems"))
    freeze: bool = setting(False, "keep the belief's item table fixed during training", BOOL)
    hidden_size: int = setting(20, "belief dimension: GRU (or RecurrentPPO LSTM) hidden size (paper: 20)", POSITIVE_INT)
    embedding_dim: int = setting(20, "dimension of a scratch item table (a given table keeps its own)", POSITIVE_INT)
    scratch_std: Any = setting(None, "standard deviation of a scratch item table's N(0, std^2) entries (null: "
                               "1/sqrt(embedding_dim); the reference code's: 1)", OPTIONAL_POSITIVE)


# ------------------------------------------------------------------ SAC family
_GAMMA = ("discount factor (paper: 0.8)", DISCOUNT)
_NET = ("hidden layer sizes of the policy and Q heads over the belief (paper: [256])", LAYERS)


@dataclass
class WindowSACConfig(AgentConfig):
    """SAC on (history window, action) transitions (SB3's SAC, distinct actor learning rate)."""

    renamed: ClassVar[dict[str, str]] = {"batch_size": "batch_transitions", "buffer_size": "buffer_transitions"}
    legacy_defaults: ClassVar[dict[str, Any]] = {"batch_transitions": 256, "buffer_transitions": 1_000_000,
                                                 "warmup_episodes": 0}

    gamma: float = setting(0.8, *_GAMMA)
    tau: float = setting(0.002, "target-network smoothing coefficient (paper: 0.002)", SMOOTHING)
    learning_rate: float = setting(1e-3, "learning rate of the Q networks and the entropy coefficient", POSITIVE)
    actor_learning_rate: float = setting(3e-3, "learning rate of the policy (paper: 3e-3)", POSITIVE)
    net_arch: list = setting([256], *_NET)
    ent_coef: Any = setting("auto", "entropy coefficient: a number, 'auto' (learned, starts at 1) or "
                            "'auto_<initial value>'", ENT_COEF)
    target_entropy: Any = setting("auto", "target entropy of a learned coefficient ('auto': -action dimension)",
                                  TARGET_ENTROPY)
    batch_transitions: int = setting(64, "transitions per gradient batch (reference code: 20 episodes)", POSITIVE_INT)
    buffer_transitions: int = setting(100_000, "transitions kept in the replay memory (100,000: the newest 1,000 "
                                      "episodes of 100 turns)", POSITIVE_INT)
    warmup_episodes: int = setting(40, "episodes of random actions before learning starts", NON_NEGATIVE_INT)
    train_freq: int = setting(1, "vector-env steps (n_envs turns each) between updates", POSITIVE_INT)
    gradient_steps: int = setting(1, "gradient steps per update", POSITIVE_INT)


@dataclass
class EpisodeSACConfig(AgentConfig):
    """The paper's episode-replay recurrent SAC (beliefs unrolled over whole episodes)."""

    renamed: ClassVar[dict[str, str]] = {"batch_size": "batch_episodes", "buffer_size": "buffer_episodes",
                                         "gradient_steps": "updates_per_episode"}
    legacy_defaults: ClassVar[dict[str, Any]] = {"batch_episodes": 20, "buffer_episodes": 10_000,
                                                 "warmup_episodes": 2_000, "updates_per_episode": 1}

    gamma: float = setting(0.8, *_GAMMA)
    tau: float = setting(0.002, "target-network smoothing coefficient (paper: 0.002)", SMOOTHING)
    learning_rate: float = setting(1e-3, "learning rate of the Q networks, the critic belief and the entropy "
                                   "coefficient", POSITIVE)
    actor_learning_rate: float = setting(3e-3, "learning rate of the policy and its belief (paper: 3e-3)", POSITIVE)
    net_arch: list = setting([256], *_NET)
    ent_coef: Any = setting("auto", "entropy coefficient: a number, 'auto' or 'auto_<initial value>'", ENT_COEF)
    target_entropy: Any = setting("auto", "target entropy of a learned coefficient ('auto': -action dimension)",
                                  TARGET_ENTROPY)
    batch_episodes: int = setting(20, "whole episodes per gradient batch (paper: 20)", POSITIVE_INT)
    buffer_episodes: int = setting(10_000, "episodes kept in the replay memory (paper: 10,000)", POSITIVE_INT)
    warmup_episodes: int = setting(2_000, "episodes of random actions before learning starts (paper: 2,000)",
                                   NON_NEGATIVE_INT)
    updates_per_episode: float = setting(1, "gradient steps per collected episode (paper: 1)", POSITIVE)
    alpha_loss: str = setting("log_alpha", "loss of a learned entropy coefficient: log_alpha (SAC's) or alpha (the "
                              "reference code's: the gradient scaled by alpha, and alpha 0.2 at the first step)",
                              one_of("log_alpha", "alpha"))
    warmup_actions: str = setting("full_box", "warm-up actions: uniform over the whole action box (full_box) or its "
                                  "middle half (middle_half: the reference code's)", one_of("full_box", "middle_half"))


_K = (10, "k' candidate items per rank (nearest neighbours of the proto-action)", POSITIVE_INT)
_EMB = ("mf", "item table of the k-NN lookup: mf (needs --mf) or ideal (privileged)", one_of("mf", "ideal"))


@dataclass
class WindowWkNNConfig(WindowSACConfig):
    """SAC+WkNN (Wolpertinger) on transitions."""

    k_neighbours: int = setting(*_K)
    embeddings: str = setting(*_EMB)


#: SAC+WkNN switch -> (the paper's reading, the reference code's)
WKNN_SWITCHES: dict[str, tuple[str, str]] = {
    "item_source": ("configured", "belief_copy"),
    "critic_slate": ("shown", "observed"),
    "layout": ("rank_major", "dim_major"),
    "scorer": ("critic", "target_actor"),
    "fill": ("nearest", "candidate"),
    "next_action": ("proto", "refined"),
    "warmup": ("uniform", "random_items"),
}


def reading_switch(switches: dict[str, tuple[str, str]], name: str, doc: str) -> Any:
    """A config field that reads one difference the paper's way (default) or the reference code's."""
    paper, reference = switches[name]
    return setting(paper, f"{doc}: {paper} (the paper's reading) or {reference} (the reference code's)",
                   one_of(paper, reference))


def _switch(name: str, doc: str) -> Any:
    return reading_switch(WKNN_SWITCHES, name, doc)


@dataclass
class EpisodeWkNNConfig(EpisodeSACConfig):
    """SAC+WkNN (Wolpertinger) in the episode-replay regime; the ``wknn_*`` switches are the
    differences between the reference code and the paper's text (docs/method.md section 7)."""

    k_neighbours: int = setting(*_K)
    embeddings: str = setting(*_EMB)
    wknn_item_source: str = _switch("item_source", "the k-NN table: the configured one (embeddings) or a frozen "
                                    "copy of the critic belief's initial table")
    wknn_critic_slate: str = _switch("critic_slate", "the slate the critic scores at turn t: the one shown, or the "
                                     "observation's (the previous turn's)")
    wknn_layout: str = _switch("layout", "how the k-NN lookup reads the k*d action: k targets of d values, or "
                               "(d, k) while the Q input and the box read (k, d)")
    wknn_scorer: str = _switch("scorer", "what scores the candidates: Q1 on the critic's belief, or the target "
                               "Q1 on the actor's belief")
    wknn_fill: str = _switch("fill", "the later ranks while a rank is chosen: their nearest items, or the "
                             "candidate repeated")
    wknn_next_action: str = _switch("next_action", "the next action in the critic's target: the actor's sample, "
                                    "or the slate it refines to")
    wknn_warmup: str = _switch("warmup", "warm-up actions: uniform targets (nearest items), or uniformly random "
                               "item slates")

    def switches(self) -> dict[str, str]:
        return {name.removeprefix("wknn_"): getattr(self, name) for name in
                (f.name for f in dataclasses.fields(self)) if name.startswith("wknn_")}

    def switched(self) -> bool:
        """Whether any switch takes the reference code's reading (the run then uses EpisodeWkNN)."""
        return any(value != WKNN_SWITCHES[name][0] for name, value in self.switches().items())


# ------------------------------------------------------------------ other online agents
@dataclass
class ReinforceConfig(AgentConfig):
    """REINFORCE with a softmax over the items (k samples with replacement)."""

    gamma: float = setting(0.8, *_GAMMA)
    learning_rate: float = setting(1e-3, "learning rate of the networks", POSITIVE)
    net_arch: list = setting([256], "hidden layer sizes of the policy head", LAYERS)
    ent_coef: float = setting(0.0, "weight of the entropy bonus in the loss", NON_NEGATIVE)


@dataclass
class EpisodeReinforceConfig(AgentConfig):
    """REINFORCE+SoftMax in the paper's regime: full-history GRU belief, whole episodes per
    update, random warm-up episodes (sb3_slate.agents.episode_reinforce)."""

    gamma: float = setting(0.8, *_GAMMA)
    learning_rate: float = setting(3e-3, "learning rate of the belief and the policy (reference code: 3e-3)", POSITIVE)
    net_arch: list = setting([256], "hidden layer sizes of the policy head", LAYERS)
    batch_episodes: int = setting(1, "whole episodes per update (reference code: 1)", POSITIVE_INT)
    warmup_episodes: int = setting(2_000, "episodes of random item slates first (paper: 2,000)", NON_NEGATIVE_INT)
    loss: str = setting("sampled_slate", "the log-probability the return weighs: sampled_slate (the slate taken, "
                        "the policy gradient) or first_click (the reference code's: log(1 - (1 - pi(i))^k) of the "
                        "first clicked item of the observation the belief has just read)",
                        one_of("sampled_slate", "first_click"))
    train_on_warmup: bool = setting(False, "also update on the random warm-up episodes (the reference code does; "
                                    "an on-policy gradient should not)", BOOL)


@dataclass
class SlateQConfig(AgentConfig):
    """SlateQ (privileged: true relevance and click model)."""

    renamed: ClassVar[dict[str, str]] = {"batch_size": "batch_transitions", "buffer_size": "buffer_transitions"}

    gamma: float = setting(0.8, *_GAMMA)
    learning_rate: float = setting(1e-3, "learning rate of the item Q network", POSITIVE)
    tau: float = setting(0.005, "target-network smoothing coefficient", SMOOTHING)
    net_arch: list = setting([256], "hidden layer sizes of the item Q head", LAYERS)
    batch_transitions: int = setting(64, "transitions per gradient batch", POSITIVE_INT)
    buffer_transitions: int = setting(50_000, "transitions kept in the replay memory", POSITIVE_INT)
    warmup_episodes: int = setting(10, "episodes of random slates before learning starts", NON_NEGATIVE_INT)
    exploration_fraction: float = setting(0.2, "fraction of training over which epsilon decays", UNIT)
    exploration_final_eps: float = setting(0.05, "epsilon at the end of its decay", UNIT)
    train_freq: int = setting(1, "vector-env steps between updates", POSITIVE_INT)
    gradient_steps: int = setting(1, "gradient steps per update", POSITIVE_INT)


#: SlateQ switch (paper regime) -> (the paper's reading, the reference code's)
SLATEQ_SWITCHES: dict[str, tuple[str, str]] = {
    "learn_from": ("shown_clicks", "observed_first_click"),
    "next_slate_by": ("online", "target"),
    "relevance": ("next_turn", "reference"),
    "penalty_check": ("per_slate", "whole_batch"),
}


def _slateq_switch(name: str, doc: str) -> Any:
    return reading_switch(SLATEQ_SWITCHES, name, doc)


@dataclass
class EpisodeSlateQConfig(AgentConfig):
    """SlateQ in the paper's regime: full-history GRU belief, whole episodes replayed, random
    warm-up episodes, exponential epsilon decay (sb3_slate.agents.episode_slateq); the four
    switches are the differences between the reference code and the paper's text."""

    gamma: float = setting(0.8, *_GAMMA)
    tau: float = setting(0.002, "target-network smoothing coefficient (reference code: 0.002)", SMOOTHING)
    learning_rate: float = setting(1e-3, "learning rate of the belief and the item Q network", POSITIVE)
    net_arch: list = setting([256], "hidden layer sizes of the item Q head (paper: [256])", LAYERS)
    batch_episodes: int = setting(20, "whole episodes per gradient batch (reference code: 20)", POSITIVE_INT)
    buffer_episodes: int = setting(10_000, "episodes kept in the replay memory (reference code: 10,000)",
                                   POSITIVE_INT)
    warmup_episodes: int = setting(2_000, "episodes of random item slates first (paper: 2,000)", NON_NEGATIVE_INT)
    updates_per_episode: float = setting(1, "gradient steps per collected episode (reference code: 1)", POSITIVE)
    epsilon_start: float = setting(1.0, "exploration rate before any episode", UNIT)
    epsilon_end: float = setting(0.01, "exploration rate it decays to", UNIT)
    epsilon_decay_episodes: float = setting(1000, "episodes (warm-up included) per e-fold of the decay",
                                            POSITIVE)
    learn_from: str = _slateq_switch("learn_from", "the items whose values are regressed at turn t: every item "
                                     "clicked in the slate shown, or the first clicked item of the observation (the "
                                     "previous turn's slate)")
    next_slate_by: str = _slateq_switch("next_slate_by", "the network that ranks the target's next slate")
    relevance: str = _slateq_switch("relevance", "the relevance acting and targets use: the true next-turn one, or "
                                    "the reference simulator's (acting: its boredom slice; targets: no boredom)")
    penalty_check: str = _slateq_switch("penalty_check", "when a target slate's attractiveness is divided by the "
                                        "diversity penalty: that slate crowded, or the batch's slates together")

    def switches(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in SLATEQ_SWITCHES}


@dataclass
class NoAgentConfig(AgentConfig):
    """Reference policies (random, oracle): nothing to configure."""


# ------------------------------------------------------------------ sb3-contrib algorithms
@dataclass
class RecurrentPPOConfig(AgentConfig):
    """sb3-contrib's RecurrentPPO: its LSTM (hidden size ``belief.hidden_size``) is the belief over turns."""

    gamma: float = setting(0.8, *_GAMMA)
    learning_rate: float = setting(3e-4, "learning rate of the networks", POSITIVE)
    rollout_turns: int = setting(100, "turns collected per parallel user between updates (n_envs x this per "
                                 "update)", POSITIVE_INT)
    batch_transitions: int = setting(400, "transitions per minibatch (whole sequences of the rollout)", POSITIVE_INT)
    epochs: int = setting(10, "passes over each rollout", POSITIVE_INT)
    gae_lambda: float = setting(0.95, "lambda of generalised advantage estimation", UNIT)
    clip_range: float = setting(0.2, "PPO clipping range", POSITIVE)
    ent_coef: float = setting(0.0, "weight of the entropy bonus in the loss", NON_NEGATIVE)
    net_arch: list = setting([256], "hidden layer sizes of the policy and value heads over the LSTM", LAYERS)


@dataclass
class ContribOffPolicyConfig(AgentConfig):
    """What sb3-contrib's off-policy algorithms share on history-window transitions."""

    gamma: float = setting(0.8, *_GAMMA)
    learning_rate: float = setting(1e-3, "learning rate (actor, critics, entropy coefficient)", POSITIVE)
    net_arch: list = setting([256], *_NET)
    ent_coef: Any = setting("auto", "entropy coefficient: a number, 'auto' or 'auto_<initial value>'", ENT_COEF)
    batch_transitions: int = setting(64, "transitions per gradient batch", POSITIVE_INT)
    buffer_transitions: int = setting(100_000, "transitions kept in the replay memory", POSITIVE_INT)
    warmup_episodes: int = setting(40, "episodes of random actions before learning starts", NON_NEGATIVE_INT)
    train_freq: int = setting(1, "vector-env steps between updates", POSITIVE_INT)
    gradient_steps: int = setting(1, "gradient steps per update", POSITIVE_INT)


@dataclass
class TQCConfig(ContribOffPolicyConfig):
    """sb3-contrib's TQC (truncated quantile critics) on history-window transitions."""

    tau: float = setting(0.002, "target-network smoothing coefficient", SMOOTHING)
    n_quantiles: int = setting(25, "quantiles per critic", POSITIVE_INT)
    n_critics: int = setting(2, "critic networks", POSITIVE_INT)
    top_quantiles_to_drop_per_net: int = setting(2, "largest quantiles dropped per critic in the target",
                                                 NON_NEGATIVE_INT)


@dataclass
class CrossQConfig(ContribOffPolicyConfig):
    """sb3-contrib's CrossQ (batch-renormalised critics, no target network) on history-window transitions."""

    policy_delay: int = setting(3, "critic updates per actor update", POSITIVE_INT)


def describe(cls: type[AgentConfig], section: str = "agent") -> list[tuple[str, Any, str]]:
    """(key, default, documentation) of every field of ``cls``."""
    inst = cls()
    return [(f"{section}.{f.name}", getattr(inst, f.name), f.metadata["doc"]) for f in dataclasses.fields(cls)]


def acting_only(cfg: AgentConfig) -> AgentConfig:
    """``cfg`` with the smallest replay memory (a model rebuilt to act, not to train)."""
    return cfg.replace(**{name: 1 for name in ("buffer_transitions",) if hasattr(cfg, name)})


__all__ = [
    "AgentConfig", "BeliefConfig", "WindowSACConfig", "EpisodeSACConfig", "WindowWkNNConfig", "EpisodeWkNNConfig",
    "EpisodeReinforceConfig", "EpisodeSlateQConfig", "SLATEQ_SWITCHES", "WKNN_SWITCHES",
    "ReinforceConfig", "SlateQConfig", "NoAgentConfig", "RecurrentPPOConfig", "TQCConfig", "CrossQConfig",
    "describe", "acting_only", "setting",
]
