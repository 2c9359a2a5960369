"""malaflow: learn the electronic structure of materials on Dask and Zarr.

Public API; plugins are found through the ``malaflow`` entry-point group.
"""

from .errors import (
    CatalogError,
    ElectronCountError,
    InputFileError,
    MalaflowError,
    ParameterError,
    PluginError,
    StoreError,
)
from .hookspecs import hookimpl
from .snapshot import Snapshot
from .store import descriptor_array, list_descriptors, load_snapshot, open_descriptors, open_snapshot, write_snapshot
from .plugins import get_plugin, list_plugins
from .targets import Target, get_target
from .readers import Reader, read_snapshot
from .catalog import Catalog
from .observables import energy_terms, observables
from .physics.dos import eigenvalue_dos
from .descriptors import Descriptor, Structure
from .compute import compute_descriptors, descriptor_grid
from .trained_model import TrainedModel, load_model
from .training import TrainingConfig, train
from .hpo import StudyConfig, optimize
from .calculator import Calculator
from .ensemble import EnsembleModel, sigma_fields, spread
from .ionic import radial_distribution
from .montecarlo import metropolis
from .runtime import cluster

__version__ = "0.1.0"

__all__ = [
    "Calculator",
    "EnsembleModel",
    "sigma_fields",
    "spread",
    "metropolis",
    "radial_distribution",
    "Catalog",
    "Descriptor",
    "Structure",
    "TrainedModel",
    "TrainingConfig",
    "StudyConfig",
    "optimize",
    "load_model",
    "train",
    "cluster",
    "compute_descriptors",
    "descriptor_grid",
    "energy_terms",
    "eigenvalue_dos",
    "CatalogError",
    "ElectronCountError",
    "InputFileError",
    "MalaflowError",
    "ParameterError",
    "PluginError",
    "Reader",
    "Snapshot",
    "StoreError",
    "Target",
    "get_target",
    "descriptor_array",
    "get_plugin",
    "hookimpl",
    "list_descriptors",
    "list_plugins",
    "observables",
    "load_snapshot",
    "open_descriptors",
    "open_snapshot",
    "read_snapshot",
    "write_snapshot",
]
