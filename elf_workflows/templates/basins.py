"""ELF-basin partitioning of a periodic grid: a vectorised on-grid steepest-ascent watershed.

Every voxel points at the neighbour (of its 26) with the steepest uphill slope
``(f[nb] − f[i]) / |Δr|`` (Cartesian Å, so skewed cells are handled), or at itself when no neighbour
is higher. Following the pointers to their fixed points by pointer jumping (``p ← p[p]``, about
log₂(longest path) numpy passes) labels each voxel with the local maximum its ascent ends on. No
Python loop runs over voxels; the loops are over the 26 neighbour offsets and the jumping passes.

The basins of the ELF then partition any density given on the same grid: the electrons of a basin
are ``Σ ρ ΔV`` over its voxels (e), its volume ``n_voxels ΔV`` (Å³).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Lattice

#: the 26 neighbour offsets of a voxel
OFFSETS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)])


@dataclass
class Basins:
    """Watershed of a periodic field.

    Attributes:
        labels: flat voxel index of the maximum each voxel's ascent ends on, shape of the grid.
        maxima: flat indices of the maxima (sorted), one per basin.
        shape: grid shape.
    """

    labels: np.ndarray
    maxima: np.ndarray
    shape: tuple[int, int, int]

    def basin_index(self) -> np.ndarray:
        """Labels renumbered 0..n_basins−1 in the order of :attr:`maxima`."""
        return np.searchsorted(self.maxima, self.labels)

    def integrate(self, field: np.ndarray, voxel_volume: float) -> np.ndarray:
        """``Σ field ΔV`` over each basin (e.g. electrons from a density in e/Å³), in the order of :attr:`maxima`."""
        return np.bincount(self.basin_index().ravel(), weights=np.asarray(field, float).ravel(),
                           minlength=len(self.maxima)) * voxel_volume

    def volumes(self, voxel_volume: float) -> np.ndarray:
        """Volume of each basin (Å³), in the order of :attr:`maxima`."""
        return np.bincount(self.basin_index().ravel(), minlength=len(self.maxima)) * voxel_volume


#: two uphill slopes closer than this fraction of (field range / shortest step) are a tie, which goes to
#: the earlier neighbour in :data:`OFFSETS`: float noise (a 1e-7 change of the ELF) cannot then move a
#: voxel midway between symmetry-equivalent maxima from one basin to the other
TIE_TOLERANCE = 1e-5


def steepest_ascent_pointers(field: np.ndarray, lattice: Lattice | None = None) -> np.ndarray:
    """Flat index of the steepest-uphill neighbour of every voxel (itself at a maximum or on a flat top).

    Near-equal slopes (within :data:`TIE_TOLERANCE` of the field's range per shortest step) are ties,
    resolved in :data:`OFFSETS` order, so the partition does not depend on the last bits of the field.
    """
    field = np.asarray(field, float)
    shape = field.shape
    n = np.asarray(shape)
    matrix = lattice.matrix if lattice is not None else np.eye(3)
    steps = (OFFSETS / n) @ matrix  # Cartesian length of each neighbour step (Å)
    lengths = np.linalg.norm(steps, axis=1)
    tie = TIE_TOLERANCE * float(np.ptp(field)) / float(lengths.min())
    padded = np.pad(field, 1, mode="wrap")  # neighbour views are slices of it: no copies
    nx, ny, nz = shape
    to_beat = np.zeros(shape)  # 0 until an uphill neighbour is found, then its slope + tie
    best = np.full(shape, -1, dtype=np.int8)
    slope = np.empty(shape)
    better = np.empty(shape, dtype=bool)
    for o, ((a, b, c), length) in enumerate(zip(OFFSETS, lengths)):
        neighbour = padded[1 + a:1 + a + nx, 1 + b:1 + b + ny, 1 + c:1 + c + nz]  # field[i + offset]
        np.subtract(neighbour, field, out=slope)
        slope /= length
        np.greater(slope, to_beat, out=better)
        slope += tie
        np.copyto(to_beat, slope, where=better)
        np.copyto(best, np.int8(o), where=better)
    idx = np.indices(shape)
    step = np.where(best >= 0, OFFSETS[np.maximum(best, 0)].transpose(3, 0, 1, 2), 0)
    target = (idx + step) % n[:, None, None, None]
    return np.ravel_multi_index(tuple(target), shape)


def watershed(field: np.ndarray, lattice: Lattice | None = None) -> Basins:
    """Periodic steepest-ascent watershed of ``field`` (see the module docstring)."""
    field = np.asarray(field, float)
    pointer = steepest_ascent_pointers(field, lattice).ravel()
    for _ in range(int(math.ceil(math.log2(max(field.size, 2)))) + 2):
        jumped = pointer[pointer]
        if np.array_equal(jumped, pointer):
            break
        pointer = jumped
    else:  # pragma: no cover - a cycle cannot occur (slopes are strictly positive), kept as a guard
        raise RuntimeError("watershed pointers did not converge")
    labels = pointer.reshape(field.shape)
    return Basins(labels=labels, maxima=np.unique(pointer), shape=field.shape)


#: largest n_basins² for which saddles are reduced in a dense (n_basins × n_basins) table
_DENSE_PAIRS = 4_000_000


def _boundary_saddles(index: np.ndarray, field: np.ndarray, n_basins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adjacent basin pairs (a < b) and their saddle: the highest ``min(f[i], f[j])`` over neighbouring
    voxel pairs i ∈ a, j ∈ b (26-neighbourhood; each unordered offset once).

    The pairs are reduced per offset into a dense n_basins² table of maxima (``np.maximum.at``) when
    it is small, else by one sort of the pair keys: the same numbers either way (tested), the dense
    table without sorting millions of boundary voxel pairs.
    """
    dense = n_basins * n_basins <= _DENSE_PAIRS
    table = np.full(n_basins * n_basins if dense else 0, -np.inf)
    keys, values = [], []
    for offset in OFFSETS[:13]:
        shift = tuple(int(-o) for o in offset)
        other = np.roll(index, shift=shift, axis=(0, 1, 2))
        cross = other != index
        if not cross.any():
            continue
        a, b = index[cross], other[cross]
        key = np.minimum(a, b).astype(np.int64) * n_basins + np.maximum(a, b)
        value = np.minimum(field[cross], np.roll(field, shift=shift, axis=(0, 1, 2))[cross])
        if dense:
            np.maximum.at(table, key, value)
        else:
            keys.append(key)
            values.append(value)
    if dense:
        unique = np.flatnonzero(table > -np.inf)
        saddle = table[unique]
    elif keys:
        unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
        saddle = np.full(len(unique), -np.inf)
        np.maximum.at(saddle, inverse, np.concatenate(values))
    else:
        unique, saddle = np.zeros(0, np.int64), np.zeros(0)
    return unique // n_basins, unique % n_basins, saddle


def merge_shallow_basins(basins: Basins, field: np.ndarray, tolerance: float) -> Basins:
    """Merge every basin whose maximum rises less than ``tolerance`` above its highest saddle to a higher basin.

    Persistence simplification: the saddle between two adjacent basins is the highest
    ``min(f[i], f[j])`` over neighbouring voxel pairs across their boundary (26-neighbourhood). Basins
    are visited from the lowest maximum up; a shallow one joins the neighbour it spills into. This
    removes noise maxima (surrogate ripples, Fourier ringing) while keeping genuine shallow attractors
    (a prominence of 0.01 in ELF is far above numerical noise of DFT grids).
    """
    if tolerance <= 0 or len(basins.maxima) < 2:
        return basins
    field = np.asarray(field, float)
    index = basins.basin_index()
    n_basins = len(basins.maxima)
    pair_a, pair_b, saddle = _boundary_saddles(index, field, n_basins)
    if not len(saddle):
        return basins
    peak = field.ravel()[basins.maxima]
    neighbours: dict[int, list[tuple[int, float]]] = {}
    for a, b, s in zip(pair_a.tolist(), pair_b.tolist(), saddle.tolist()):
        neighbours.setdefault(a, []).append((b, s))
        neighbours.setdefault(b, []).append((a, s))
    parent = np.arange(n_basins)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for b in np.argsort(peak, kind="stable").tolist():  # lowest maximum first
        best, best_saddle = -1, -np.inf
        for n, s in neighbours.get(b, ()):
            root = find(n)
            if root == b or (peak[root], root) <= (peak[b], b):
                continue
            if s > best_saddle:
                best, best_saddle = root, s
        if best >= 0 and peak[b] - best_saddle < tolerance:
            parent[b] = best
    roots = np.array([find(i) for i in range(n_basins)])
    labels = basins.maxima[roots][index]
    return Basins(labels=labels, maxima=np.unique(basins.maxima[roots]), shape=basins.shape)
