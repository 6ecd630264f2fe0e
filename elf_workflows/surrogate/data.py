"""Training data: reference cells resampled to the native spacing, and periodic patches with origin jitter.

Each reference cell (``ReferenceDataset``) is brought to the model's native grid
(:func:`elf_workflows.surrogate.infer.native_grid`): the DFT ELF by Fourier interpolation (clipped
to [0, 1]), the input features from the SAD evaluated directly on that grid.

Periodic patches. A patch is cut with wrap-around from a fresh random origin every time one is
drawn. Along an axis where the cell has ``n ≤ P`` voxels (P the patch edge) the patch spans a whole
number of periods, ``k·n`` with ``k = ⌊P/n⌋`` (a patch may be larger than the cell): it is then
*exactly* periodic along that axis, so the network's circular padding sees the true neighbourhood of
every voxel, as in whole-cell inference. Along an axis where ``n > P`` the patch is an ordinary
window of P voxels; its circular padding wraps unrelated voxels together, so the loss ignores a
margin of ``P // 4`` voxels at both ends of that axis (:attr:`Patch.core`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elf_workflows.errors import InputError
from elf_workflows.grids import fourier_interpolate, local_maxima_mask
from elf_workflows.surrogate.domain import compression_ratio
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
        v_ratio: V/V0 of the cell (:func:`elf_workflows.surrogate.domain.compression_ratio`).
        interstitial: bool ``(nx, ny, nz)``, voxels outside every atom's PAW core radius
            (:func:`interstitial_mask`), where template attractors live.
        maxima: bool ``(nx, ny, nz)``, the local maxima of ``target`` (:func:`local_maxima`), the
            voxels at which ``evaluate`` scores the ELF maxima.
    """

    id: str
    formula: str
    features: np.ndarray
    target: np.ndarray
    patch_ops: np.ndarray
    v_ratio: float
    interstitial: np.ndarray | None = None
    maxima: np.ndarray | None = None


def local_maxima(elf: np.ndarray, floor: float = 0.05) -> np.ndarray:
    """Boolean mask of the periodic local maxima with ELF > ``floor``: the reference maxima ``evaluate``
    scores (:func:`elf_workflows.grids.local_maxima_mask`)."""
    return local_maxima_mask(elf, floor)


def interstitial_mask(structure, shape) -> np.ndarray:
    """True at grid points farther than its PAW core radius (:func:`elf_workflows.elements.core_radius`)
    from every atom — the region where :mod:`elf_workflows.templates` calls an ELF maximum interstitial.

    Distances to the 27 nearest periodic images of each atom, so skewed and small cells are exact for
    core radii below the cell's shortest image distance.
    """
    from itertools import product

    from elf_workflows.elements import core_radius
    from elf_workflows.grids import fractional_grid

    frac = fractional_grid(tuple(shape)).reshape(-1, 3)
    matrix = structure.lattice.matrix
    outside = np.ones(len(frac), bool)
    shifts = np.array(list(product((-1, 0, 1), repeat=3)), float)
    for site in structure:
        d = frac - site.frac_coords
        d -= np.round(d)
        radius = core_radius(site.specie.symbol)
        for shift in shifts:
            outside &= np.linalg.norm((d + shift) @ matrix, axis=1) >= radius
    return outside.reshape(tuple(shape))


def prepare_cell(structure, elf: np.ndarray, spacing: float, multiple: int, record_id: str = "") -> Cell:
    """Resample one reference cell to the native grid and compute its input features."""
    shape = native_grid(structure, spacing, multiple)
    target = np.clip(fourier_interpolate(np.asarray(elf, float), shape), 0.0, 1.0).astype(np.float32)
    feats = cell_features(structure, shape=shape)
    return Cell(id=record_id, formula=structure.composition.reduced_formula, features=feats, target=target,
                patch_ops=patch_operations(structure.lattice.matrix, shape), v_ratio=compression_ratio(structure),
                interstitial=interstitial_mask(structure, shape), maxima=local_maxima(target))


def holdout_fraction(record_id: str) -> float:
    """A stable pseudo-random number in [0, 1) from a record id (for carving a validation split)."""
    return int(hashlib.sha1(record_id.encode()).hexdigest()[:8], 16) / 16**8


def split_records(dataset, val_fraction: float = 0.15,
                  val_elements: tuple[str, ...] | list[str] = ()) -> tuple[list[dict], list[dict]]:
    """(train, val) records: the dataset's ``val`` split when it has one, else carved from ``train`` by id hash.

    ``val_elements``: every ``train`` record that contains one of these elements moves to validation,
    so validation measures what the test split asks, transfer to chemistries never trained on
    (a random slice of the training chemistries only measures interpolation). The ``test`` split is
    never touched.
    """
    train = list(dataset.records(split="train"))
    val = list(dataset.records(split="val"))
    held = set(val_elements)
    if held:
        unknown = held - {el for r in train + val for el in r.get("elements", [])}
        if unknown:
            raise InputError(f"--val-elements {', '.join(sorted(unknown))}: no such element in the train/val records")
        val += [r for r in train if held & set(r.get("elements", []))]
        train = [r for r in train if not held & set(r.get("elements", []))]
    if not val:
        val = [r for r in train if holdout_fraction(r["id"]) < val_fraction]
        train = [r for r in train if holdout_fraction(r["id"]) >= val_fraction]
    if not train:
        raise InputError(f"no training records in {getattr(dataset, 'path', dataset)}")
    return train, val


def _prepare_record(dataset, record_id: str, spacing: float, multiple: int, max_voxels: int) -> Cell | None:
    """One record → its :class:`Cell` (``None`` when its native grid exceeds ``max_voxels``)."""
    structure, elf, _ = dataset.load(record_id)
    if np.prod(native_grid(structure, spacing, multiple)) > max_voxels:
        return None
    return prepare_cell(structure, elf, spacing, multiple, record_id)


_WORKER_DATASET: list = []  # the dataset a pool worker opened (see _open_in_worker)


def _open_in_worker(path: str) -> None:
    """Process-pool initializer: open the dataset once per worker, one torch thread."""
    import torch

    torch.set_num_threads(1)
    _WORKER_DATASET[:] = [dataset_path(path)]


def _prepare_in_worker(args) -> Cell | None:
    return _prepare_record(_WORKER_DATASET[0], *args)


def _in_order(results, records: list[dict], progress):
    """Pass the results (a pool's or a serial generator's) through, calling ``progress(record)`` as each arrives."""
    for rec, cell in zip(records, results):
        if progress is not None:
            progress(rec)
        yield cell


def load_cells(dataset, records: list[dict], spacing: float, multiple: int, max_voxels: int = 80**3,
               progress=None, workers: int = 1) -> list[Cell]:
    """Prepare the cells of ``records`` (in their order); cells whose native grid exceeds ``max_voxels`` are skipped.

    ``workers`` > 1 prepares them in that many processes (each single-threaded; each also builds the
    form-factor tables of the elements it meets, ≈ 0.1 s per element and density kind). The 3268
    training and validation cells of ``data/reference`` took 62 s with 16 workers on a 16-core GPU host,
    and 110–185 s in one or two processes on the 2-core development machine.
    """
    jobs = [(rec["id"], spacing, multiple, max_voxels) for rec in records]
    if workers > 1 and len(jobs) > 1:
        from elf_workflows.parallel import single_threaded_pool

        with single_threaded_pool(workers, _open_in_worker, (str(dataset.path),)) as pool:
            chunks = max(1, len(jobs) // (8 * workers))
            results = list(_in_order(pool.map(_prepare_in_worker, jobs, chunksize=chunks), records, progress))
    else:
        results = _in_order((_prepare_record(dataset, *job) for job in jobs), records, progress)
    return [cell for cell in results if cell is not None]


def cut_patch(field: np.ndarray, origin, edges) -> np.ndarray:
    """A block of ``edges`` voxels of a periodic field (last three axes) starting at ``origin``, with wrap-around."""
    idx = [(o + np.arange(e)) % n for o, e, n in zip(origin, edges, field.shape[-3:])]
    return field[(..., *np.ix_(*idx))]


def periodic_patch_shape(shape, size: int) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Patch edges for a cell grid ``shape`` and patch edge ``size``, and which axes are exactly periodic.

    Axis of ``n ≤ size`` voxels: ``⌊size/n⌋·n`` voxels (whole periods, periodic); else ``size`` (a window).
    """
    edges = tuple(int(n * (size // n)) if n <= size else int(size) for n in shape)
    return edges, tuple(n <= size for n in shape)


@dataclass
class Patch:
    """A training patch: input features, target ELF, usable patch-frame operations, and the loss region.

    Attributes:
        features: float32 ``(C, p1, p2, p3)``.
        target: float32 ``(p1, p2, p3)``.
        patch_ops: signed permutations of the cell (:func:`patch_operations`).
        core: slices of the voxels the loss sees (all along periodic axes; a margin cut elsewhere).
    """

    features: np.ndarray
    target: np.ndarray
    patch_ops: np.ndarray
    core: tuple[slice, slice, slice]


def sample_patches(cells: list[Cell], n_patches: int, size: int, rng: np.random.Generator) -> list[Patch]:
    """``n_patches`` periodic patches (module docstring) from cells drawn uniformly, random origins."""
    out = []
    margin = size // 4
    for _ in range(n_patches):
        cell = cells[int(rng.integers(len(cells)))]
        origin = [int(rng.integers(n)) for n in cell.target.shape]
        edges, periodic = periodic_patch_shape(cell.target.shape, size)
        core = tuple(slice(None) if p else slice(margin, e - margin) for p, e in zip(periodic, edges))
        out.append(Patch(cut_patch(cell.features, origin, edges), cut_patch(cell.target, origin, edges),
                         cell.patch_ops, core))
    return out


def dataset_path(path: str | Path):
    """Open a reference dataset directory with a clear error when it is not one."""
    from elf_workflows.dataset import ReferenceDataset

    path = Path(path)
    if not (path / "records.jsonl").is_file():
        raise InputError(f"{path} is not a reference dataset (no records.jsonl)")
    return ReferenceDataset(path)
