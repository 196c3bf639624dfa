"""YAML as researchers write numbers: ``1e-3`` is a float.

PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-3``) and ``1e-3`` is the string
"1e-3"; every configuration file, ``--set`` value and grid of this package is read with
:func:`load`, which adds YAML 1.2's float forms and is otherwise ``yaml.safe_load``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    pass


_FLOAT = re.compile(r"""^(?:
    [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
   |[-+]?\.(?:inf|Inf|INF)
   |\.(?:nan|NaN|NAN))$""", re.X)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load(text: str) -> Any:
    """``yaml.safe_load(text)`` with ``1e-3``, ``5E+4`` and ``-2e5`` read as floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
