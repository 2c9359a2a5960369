"""Reader plugins as xarray backends, for users who never import malaflow.

``xr.open_dataset("Be.out", engine="malaflow_qe", ldos="cubes/")`` runs the ``qe``
reader plugin and returns the snapshot's dataset. A reader plugin exposes itself by
declaring ``backend_for(ItsReader)`` in the ``xarray.backends`` entry-point group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import xarray as xr
from xarray.backends import BackendEntrypoint


class ReaderBackend(BackendEntrypoint):
    reader_name: ClassVar[str] = ""
    open_dataset_parameters = ("filename_or_obj", "drop_variables")

    def open_dataset(self, filename_or_obj: Any, *, drop_variables: Any = None, **options: Any) -> xr.Dataset:
        from .readers import read_snapshot

        ds = read_snapshot(Path(filename_or_obj), reader=self.reader_name, **options).to_dataset()
        return ds.drop_vars(drop_variables or [], errors="ignore")

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        from .plugins import get_plugin

        try:
            return get_plugin("readers", self.reader_name)().can_read(Path(filename_or_obj))
        except Exception:
            return False


def backend_for(reader: type) -> type[ReaderBackend]:
    """The xarray backend class of a reader plugin class."""
    return type(f"{reader.__name__}Backend", (ReaderBackend,),
                {"reader_name": reader.name, "description": reader.description})
