"""Physical constants and unit conversions (CODATA 2018, as QE and ASE use them)."""

RYDBERG_EV = 13.605693123  # eV per Rydberg
HARTREE_EV = 2 * RYDBERG_EV
BOHR_ANGSTROM = 0.529177210903  # Å per Bohr
KB_EV = 8.617333262e-5  # Boltzmann constant in eV/K
