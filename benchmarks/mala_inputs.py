"""MALA's side of the benchmarks: its Be2 settings, and its LAMMPS input script.

MALA 1.4.0 as installed from PyPI lacks the LAMMPS input scripts its descriptor code
runs (``mala/descriptors/inputfiles/in.bgrid_n1.python`` for a serial grid bispectrum of
one element). :func:`install` writes an equivalent script — ours, from the description
of what MALA expects: the variables it passes with ``-var`` (ngridx ngridy ngridz twojmax
rcutfac switch atom_config_fname), metal units, the data file it writes, a compute
``sna/grid`` named ``bgrid`` with MALA's fixed settings — where MALA looks for it, so that
MALA runs as its own users run it."""

from __future__ import annotations

from pathlib import Path

BGRID_N1 = """\
# SNAP bispectrum on the grid for one element, as MALA 1.4.0 runs it (written by malaflow's
# benchmarks: MALA's PyPI wheel does not ship its own input scripts).
units metal
atom_style atomic
boundary p p p
read_data ${atom_config_fname}
mass * 1.0
variable radelem equal 0.5
variable rcutneigh equal 2.0*${rcutfac}*${radelem}
pair_style zero ${rcutneigh}
pair_coeff * *
compute bgrid all sna/grid grid ${ngridx} ${ngridy} ${ngridz} ${rcutfac} 0.99363 ${twojmax} ${radelem} 1.0 &
    rmin0 0.0 bzeroflag 0 quadraticflag 0 switchflag ${switch}
thermo_style custom step temp ke pe vol c_bgrid[1][1]
thermo_modify norm yes
run 0
"""


def install() -> str:
    """Write the script where MALA looks for it unless one is there; say what was done."""
    import mala

    folder = Path(mala.__file__).parent / "descriptors" / "inputfiles"
    target = folder / "in.bgrid_n1.python"
    if target.is_file():
        return f"{target} present"
    folder.mkdir(parents=True, exist_ok=True)
    target.write_text(BGRID_N1)
    return f"wrote {target} (malaflow's equivalent of MALA's script)"


def be2_parameters(epochs: int):
    """MALA Parameters for the Be2 data: its LDOS grid (11 energies from −5 eV, 2.5 eV
    apart), the bispectrum (twojmax 10, cutoff 4.67637 Å), mini-batches of 40."""
    return mala_parameters(epochs, energies=[-5.0 + 2.5 * k for k in range(11)])


def mala_parameters(epochs: int, energies, twojmax: int = 10, cutoff: float = 4.67637):
    """MALA Parameters for an LDOS on the evenly spaced grid ``energies`` (eV) from bispectrum
    features (``twojmax``, cutoff in Å), mini-batches of 40 (its examples')."""
    import mala as m

    p = m.Parameters()
    p.verbosity = 0
    p.running.max_number_epochs = epochs
    p.running.mini_batch_size = 40
    p.targets.target_type = "LDOS"
    p.targets.ldos_gridsize = len(energies)
    p.targets.ldos_gridspacing_ev = float(energies[1] - energies[0])
    p.targets.ldos_gridoffset_ev = float(energies[0])
    p.descriptors.descriptor_type = "Bispectrum"
    p.descriptors.bispectrum_twojmax = twojmax
    p.descriptors.bispectrum_cutoff = cutoff
    return p


def ex01(p):
    """MALA's example training settings (its ex01): feature-wise standard inputs, min-max
    outputs, ReLU, Adam at 1e-5 (the one hidden layer of 100 is set with the data's sizes)."""
    p.data.input_rescaling_type = "feature-wise-standard"
    p.data.output_rescaling_type = "minmax"
    p.network.layer_activations = "ReLU"
    p.running.learning_rate = 0.00001
    p.running.optimizer = "Adam"
    return p
