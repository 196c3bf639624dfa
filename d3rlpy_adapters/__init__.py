"""Offline RL for SlateRec: datasets from any policy, export to d3rlpy / Minari, d3rlpy training.

- :mod:`.collect` ``collect(env_id, policy, episodes, seed, out)``: episodes of a reference
  policy or an agent run (``slaterec collect``), in the logged-data format plus
  ``rewards`` / ``actions`` extras and the policy's provenance;
- :mod:`.export` ``export_d3rlpy`` / ``load_d3rlpy``: d3rlpy ``MDPDataset`` with flat
  history-window observations and GeMS latent actions in [-1, 1], with a provenance
  sidecar naming the GeMS (``slaterec export``); :mod:`.minari_export` the same as Minari;
- :mod:`.encoders` ``SlateHistoryEncoderFactory``: item embeddings + GRU belief for d3rlpy;
- :mod:`.offline` ``train_offline``: TD3+BC, CQL, IQL, BCQ, BC evaluated online through
  the GeMS wrapper on the protocol's fixed users (``slaterec train-offline``).

Heavy dependencies (torch, d3rlpy, minari) load only when those modules are imported.
"""

import sys as _sys
import types as _types


def _quiet_legacy_gym() -> None:
    """d3rlpy imports the unmaintained ``gym`` package, which prints a deprecation
    notice (from ``gym_notices``) on every import. SlateRec uses Gymnasium only, so
    an empty notice table is installed before gym can be imported."""
    if "gym" in _sys.modules or "gym_notices.notices" in _sys.modules:
        return
    stub = _types.ModuleType("gym_notices.notices")
    stub.notices = {}  # type: ignore[attr-defined]
    _sys.modules["gym_notices.notices"] = stub


_quiet_legacy_gym()
