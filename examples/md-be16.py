"""Molecular dynamics and Monte Carlo of a 16-atom beryllium cell at 298 K on the energy
surface of a malaflow model, and the radial distribution function of both runs.

    malaflow catalog ingest && malaflow train examples/train-be2.yaml   # a Be model
    python examples/md-be16.py models/be2 --md-steps 20 --mc-steps 40

The two routes of the seed: ASE's Langevin dynamics with the model's forces (−∂F/∂R of
the free energy from the predicted LDOS), and malaflow's Metropolis Monte Carlo with its
energies alone. Each writes an ASE trajectory; the plot compares g(r) of both with the
starting configuration's. A step of the 16-atom cell (36 × 36 × 54 grid points) takes
about a minute on one core with the twojmax-10 model: raise the step counts on a machine
with more cores (or a Dask cluster: the chunks of each step spread over its workers).
A model with a smooth activation (sigmoid, tanh) gives a smooth energy surface; a ReLU
network's forces jump where units switch, which Langevin dynamics tolerates and NVE
runs do not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ase import units
from ase.io import Trajectory, read
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

import malaflow

DEMO = Path(malaflow.__file__).parent / "demo_data" / "Be2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a trained Be model folder (e.g. models/be2)")
    parser.add_argument("--md-steps", type=int, default=20)
    parser.add_argument("--mc-steps", type=int, default=40)
    parser.add_argument("--output", default="md-be16", help="folder for trajectories and the plot")
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(exist_ok=True)

    start = malaflow.read_snapshot(DEMO / "Be_snapshot3.info.json").atoms.repeat((2, 2, 2))
    model = malaflow.load_model(args.model)

    atoms = start.copy()
    atoms.calc = malaflow.Calculator(model, chunks=27)
    thermalize_momenta(atoms, temperature_K=298, rng=np.random.default_rng(0))
    dynamics = Langevin(atoms, timestep=1.0 * units.fs, temperature_K=298, friction=0.01 / units.fs,
                        rng=np.random.default_rng(1))
    with Trajectory(str(out / "md.traj"), "w", atoms) as trajectory:
        dynamics.attach(trajectory.write, interval=1)
        dynamics.attach(lambda: print(f"MD step {dynamics.nsteps}: F = {atoms.get_potential_energy():.4f} eV, "
                                      f"T = {atoms.get_temperature():.0f} K, "
                                      f"max |f| = {np.abs(atoms.get_forces()).max():.3f} eV/Å"), interval=1)
        dynamics.run(args.md_steps)

    walker = start.copy()
    walker.calc = malaflow.Calculator(model, chunks=27)
    run = malaflow.metropolis(walker, 298.0, args.mc_steps, step=0.05, seed=0, trajectory=out / "mc.traj")
    print(f"Monte Carlo: {args.mc_steps} moves, {100 * run.acceptance:.0f} % accepted, "
          f"F from {run.energies[0]:.4f} to {run.energies[-1]:.4f} eV")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for frames, label in ((start, "start (DFT snapshot ×2×2×2)"), (read(out / "md.traj", ":"), "Langevin MD"),
                          (read(out / "mc.traj", ":"), "Metropolis MC")):
        r, g = malaflow.radial_distribution(frames, r_max=5.0, bins=100)
        ax.plot(r, g, label=label)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g(r)")
    ax.set_title("Be, 16 atoms, 298 K, malaflow energies and forces")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rdf.png", dpi=120)
    print(f"wrote {out / 'md.traj'}, {out / 'mc.traj'} and {out / 'rdf.png'}")


if __name__ == "__main__":
    main()
