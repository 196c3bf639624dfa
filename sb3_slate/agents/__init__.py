"""Agents in SB3's structure: algorithm classes with their policies."""

from .episode_reinforce import EpisodeREINFORCE
from .episode_sac import EpisodeReplayBuffer, EpisodeSAC
from .episode_slateq import EpisodeSlateQ, PrivilegedUserState
from .reference import ReferenceAgent
from .reinforce import REINFORCE, SoftmaxSlatePolicy
from .sac import SlateSAC
from .slateq import PrivilegedRelevance, SlateQ, SlateQPolicy
from .wolpertinger import NearestItemPerRank, WolpertingerPolicy, WolpertingerSAC

__all__ = [
    "EpisodeREINFORCE", "EpisodeReplayBuffer", "EpisodeSAC", "EpisodeSlateQ", "NearestItemPerRank", "PrivilegedRelevance", "PrivilegedUserState", "REINFORCE", "ReferenceAgent", "SlateQ", "SlateQPolicy",
    "SlateSAC", "SoftmaxSlatePolicy", "WolpertingerPolicy", "WolpertingerSAC",
]
