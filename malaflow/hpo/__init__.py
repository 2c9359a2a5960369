"""Hyperparameter optimization with Optuna, trials as Dask tasks.

A study is a search space over a base training config (any key of it; model and
descriptor parameters by dotted keys such as ``model.params.layers``), an objective
measured on the validation snapshots (band-energy error in meV/atom, or the LDOS mean
squared error), and a persistent Optuna storage in the study folder. A study stopped at
any point — even killed in the middle of a trial — goes on where it was when run again:
the interrupted trial is retried with the same parameters and continues from its
training checkpoint.

Trials train in segments of ``report_every`` epochs, each segment one task; after each
the model is scored on the validation snapshots and the score reported, so that the
pruner (median or successive halving) can stop a trial doing worse than the others did
at that epoch.

Modules: :mod:`.space` (the search space and the study config), :mod:`.trials` (running
one trial's segments), :mod:`.study` (the Optuna study and the driver), :mod:`.report`
(table, plots, HTML page). Only Optuna's public API is used.
"""


from .report import StudyResult
from .space import OBJECTIVES, Dimension, StudyConfig
from .study import open_study, optimize
from .trials import score

__all__ = ["OBJECTIVES", "Dimension", "StudyConfig", "StudyResult", "open_study", "optimize", "score"]
