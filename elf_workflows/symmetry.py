"""Space-group symmetry of structures and of fields on their grids (spglib, no hand-written search).

A Seitz operator (W, w) maps fractional coordinates x → W·x + w in the frame of the cell given. It
maps a grid of shape N onto itself when every W_ba·N_b/N_a and every w_b·N_b is an integer; then it
permutes voxels, and a symmetric field satisfies ``f[image(i)] == f[i]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import spglib
from pymatgen.core import Composition, Element

from elf_workflows.errors import InputError

if TYPE_CHECKING:
    from pymatgen.core import Structure

Shape = tuple[int, int, int]
_TOL = 1e-6


@dataclass(frozen=True)
class SpaceGroup:
    """The space group of a structure, as Seitz operators in the structure's own fractional frame.

    Attributes:
        number: International Tables number.
        symbol: Hermann–Mauguin symbol.
        rotations: integer matrices W, shape ``(n_ops, 3, 3)``.
        translations: fractional translations w in [0, 1), shape ``(n_ops, 3)``.
        wyckoffs: Wyckoff letter of each site.
        equivalent_atoms: index of the symmetry-distinct representative of each site.
        symprec: tolerance used (Å).
    """

    number: int
    symbol: str
    rotations: np.ndarray
    translations: np.ndarray
    wyckoffs: tuple[str, ...] = ()
    equivalent_atoms: tuple[int, ...] = ()
    symprec: float = 1e-3
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.rotations)

    def is_grid_compatible(self, shape: Shape) -> np.ndarray:
        """Boolean mask: which operators map the grid ``shape`` onto itself."""
        n = np.asarray(shape, float)
        ratio = self.rotations * (n[None, :, None] / n[None, None, :])  # W_ba N_b / N_a
        ok_rot = np.all(np.abs(ratio - np.round(ratio)) < _TOL, axis=(1, 2))
        wn = self.translations * n[None, :]
        ok_tr = np.all(np.abs(wn - np.round(wn)) < 1e-4, axis=1)
        return ok_rot & ok_tr

    def compatible_operations(self, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
        """(W, w) of the operators that map the grid ``shape`` onto itself."""
        mask = self.is_grid_compatible(shape)
        return self.rotations[mask], self.translations[mask]

    def voxel_images(self, shape: Shape, op: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index arrays (ix, iy, iz) of the voxel that operator ``op`` sends each voxel to."""
        flat = self.flat_voxel_images(shape, op)
        return np.unravel_index(flat, shape)  # type: ignore[return-value]

    def flat_voxel_images(self, shape: Shape, op: int) -> np.ndarray:
        """C-order flat index of the voxel that operator ``op`` sends each voxel to, shape ``shape``.

        j_b = Σ_a W_ba (N_b/N_a) i_a + w_b N_b (mod N_b), integers for a compatible operator; built
        from three 1D axis terms added by broadcasting (no per-voxel matrix product).
        """
        W, w = self.rotations[op], self.translations[op]
        n = np.asarray(shape)
        scaled = np.round(W * (n[:, None] / n[None, :])).astype(np.int64)
        shift = np.round(w * n).astype(np.int64)
        axes = [np.arange(m) for m in shape]
        strides = (shape[1] * shape[2], shape[2], 1)
        flat = np.zeros(shape, dtype=np.int64)
        for b in range(3):  # image coordinate b, taken mod N_b, times its stride
            coord = (scaled[b, 0] * axes[0][:, None, None] + scaled[b, 1] * axes[1][None, :, None]
                     + scaled[b, 2] * axes[2][None, None, :] + shift[b]) % shape[b]
            flat += coord * strides[b]
        return flat

    def axis_groups(self) -> list[list[int]]:
        """Axes that rotations mix (they need equal grid sizes), as groups of axis indices."""
        parent = [0, 1, 2]

        def find(a: int) -> int:
            while parent[a] != a:
                a = parent[a]
            return a

        for W in self.rotations:
            for a in range(3):
                for b in range(3):
                    if a != b and W[b, a] != 0:
                        parent[find(a)] = find(b)
        groups: dict[int, list[int]] = {}
        for a in range(3):
            groups.setdefault(find(a), []).append(a)
        return list(groups.values())

    def translation_denominators(self) -> list[int]:
        """Per axis, the least common denominator of the fractional translations."""
        out = []
        for a in range(3):
            values = np.unique(np.round(self.translations[:, a], 9))  # a handful of distinct values
            dens = [Fraction(float(t)).limit_denominator(48).denominator for t in values]
            out.append(math.lcm(*dens) if dens else 1)
        return out


def get_space_group(structure: Structure, symprec: float = 1e-3) -> SpaceGroup:
    """Space group of ``structure`` from spglib, operators in the structure's own cell.

    spglib takes 3–9 ms for a one- or two-atom cubic cell here, and one screened cell needs its group
    several times (grid, prediction, attractors, document), so results are kept for the last 256
    distinct cells, keyed on the exact lattice, coordinates, species and ``symprec``.
    """
    lattice = np.ascontiguousarray(structure.lattice.matrix, dtype=float)
    frac = np.ascontiguousarray(structure.frac_coords, dtype=float)
    numbers = tuple(site.specie.Z for site in structure)
    return _space_group_of_cell(lattice.tobytes(), frac.tobytes(), numbers, float(symprec))


@lru_cache(maxsize=256)
def _space_group_of_cell(lattice: bytes, frac: bytes, numbers: tuple[int, ...], symprec: float) -> SpaceGroup:
    cell = (np.frombuffer(lattice).reshape(3, 3), np.frombuffer(frac).reshape(-1, 3), list(numbers))
    dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if dataset is None:
        formula = Composition({Element.from_Z(z): numbers.count(z) for z in set(numbers)}).reduced_formula
        raise InputError(f"spglib found no symmetry for {formula} (symprec={symprec})")
    rotations = np.asarray(dataset.rotations, dtype=np.int64)
    translations = np.mod(np.asarray(dataset.translations, float), 1.0)
    for array in (rotations, translations):  # shared by every caller of the cache
        array.setflags(write=False)
    return SpaceGroup(
        number=int(dataset.number),
        symbol=str(dataset.international),
        rotations=rotations,
        translations=translations,
        wyckoffs=tuple(dataset.wyckoffs),
        equivalent_atoms=tuple(int(i) for i in dataset.equivalent_atoms),
        symprec=symprec,
    )


def _as_space_group(structure_or_group, symprec: float) -> SpaceGroup:
    return structure_or_group if isinstance(structure_or_group, SpaceGroup) else get_space_group(structure_or_group, symprec)


@dataclass(frozen=True)
class GridMaps:
    """The voxel maps of a group's grid-compatible operators on one grid, analysed once.

    Attributes:
        ops: indices of the compatible operators in the group.
        shifts: ``t = w N`` per operator, ``(n, 3)`` integers.
        source: for operators that permute and flip axes (j_b = σ_b i_{a_b} + t_b), a_b per row;
            −1 throughout for operators that mix axes.
        signs: σ_b per row (0 where ``source`` is −1).
    """

    ops: np.ndarray
    shifts: np.ndarray
    source: np.ndarray
    signs: np.ndarray


def grid_maps(group: SpaceGroup, shape: Shape) -> GridMaps:
    """:class:`GridMaps` of ``group`` on ``shape`` (vectorised over operators, cached on the group)."""
    key = ("grid_maps", tuple(int(m) for m in shape))
    if key not in group._cache:
        ops = np.nonzero(group.is_grid_compatible(shape))[0]
        n = np.asarray(shape)
        scaled = np.round(group.rotations[ops] * (n[None, :, None] / n[None, None, :])).astype(np.int64)  # S_ba
        shifts = np.round(group.translations[ops] * n).astype(np.int64)
        nonzero = np.abs(scaled)
        permutes = np.all(nonzero.sum(1) == 1, axis=1) & np.all(nonzero.sum(2) == 1, axis=1)
        source = np.where(permutes[:, None], nonzero.argmax(2), -1)
        signs = np.where(permutes[:, None], np.take_along_axis(scaled, nonzero.argmax(2)[..., None], 2)[..., 0], 0)
        group._cache[key] = GridMaps(ops, shifts, source, signs)
    return group._cache[key]


def apply_operation(field: np.ndarray, group: SpaceGroup, op: int) -> np.ndarray:
    """The field seen through operator ``op``: ``out[i] = field[image(i)]`` (equal to ``field`` if symmetric).

    When the operator permutes and flips the grid axes (every operator of a cubic, tetragonal or
    orthorhombic cell on its conventional grid) this is flips, one periodic roll and a transpose
    (:func:`_permuted_image`); otherwise a gather through :meth:`SpaceGroup.flat_voxel_images`. Both
    give the same array (tested).
    """
    field = np.asarray(field)
    maps = grid_maps(group, field.shape)
    row = np.nonzero(maps.ops == op)[0]
    if len(row) and maps.source[row[0], 0] >= 0:
        moved = _permuted_image(field, maps.signs[row[0]], maps.shifts[row[0]])
        return np.ascontiguousarray(np.transpose(moved, np.argsort(maps.source[row[0]])))
    return field.ravel()[group.flat_voxel_images(field.shape, op)]


def _permuted_image(field: np.ndarray, signs: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """``F[k] = field[σ_b k_b + t_b mod N_b]``: flips (σ = −1 reverses an axis about index 0) and one roll.

    The image of an axis-permuting operator is then ``F`` with its axis b moved to position a_b.
    """
    flips = tuple(b for b in range(3) if signs[b] < 0)
    moved = np.flip(field, flips) if flips else field
    return np.roll(moved, [int(-t if s > 0 else t + 1) for s, t in zip(signs, shifts)], axis=(0, 1, 2))


def symmetrize(field: np.ndarray, structure_or_group, symprec: float = 1e-3) -> np.ndarray:
    """Average a periodic field over every space-group operator that maps its grid onto itself.

    Axis-permuting operators are flips and rolls summed per permutation (one running sum at a time)
    before one transpose each (six at most); operators that mix axes are gathered voxel by voxel.
    """
    group = _as_space_group(structure_or_group, symprec)
    field = np.asarray(field)
    maps = grid_maps(group, field.shape)
    out = np.zeros(field.shape, dtype=np.result_type(field.dtype, np.float64))
    summed, current = None, None  # one permutation's running sum at a time (big grids hold two arrays, not seven)
    for row in sorted(range(len(maps.ops)), key=lambda r: tuple(maps.source[r])):
        source = tuple(int(a) for a in maps.source[row])
        if source[0] < 0:
            out += field.ravel()[group.flat_voxel_images(field.shape, int(maps.ops[row]))]
            continue
        if source != current:
            if summed is not None:
                out += np.transpose(summed, np.argsort(current))
            summed, current = np.zeros(field.shape, dtype=out.dtype), source
        summed += _permuted_image(field, maps.signs[row], maps.shifts[row])
    if summed is not None:
        out += np.transpose(summed, np.argsort(current))
    return out / len(maps.ops)


def symmetry_error(field: np.ndarray, structure_or_group, symprec: float = 1e-3) -> float:
    """Largest |f(image(i)) − f(i)| over grid-compatible operators, relative to max |f|."""
    group = _as_space_group(structure_or_group, symprec)
    scale = float(np.abs(field).max()) or 1.0
    worst = 0.0
    for op in np.nonzero(group.is_grid_compatible(field.shape))[0]:
        worst = max(worst, float(np.abs(apply_operation(field, group, int(op)) - field).max()))
    return worst / scale


def seitz_symbol(W: np.ndarray, w: np.ndarray) -> str:
    """A compact text form of (W, w): e.g. ``(-y, x-y, z+1/3)``."""
    axes = "xyz"
    parts = []
    for b in range(3):
        terms = ""
        for a in range(3):
            c = int(W[b, a])
            if c:
                sign = "-" if c < 0 else ("+" if terms else "")
                terms += f"{sign}{'' if abs(c) == 1 else abs(c)}{axes[a]}"
        t = Fraction(float(w[b])).limit_denominator(48)
        if t:
            terms += f"+{t}"
        parts.append(terms or "0")
    return "(" + ", ".join(parts) + ")"
