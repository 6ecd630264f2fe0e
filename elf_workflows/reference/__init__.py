"""DFT reference ELF: GPAW here (:mod:`.gpaw`), VASP through atomate2 (:mod:`.vasp`).

Both engines return grids in the package convention: ``field[i, j, k]`` at fractional
``(i/nx, j/ny, k/nz)``, ELF dimensionless in [0, 1], densities in e/Å³.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymatgen.core import Structure

__all__ = ["ReferenceResult", "compute_gpaw_elf", "GpawElfMaker", "GpawSettings", "VaspElfMaker"]


@dataclass
class ReferenceResult:
    """One DFT ELF calculation.

    Attributes:
        structure: the cell computed.
        elf: ELF on ``shape`` (float64, in [0, 1]).
        density: self-consistent pseudo valence density on the same grid (e/Å³).
        energy_ev: total (extrapolated) energy, eV.
        engine: ``gpaw`` or ``vasp``.
        settings: every setting that shaped the result (cutoff, k-points, smearing, grid, code version).
        converged: whether the SCF met its criteria.
        iterations: SCF iterations.
        seconds: wall time of the calculation, s.
        native_shape: the grid the engine computed on (``shape`` may be interpolated from it).
        convergence: extra convergence data (criteria, final errors...).
    """

    structure: Structure
    elf: np.ndarray
    density: np.ndarray
    energy_ev: float
    engine: str
    settings: dict[str, Any]
    converged: bool = True
    iterations: int | None = None
    seconds: float = 0.0
    native_shape: tuple[int, int, int] | None = None
    convergence: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid of ``elf`` and ``density``."""
        return tuple(self.elf.shape)

    @property
    def electrons(self) -> float:
        """Integral of ``density`` over the cell (electrons)."""
        return float(self.density.mean() * self.structure.volume)

    def metadata(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays) for dataset records and job outputs."""
        return {
            "engine": self.engine,
            "settings": self.settings,
            "energy_ev": float(self.energy_ev),
            "converged": bool(self.converged),
            "iterations": self.iterations,
            "seconds": float(self.seconds),
            "shape": list(self.shape),
            "native_shape": list(self.native_shape) if self.native_shape else list(self.shape),
            "electrons": self.electrons,
            "elf_range": [float(self.elf.min()), float(self.elf.max())],
            "convergence": self.convergence,
        }


def __getattr__(name: str):  # lazy: GPAW and atomate2 are heavy imports
    if name in ("compute_gpaw_elf", "GpawElfMaker", "GpawSettings"):
        from elf_workflows.reference import gpaw as _gpaw

        return getattr(_gpaw, name)
    if name == "VaspElfMaker":
        from elf_workflows.reference import vasp as _vasp

        return _vasp.VaspElfMaker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

