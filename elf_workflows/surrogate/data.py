"""Training data: reference cells resampled to the native spacing, and periodic patches with origin jitter.

Each reference cell (``ReferenceDataset``) is brought to the model's native grid
(:func:`elf_workflows.surrogate.infer.native_grid`): the DFT ELF by Fourier interpolation (clipped
to [0, 1]), the input features from the SAD evaluated directly on that grid. Patches of P³ voxels
are cut with wrap-around (``np.take`` with periodic indices; a patch may be larger than the cell)
from a fresh random origin every time one is drawn.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elf_workflows.errors import InputError
from elf_workflows.grids import fourier_interpolate
from elf_workflows.sad import sad_density
from elf_workflows.surrogate.features import cell_features
from elf_workflows.surrogate.infer import native_grid
from elf_workflows.surrogate.symmetry_pool import patch_operations


@dataclass
class Cell:
    """One training cell on the native grid.

    Attributes:
        id: record id.
        formula: reduced formula.
        features: float32 ``(C, nx, ny, nz)``.
        target: float32 ELF ``(nx, ny, nz)``.
        patch_ops: signed permutations usable as patch-frame rotations (:func:`patch_operations`).
    """

    id: str
    formula: str
    features: np.ndarray
    target: np.ndarray
    patch_ops: np.ndarray


def prepare_cell(structure, elf: np.ndarray, spacing: float, multiple: int, record_id: str = "") -> Cell:
    """Resample one reference cell to the native grid and compute its input features."""
    shape = native_grid(structure, spacing, multiple)
    target = np.clip(fourier_interpolate(np.asarray(elf, float), shape), 0.0, 1.0).astype(np.float32)
    feats = cell_features(structure, sad_density(structure, shape))
    return Cell(id=record_id, formula=structure.composition.reduced_formula, features=feats, target=target,
                patch_ops=patch_operations(structure.lattice.matrix, shape))


def holdout_fraction(record_id: str) -> float:
    """A stable pseudo-random number in [0, 1) from a record id (for carving a validation split)."""
    return int(hashlib.sha1(record_id.encode()).hexdigest()[:8], 16) / 16**8


def split_records(dataset, val_fraction: float = 0.15) -> tuple[list[dict], list[dict]]:
    """(train, val) records: the dataset's ``val`` split when it has one, else carved from ``train`` by id hash.

    The ``test`` split is never touched.
    """
    train = list(dataset.records(split="train"))
    val = list(dataset.records(split="val"))
    if not val:
        val = [r for r in train if holdout_fraction(r["id"]) < val_fraction]
        train = [r for r in train if holdout_fraction(r["id"]) >= val_fraction]
    if not train:
        raise InputError(f"no training records in {getattr(dataset, 'path', dataset)}")
    return train, val


def load_cells(dataset, records: list[dict], spacing: float, multiple: int, max_voxels: int = 80**3,
               progress=None) -> list[Cell]:
    """Prepare the cells of ``records``; cells whose native grid exceeds ``max_voxels`` are skipped."""
    cells = []
    for rec in records:
        structure, elf, _ = dataset.load(rec["id"])
        shape = native_grid(structure, spacing, multiple)
        if np.prod(shape) > max_voxels:
            continue
        cells.append(prepare_cell(structure, elf, spacing, multiple, rec["id"]))
        if progress is not None:
            progress(rec)
    return cells


def cut_patch(field: np.ndarray, origin, size: int) -> np.ndarray:
    """A ``size``³ block of a periodic field (last three axes) starting at ``origin``, with wrap-around."""
    idx = [(o + np.arange(size)) % n for o, n in zip(origin, field.shape[-3:])]
    return field[(..., *np.ix_(*idx))]


def sample_patches(cells: list[Cell], n_patches: int, size: int, rng: np.random.Generator):
    """``n_patches`` (features, target, patch_ops) triples from cells drawn uniformly, random origins."""
    out = []
    for _ in range(n_patches):
        cell = cells[int(rng.integers(len(cells)))]
        origin = [int(rng.integers(n)) for n in cell.target.shape]
        out.append((cut_patch(cell.features, origin, size), cut_patch(cell.target, origin, size), cell.patch_ops))
    return out


def dataset_path(path: str | Path):
    """Open a reference dataset directory with a clear error when it is not one."""
    from elf_workflows.dataset import ReferenceDataset

    path = Path(path)
    if not (path / "records.jsonl").is_file():
        raise InputError(f"{path} is not a reference dataset (no records.jsonl)")
    return ReferenceDataset(path)
