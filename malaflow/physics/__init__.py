"""Physics every target needs, in the core: Fermi–Dirac integrals (:mod:`.fermi`), DOS and
LDOS observables (:mod:`.dos`), pseudopotential files (:mod:`.pseudopotential`) and the
energy terms of the total free energy (:mod:`.energy`)."""
