"""Structures and grids in and out: validated structures, CHGCAR (ρ·V) and ELFCAR files.

Grids follow VASP: ``data[i, j, k]`` sits at fractional coordinates ``(i/nx, j/ny, k/nz)``. Densities
are held in e/Å³ inside the package; CHGCAR files store ρ·V_cell as VASP writes them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from pymatgen.core import Molecule, Structure
from pymatgen.io.vasp.outputs import Chgcar, Elfcar

from elf_workflows.elements import available_elements
from elf_workflows.errors import InputError

#: atoms closer than this (Å) are refused as overlapping
MIN_DISTANCE = 0.5


def read_structure(path: str | Path) -> Structure:
    """Read and validate a periodic structure from any file pymatgen reads (POSCAR, CIF, ...)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a structure file")
    try:
        if path.stat().st_size == 0:
            raise InputError(f"empty file: {path}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_file(path)
    except InputError:
        raise
    except PermissionError as exc:
        raise InputError(f"cannot read {path}: permission denied") from exc
    except Exception as exc:  # noqa: BLE001 - pymatgen raises many kinds
        if _reads_as_molecule(path):
            raise InputError(f"{path} holds a molecule with no periodic lattice; give a crystal structure") from exc
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read a structure from {path}: {reason}") from exc
    return validate_structure(structure, name=str(path))


def _reads_as_molecule(path: Path) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return len(Molecule.from_file(path)) > 0
    except Exception:  # noqa: BLE001
        return False


def validate_structure(structure: Structure, name: str = "structure", require_metal: bool = False) -> Structure:
    """Check that ``structure`` is a usable periodic crystal; return it unchanged.

    Raises :class:`InputError` for: no atoms, no periodic lattice, non-positive volume, partial
    occupancy, atoms closer than :data:`MIN_DISTANCE` Å, elements without atomic data, and (with
    ``require_metal``) a structure without any metal.
    """
    if not isinstance(structure, Structure):
        raise InputError(f"{name}: not a periodic structure (got {type(structure).__name__})")
    if len(structure) == 0:
        raise InputError(f"{name}: the structure has no atoms")
    if not np.all(structure.lattice.pbc):
        raise InputError(f"{name}: the lattice is not periodic in all three directions")
    if not structure.volume > 1e-6:
        raise InputError(f"{name}: the cell volume is {structure.volume:.3g} Å³; a periodic cell is needed")
    if not structure.is_ordered:
        bad = next(s for s in structure if not s.is_ordered)
        raise InputError(f"{name}: partial occupancy ({bad.species_string} at {np.round(bad.frac_coords, 4).tolist()}); "
                         "order the structure first")
    known = set(available_elements())
    for sp in structure.composition.elements:
        symbol = getattr(sp, "symbol", str(sp))
        if symbol not in known:
            raise InputError(f"{name}: no atomic data for element {symbol!r} (elements H to Rn are supported)")
    if len(structure) > 1 or min(structure.lattice.abc) < MIN_DISTANCE:
        centers, points, _, dists = structure.get_neighbor_list(MIN_DISTANCE, exclude_self=True)
        if len(dists):
            i = int(np.argmin(dists))
            raise InputError(
                f"{name}: overlapping atoms {centers[i]} and {points[i]} are {dists[i]:.3f} Å apart "
                f"(minimum {MIN_DISTANCE} Å)")
    if require_metal:
        from elf_workflows.elements import is_metal

        if not any(is_metal(el.symbol) for el in structure.composition.elements):
            raise InputError(f"{name}: no metal in {structure.composition.reduced_formula}; "
                             "templates are metal sublattices")
    return structure


def write_chgcar(structure: Structure, density: np.ndarray, path: str | Path) -> Path:
    """Write a density in e/Å³ as a CHGCAR (values ρ·V_cell, as VASP writes them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Chgcar(structure, {"total": np.asarray(density, float) * structure.volume}).write_file(str(path))
    return path


def read_chgcar(path: str | Path) -> tuple[Structure, np.ndarray]:
    """Read a CHGCAR; return the structure and the total density in e/Å³."""
    chg = _read_volumetric(Chgcar, path)
    return chg.structure, np.asarray(chg.data["total"], float) / chg.structure.volume


def write_elfcar(structure: Structure, elf: np.ndarray, path: str | Path) -> Path:
    """Write an ELF grid as an ELFCAR (values as they are)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Elfcar(structure, {"total": np.asarray(elf, float)}).write_file(str(path))
    return path


def read_elfcar(path: str | Path) -> tuple[Structure, np.ndarray]:
    """Read an ELFCAR; return the structure and the ELF grid (spin-up channel for spin-polarised files)."""
    elf = _read_volumetric(Elfcar, path)
    return elf.structure, np.asarray(elf.data["total"], float)


def _read_volumetric(cls, path: str | Path):
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls.from_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read {cls.__name__.upper()} {path}: {exc or type(exc).__name__}") from exc
