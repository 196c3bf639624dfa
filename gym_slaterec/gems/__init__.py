"""GeMS: the slate VAE of Deffayet et al. (WSDM 2023), docs/method.md section 6.

- :class:`GeMSConfig` hyper-parameters; :class:`GeMS` the torch module;
- :func:`train_gems` pre-training on a :class:`~gym_slaterec.logged_data.LoggedDataset`;
- :class:`GeMSCheckpoint` one file with weights, bounds and provenance.
"""

from .checkpoint import GeMSCheckpoint
from .config import GeMSConfig
from .model import GeMS
from .train import compute_action_bounds, train_gems

__all__ = ["GeMS", "GeMSCheckpoint", "GeMSConfig", "compute_action_bounds", "train_gems"]
