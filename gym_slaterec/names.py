"""Name templates: ``log_{seed}/{method}/{tag}_{date}`` or
``GeMS_{env}_latentdim{latent_dim}_beta{lambda_kl}_lambdaclick{lambda_click}_seed{seed}``, filled
with an artifact's fields (its resolved configuration, dotted, plus ``env``, ``env_id``,
``date`` and ``time``); the result is a relative path inside the workspace."""

from __future__ import annotations

import datetime as dt
import re
import string
from pathlib import Path
from typing import Any, Optional


def flat_fields(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested configuration as dotted fields: ``{"agent": {"gamma": 0.8}}`` -> ``{"agent.gamma": 0.8}``."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in flat_fields(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def common_fields(env_id: Optional[str]) -> dict[str, Any]:
    """``env`` (short), ``env_id``, ``date`` (YYYYmmdd) and ``time`` (HHMMSS), UTC."""
    now = dt.datetime.now(dt.timezone.utc)
    return {"env": str(env_id or "").split("/")[-1].split("-v")[0], "env_id": env_id or "",
            "date": now.strftime("%Y%m%d"), "time": now.strftime("%H%M%S")}


def fill_template(template: str, fields: dict[str, Any]) -> str:
    """``template`` with ``fields``; an unknown field or a name leaving the workspace is refused."""
    parts = []
    for literal, field_name, spec, conversion in string.Formatter().parse(template):
        parts.append(literal)
        if field_name is None:
            continue
        if field_name not in fields:
            raise ValueError(f"name template {template!r}: unknown field {{{field_name}}}; available: "
                             f"{', '.join(sorted(fields))}")
        value = fields[field_name]
        parts.append(format(value if conversion is None else repr(value) if conversion == "r" else str(value), spec or ""))
    name = "".join(parts)
    if not name or Path(name).is_absolute() or ".." in Path(name).parts or any(
            not re.fullmatch(r"[A-Za-z0-9._=+-]+", part) for part in Path(name).parts):
        raise ValueError(f"name template {template!r} gives {name!r}: a relative path of letters, digits and "
                         "'._=+-' inside the workspace is needed")
    return name


def workspace(root: Optional[Any] = None) -> Path:
    """``root``, else ``$SLATEREC_WORKSPACE``, else ``./runs``."""
    import os

    return Path(root if root is not None else os.environ.get("SLATEREC_WORKSPACE", "runs"))
