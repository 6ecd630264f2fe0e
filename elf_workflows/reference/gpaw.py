"""GPAW reference ELF: plane waves, PBE, smeared occupations, computed in this process.

The ELF is GPAW's pseudo ELF (:func:`gpaw.elf.elf_from_dft_calculation`, new API). GPAW builds it
from its smooth density ``nt_sR`` and kinetic-energy density ``taut_sR`` — both *include* the smooth
pseudo-core parts (``nct``, ``tauct``) of the PAW datasets, so semicore shells appear as a smooth
shell, not as the all-electron shell structure. The ``density`` returned beside it is GPAW's pseudo
density with PAW compensation charges (``Densities.pseudo_densities()``; it also contains the smooth
pseudo core), which integrates to the valence electron count like a VASP CHGCAR does.

Both grids are GPAW's coarse (native) grid, chosen here with
:func:`elf_workflows.grids.grid_for_spacing` so that it is FFT-friendly and compatible with the space
group; GPAW's periodic grids put ``data[i, j, k]`` at fractional ``(i/nx, j/ny, k/nz)`` like VASP.
A requested ``grid`` is reached by periodic Fourier interpolation
(:func:`elf_workflows.grids.fourier_interpolate`), then clipped to [0, 1] for the ELF.

Run single-threaded (``OMP_NUM_THREADS=1``); parallel batches use worker processes.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jobflow import Maker, job
from pymatgen.core import Structure

from elf_workflows.errors import EngineError
from elf_workflows.reference import ReferenceResult

os.environ.setdefault("OMP_NUM_THREADS", "1")


@dataclass
class GpawSettings:
    """Settings of a GPAW ELF calculation (recorded with every result).

    The defaults give ELF maps of metals converged to about 0.01 in ELF (see docs/reference.md):

    Attributes:
        ecut_ev: plane-wave cutoff (eV).
        kpoint_density: Γ-centred Monkhorst-Pack grid with at least this many k-points per Å⁻¹ of
            reciprocal-vector length (ASE's ``kptdensity``, which includes the 2π).
        smearing: ``marzari-vanderbilt``, ``fermi-dirac`` or ``methfessel-paxton``.
        smearing_width_ev: smearing width (eV).
        grid_spacing: largest voxel edge of the native (coarse) grid (Å).
        xc: exchange-correlation functional.
        maxiter: SCF iteration cap; unconverged after it → :class:`EngineError`.
        energy_tolerance_ev: SCF energy criterion (eV per valence electron).
        density_tolerance: SCF density criterion (electrons per valence electron).
        timeout_s: wall-time cap (s); ``None`` = none.
        spinpol: spin-polarised calculation (ELF then from both spin channels).
    """

    ecut_ev: float = 400.0
    kpoint_density: float = 4.0
    smearing: str = "marzari-vanderbilt"
    smearing_width_ev: float = 0.2
    grid_spacing: float = 0.18
    xc: str = "PBE"
    maxiter: int = 80
    energy_tolerance_ev: float = 5e-4
    density_tolerance: float = 1e-4
    timeout_s: float | None = None
    spinpol: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The settings that define a converged result (``maxiter`` and ``timeout_s`` only decide
        whether it is reached, so they are left out: record ids stay stable when they change)."""
        d = asdict(self)
        d.pop("timeout_s")
        d.pop("maxiter")
        return d


#: loose settings for tests and quick looks (not converged)
LOOSE = GpawSettings(ecut_ev=250.0, kpoint_density=2.0, grid_spacing=0.25, energy_tolerance_ev=5e-3,
                     density_tolerance=1e-3, maxiter=60)


#: settings of the shipped training set: cheaper than the defaults, ELF within ~0.02 of them (docs/reference.md)
TRAINING = GpawSettings(ecut_ev=300.0, kpoint_density=2.0, smearing_width_ev=0.25, grid_spacing=0.2,
                        energy_tolerance_ev=2e-3, density_tolerance=2e-3, maxiter=80, timeout_s=240.0)

#: named settings for the command line (``--preset``)
PRESETS = {"default": GpawSettings(), "training": TRAINING, "loose": LOOSE}


def paw_dataset_dirs() -> list[Path]:
    """Directories GPAW searches for PAW datasets."""
    from gpaw import setup_paths

    return [Path(p) for p in setup_paths]


def available_paw_elements(xc: str = "PBE") -> list[str]:
    """Elements with a GPAW PAW dataset for ``xc`` in the configured setup paths."""
    found: set[str] = set()
    for directory in paw_dataset_dirs():
        if directory.is_dir():
            for path in directory.glob(f"*.{xc}*"):
                parts = path.name.split(".")  # Ag.PBE.gz, Ag.11.PBE.gz
                if xc in parts[1:3] and "basis" not in parts:
                    found.add(parts[0])
    return sorted(found)


def check_paw_datasets(structure: Structure, xc: str = "PBE") -> None:
    """Raise :class:`EngineError` before any work if an element has no PAW dataset (e.g. Th, U)."""
    have = set(available_paw_elements(xc))
    missing = sorted({el.symbol for el in structure.composition.elements} - have)
    if missing:
        dirs = ", ".join(str(d) for d in paw_dataset_dirs()) or "(no setup path)"
        raise EngineError(
            f"GPAW has no {xc} PAW dataset for {', '.join(missing)} (searched {dirs}); "
            "gpaw-data has none for actinides: use --engine vasp or add a dataset to GPAW_SETUP_PATH")


def kpoint_grid(structure: Structure, density: float) -> tuple[int, int, int]:
    """Γ-centred Monkhorst-Pack grid: ``n_i = max(1, ceil(2π · density · |b_i|))`` with ``b`` without 2π."""
    recip = structure.lattice.reciprocal_lattice.abc  # includes 2π
    return tuple(max(1, math.ceil(density * length - 1e-9)) for length in recip)  # type: ignore[return-value]


class _TimeOut(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float | None):
    """Raise :class:`_TimeOut` after ``seconds`` (main thread only; elsewhere no cap)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum, frame):
        raise _TimeOut()

    old = signal.signal(signal.SIGALRM, _handler)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def gpaw_version() -> str:
    """Installed GPAW version."""
    import gpaw

    return str(gpaw.__version__)


def compute_gpaw_elf(
    structure: Structure,
    settings: GpawSettings | None = None,
    grid: tuple[int, int, int] | None = None,
    txt: str | Path | None = None,
) -> ReferenceResult:
    """Self-consistent GPAW calculation of ``structure``; return its pseudo ELF and density.

    Args:
        structure: periodic cell (validated; every element needs a GPAW PAW dataset).
        settings: :class:`GpawSettings` (defaults: converged for metals).
        grid: output grid ``(nx, ny, nz)``; ``None`` keeps the native grid.
        txt: GPAW log file (``None``: discarded).

    Raises:
        EngineError: missing PAW dataset, unconverged SCF, time-out or a GPAW failure.
    """
    from elf_workflows.grids import check_grid, fourier_interpolate, grid_for_spacing
    from elf_workflows.io import validate_structure

    settings = settings or GpawSettings()
    check_paw_datasets(structure, settings.xc)  # first: elements without a dataset fail before anything
    structure = validate_structure(structure)
    if grid is not None:
        grid = check_grid(grid)
    native = grid_for_spacing(structure, settings.grid_spacing)
    kpts = kpoint_grid(structure, settings.kpoint_density)
    record = settings.as_dict() | {"maxiter": settings.maxiter, "kpoints": list(kpts), "native_grid": list(native),
                                   "gpaw_version": gpaw_version(), "mode": "pw",
                                   "elf": "gpaw.elf.elf_from_dft_calculation (pseudo, incl. smooth core)",
                                   "density": "pseudo density + compensation charges (e/Å³)"}
    name = structure.composition.reduced_formula
    start = time.perf_counter()
    cpu_start = time.process_time()
    try:
        with _deadline(settings.timeout_s):
            calc, atoms = _run_scf(structure, settings, native, kpts, txt)
            energy = float(atoms.get_potential_energy())
            elf, density, niter = _extract(calc)
    except _TimeOut as exc:
        raise EngineError(f"GPAW on {name} timed out after {settings.timeout_s:g} s") from exc
    except EngineError:
        raise
    except Exception as exc:  # noqa: BLE001 - GPAW raises many kinds
        from gpaw import KohnShamConvergenceError

        if isinstance(exc, KohnShamConvergenceError):
            raise EngineError(f"GPAW SCF on {name} did not converge in {settings.maxiter} iterations") from exc
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"GPAW failed on {name}: {type(exc).__name__}: {msg}") from exc
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    if elf.shape != tuple(native):
        raise EngineError(f"GPAW used grid {elf.shape}, expected {native}")
    if not (np.all(np.isfinite(elf)) and np.all(np.isfinite(density))):
        raise EngineError(f"GPAW on {name} returned non-finite values")
    out_shape = tuple(native)
    if grid is not None and tuple(grid) != tuple(native):
        elf = np.clip(fourier_interpolate(elf, grid), 0.0, 1.0)
        density = fourier_interpolate(density, grid)
        out_shape = tuple(grid)
    record["grid"] = list(out_shape)
    return ReferenceResult(
        structure=structure, elf=elf, density=density, energy_ev=energy, engine="gpaw", settings=record,
        converged=True, iterations=niter, seconds=seconds, native_shape=tuple(native),
        convergence={"energy_tolerance_ev": settings.energy_tolerance_ev,
                     "density_tolerance": settings.density_tolerance, "iterations": niter,
                     "maxiter": settings.maxiter, "cpu_seconds": round(cpu_seconds, 3)})


def _run_scf(structure, settings: GpawSettings, native, kpts, txt):
    from gpaw.new.ase_interface import GPAW
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.set_initial_magnetic_moments(None)
    calc = GPAW(
        mode={"name": "pw", "ecut": settings.ecut_ev},
        xc=settings.xc,
        kpts={"size": list(kpts), "gamma": True},
        occupations={"name": settings.smearing, "width": settings.smearing_width_ev},
        gpts=list(native),
        spinpol=settings.spinpol,
        convergence={"energy": settings.energy_tolerance_ev, "density": settings.density_tolerance,
                     "eigenstates": 4e-8},
        maxiter=settings.maxiter,
        txt=str(txt) if txt else None,
        symmetry={"point_group": True},
    )
    atoms.calc = calc
    return calc, atoms


def _extract(calc) -> tuple[np.ndarray, np.ndarray, int]:
    """ELF, density (e/Å³) and SCF iterations of a finished calculation, gathered as numpy arrays."""
    from gpaw.elf import elf_from_dft_calculation

    elf_R = elf_from_dft_calculation(calc)
    elf = np.asarray(elf_R.to_pbc_grid().gather().data, dtype=float)
    dens = calc.dft.densities().pseudo_densities(add_compensation_charges=True)
    density = np.asarray(dens.gather().data, dtype=float).sum(axis=0)
    niter = int(calc.dft.scf_loop.niter)
    return np.clip(elf, 0.0, 1.0), density, niter


def result_to_files(result: ReferenceResult, elfcar: str | Path, chgcar: str | Path | None = None) -> None:
    """Write a result as ELFCAR (and CHGCAR, ρ·V as VASP) files."""
    from elf_workflows.io import write_chgcar, write_elfcar

    write_elfcar(result.structure, result.elf, elfcar)
    if chgcar is not None:
        write_chgcar(result.structure, result.density, chgcar)


@dataclass
class GpawElfMaker(Maker):
    """jobflow Maker of a GPAW ELF job; the grids go to the JobStore's additional store ``data``.

    Args:
        name: job name.
        settings: :class:`GpawSettings`.
        grid: output grid ``(nx, ny, nz)`` or ``None`` for the native grid.
    """

    name: str = "gpaw elf"
    settings: GpawSettings = field(default_factory=GpawSettings)
    grid: tuple[int, int, int] | None = None

    @job(data=["elf", "density"])
    def make(self, structure: Structure) -> dict:
        """Run GPAW on ``structure``; output: metadata plus ``elf`` and ``density`` (nested lists, e/Å³)."""
        result = compute_gpaw_elf(structure, self.settings, self.grid)
        return {
            "structure": structure,
            **result.metadata(),
            "elf": result.elf.tolist(),
            "density": result.density.tolist(),
        }


__all__ = ["GpawSettings", "LOOSE", "compute_gpaw_elf", "check_paw_datasets", "available_paw_elements",
           "kpoint_grid", "PRESETS", "TRAINING", "GpawElfMaker", "result_to_files"]
