"""Probability paths, couplings and objectives."""

from fmbench.paths.couplings import COUPLINGS, Coupling, CouplingError, make_coupling
from fmbench.paths.schedules import OBJECTIVES, PATHS, GaussianPath, make_path, register_path

__all__ = [
    "COUPLINGS", "Coupling", "CouplingError", "make_coupling",
    "OBJECTIVES", "PATHS", "GaussianPath", "make_path", "register_path",
]
