"""Benchmarks: malaflow beside its reference (LAMMPS, MALA), same machine, same run.

Run ``python -m benchmarks [task ...]`` from the repository root; results go in
benchmarks/RESULTS.md by hand, with the machine and the date.
"""
