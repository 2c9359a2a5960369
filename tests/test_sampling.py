"""Configurations for training data: the Langevin MD sampler (ASE's EMT) for solids and
liquids, its settings checks, and its reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from malaflow.errors import ParameterError
from malaflow.sampling import configurations, md_settings, pair_correlation

AL = {"bulk": {"name": "Al", "crystalstructure": "fcc", "a": 4.05, "cubic": True}, "supercell": [2, 2, 2]}


def _displacements(frames, crystal) -> np.ndarray:
    """|r − r_site| per atom and frame (minimum image), Å."""
    cell = crystal.cell.array
    d = np.stack([f.positions - crystal.positions for f in frames]) @ np.linalg.inv(cell)
    return np.linalg.norm((d - np.round(d)) @ cell, axis=-1)


def test_md_frames_of_a_solid_and_a_liquid():
    """At 933 K the EMT solid vibrates about its sites as aluminium does near melting:
    Debye–Waller B ≈ 2.4 Å² there, ⟨u_x²⟩ = B/8π² = 0.030 Å², an rms displacement of
    0.30 Å in 3D (0.32 Å measured over these frames); g(r) keeps the gap between the first
    (2.86 Å) and second (4.05 Å) shells;
    melted at 2500 K and quenched, atoms leave their sites (beyond the Lindemann 10 % of the
    2.86 Å neighbour distance by far) and the gap fills."""
    solid = configurations({**AL, "count": 6, "seed": 1, "md": {"temperature": 933, "equilibration": 300,
                                                                 "stride": 100}})
    liquid = configurations({**AL, "count": 6, "seed": 1, "md": {"temperature": 933, "equilibration": 300,
                                                                  "stride": 100, "phase": "liquid",
                                                                  "melt_temperature": 2500, "melt_steps": 1500}})
    crystal = configurations({**AL, "count": 1})[0]
    assert len(solid) == len(liquid) == 6 and all(len(f) == 32 for f in solid + liquid)
    rms_solid = float(np.sqrt((_displacements(solid, crystal) ** 2).mean()))
    assert 0.22 < rms_solid < 0.40, rms_solid
    assert np.median(_displacements(liquid, crystal)) > 0.8
    r, g_solid = pair_correlation(solid, 4.5, 45)
    _, g_liquid = pair_correlation(liquid, 4.5, 45)
    gap = (r > 3.3) & (r < 3.8)  # between the shells: 0.31 (solid) vs 0.60 (liquid) measured
    assert g_solid[gap].mean() < 0.7 * g_liquid[gap].mean()
    # and nothing overlaps: EMT keeps atoms apart at these temperatures
    assert min(pair_correlation([f], 2.2, 22)[1].max() for f in solid + liquid) == 0.0
    again = configurations({**AL, "count": 6, "seed": 1, "md": {"temperature": 933, "equilibration": 300,
                                                                 "stride": 100}})
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(solid, again))  # the seed reproduces


def test_md_settings_are_checked():
    with pytest.raises(ParameterError, match="unknown key.*temprature"):
        md_settings({"temprature": 900})
    with pytest.raises(ParameterError, match="give the temperature"):
        md_settings({})
    with pytest.raises(ParameterError, match="phase must be solid or liquid"):
        md_settings({"temperature": 900, "phase": "gas"})
    with pytest.raises(ParameterError, match="stride must be a whole number of steps ≥ 1"):
        md_settings({"temperature": 900, "stride": 0})
    assert md_settings({"temperature": 900, "phase": "liquid"})["melt_temperature"] == 2700
    with pytest.raises(ParameterError, match="EMT has no parameters for \\['Be'\\]"):
        configurations({"bulk": {"name": "Be", "crystalstructure": "hcp", "a": 2.26, "c": 3.57}, "count": 1,
                        "md": {"temperature": 300}})
    with pytest.raises(ParameterError, match="either displacement: or md:"):
        configurations({**AL, "md": {"temperature": 900}, "displacement": {"sigma": 0.1}})
