"""Space-group symmetry of structures and of fields on their grids (spglib, no hand-written search).

A Seitz operator (W, w) maps fractional coordinates x → W·x + w in the frame of the cell given. It
maps a grid of shape N onto itself when every W_ba·N_b/N_a and every w_b·N_b is an integer; then it
permutes voxels, and a symmetric field satisfies ``f[image(i)] == f[i]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
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
        """Axes that rotations mix (they need equal grid sizes), as groups of axis indices (computed once per group)."""
        if "axis_groups" not in self._cache:
            self._cache["axis_groups"] = self._axis_groups()
        return [list(axes) for axes in self._cache["axis_groups"]]

    def _axis_groups(self) -> list[list[int]]:
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
        """Per axis, the least common denominator of the fractional translations (computed once per group)."""
        if "translation_denominators" not in self._cache:
            self._cache["translation_denominators"] = self._translation_denominators()
        return list(self._cache["translation_denominators"])

    def _translation_denominators(self) -> list[int]:
        out = []
        for a in range(3):
            values = np.unique(np.round(self.translations[:, a], 9))  # a handful of distinct values
            dens = [Fraction(float(t)).limit_denominator(48).denominator for t in values]
            out.append(math.lcm(*dens) if dens else 1)
        return out


def get_space_group(structure: Structure, symprec: float = 1e-3) -> SpaceGroup:
    """Space group of ``structure`` from spglib, operators in the structure's own cell.

    spglib takes 3–9 ms for a one- or two-atom cubic cell here (its symmetry search itself), and a
    screening asks for many groups of the same cells: each cell several times (grid, prediction,
    attractors, document), and each prototype at several pressures and for many pairs of elements.
    Two caches of the last 256 cells, both keyed on ``symprec``: the exact cell, and its *shape* —
    the lattice divided by V^(1/3), the fractional coordinates rounded to 1e-10 and which sites share
    a species (:func:`_cell_shape_key`) — so a uniformly compressed copy of a known cell, or the same
    prototype with other elements, takes its operators (fractional, hence scale-free) after
    :func:`operations_hold` has checked that every one maps the new cell's atoms onto atoms of the
    same species within ``symprec``; a cell that fails the check goes to spglib.
    """
    lattice = np.ascontiguousarray(structure.lattice.matrix, dtype=float)
    frac = np.ascontiguousarray(structure.frac_coords, dtype=float)
    numbers = tuple(site.specie.Z for site in structure)
    exact = (lattice.tobytes(), frac.tobytes(), numbers, float(symprec))
    if exact in _EXACT_CELLS:
        return _EXACT_CELLS[exact]
    shape_key = _cell_shape_key(lattice, frac, numbers, float(symprec))
    group = _CELL_SHAPES.get(shape_key)
    if group is None or not operations_hold(group.rotations, group.translations, lattice, frac, numbers, symprec):
        group = _space_group_of_cell(lattice, frac, numbers, float(symprec))
        _remember(_CELL_SHAPES, shape_key, group)
    _remember(_EXACT_CELLS, exact, group)
    return group


#: cells whose groups are kept (each cache keeps its most recent entries)
_CACHE_SIZE = 256
_EXACT_CELLS: dict = {}
_CELL_SHAPES: dict = {}


def clear_caches() -> None:
    """Forget every cached group (and with them their grid maps and voxel orbits)."""
    _EXACT_CELLS.clear()
    _CELL_SHAPES.clear()


def _remember(cache: dict, key, value) -> None:
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.pop(next(iter(cache)))


def _cell_shape_key(lattice: np.ndarray, frac: np.ndarray, numbers: tuple[int, ...], symprec: float) -> tuple:
    """The cell up to a uniform scale and a renaming of its species.

    Lattice / V^(1/3) and fractional coordinates (mod 1), rounded to 1e-10, and which sites share a
    species (numbered in order of first appearance): B2 CaBa and B2 FePb at any volume share a key.
    """
    scale = abs(np.linalg.det(lattice)) ** (1.0 / 3.0)
    wrapped = np.round(np.mod(frac, 1.0), 10) % 1.0
    pattern = tuple(list(dict.fromkeys(numbers)).index(z) for z in numbers)
    return (np.round(lattice / scale, 10).tobytes(), wrapped.tobytes(), pattern, symprec)


def operations_hold(rotations: np.ndarray, translations: np.ndarray, lattice: np.ndarray, frac: np.ndarray,
                    numbers: tuple[int, ...], symprec: float) -> bool:
    """Whether every Seitz operator (W, w) maps each atom onto an atom of the same species within ``symprec`` Å.

    Vectorised over operators and atom pairs (n_ops × n_atoms² distances, minimum image by rounding
    the fractional difference, exact for the small metal cells screened here).
    """
    species = np.asarray(numbers)
    moved = np.einsum("gij,nj->gni", rotations, frac) + translations[:, None, :]  # (ops, atoms, 3)
    diff = moved[:, :, None, :] - frac[None, None, :, :]
    diff -= np.round(diff)
    dist = np.linalg.norm(diff @ lattice, axis=-1)  # (ops, moved atom, target atom), Å
    dist[:, species[:, None] != species[None, :]] = np.inf
    return bool(np.all(dist.min(axis=2) < symprec))


def _space_group_of_cell(lattice: np.ndarray, frac: np.ndarray, numbers: tuple[int, ...], symprec: float) -> SpaceGroup:
    cell = (lattice, frac, list(numbers))
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
        scaled: ``S_ba = W_ba N_b / N_a`` per operator, ``(n, 3, 3)`` integers: j = S i + t (mod N).
        shifts: ``t = w N`` per operator, ``(n, 3)`` integers.
        source: for operators that permute and flip axes (j_b = σ_b i_{a_b} + t_b), a_b per row;
            −1 throughout for operators that mix axes.
        signs: σ_b per row (0 where ``source`` is −1).
    """

    ops: np.ndarray
    scaled: np.ndarray
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
        group._cache[key] = GridMaps(ops, scaled, shifts, source, signs)
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
    """Average a periodic field over every space-group operator that maps its grid onto itself (float64).

    The group average at a voxel is the mean of the field over the voxel's orbit (each orbit voxel is
    reached by as many operators), so it is one ``bincount`` over :func:`voxel_orbits`' labels.
    """
    group = _as_space_group(structure_or_group, symprec)
    field = np.asarray(field)
    orbits = voxel_orbits(group, field.shape)
    if np.iscomplexobj(field):
        return orbits.mean(field.real) + 1j * orbits.mean(field.imag)
    return orbits.mean(field)


@dataclass(frozen=True)
class VoxelOrbits:
    """The orbits of a grid's voxels under a group's grid-compatible operators.

    Attributes:
        shape: the grid.
        labels: orbit of each voxel, C-order flat ``(N,)`` int32 (orbits numbered in the order of
            their first voxel).
        representatives: flat index of each orbit's first voxel, ``(n_orbits,)``.
        sizes: voxels per orbit, ``(n_orbits,)``.
    """

    shape: Shape
    labels: np.ndarray
    representatives: np.ndarray
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.representatives)

    def mean(self, field: np.ndarray) -> np.ndarray:
        """The orbit mean of a real field on :attr:`shape` at every voxel (float64): its group average."""
        sums = np.bincount(self.labels, weights=np.asarray(field, float).ravel(), minlength=len(self))
        return (sums / self.sizes)[self.labels].reshape(self.shape)

    def broadcast(self, values: np.ndarray) -> np.ndarray:
        """The field on :attr:`shape` that takes ``values[k]`` on every voxel of orbit k."""
        return np.asarray(values)[self.labels].reshape(self.shape)


#: voxels × operators broadcast at once when orbits are found (bounds the temporary to 64 MB of int32)
_ORBIT_BLOCK = 2**24


def _axis_image_terms(maps: GridMaps, shape: Shape, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the axis-permuting operators: T_a ``(n_ops, N_a)`` with flat image index = T_0[i_0] + T_1[i_1] + T_2[i_2].

    Image coordinate b is j_b = σ_b i_{a_b} + t_b (mod N_b), so its share j_b·stride_b is a function
    of the one source index i_{a_b}; T_a sums the shares whose source axis is a (N_b = N_a there).
    """
    rows = maps.source[:, 0] >= 0
    source, signs, shifts = maps.source[rows], maps.signs[rows], maps.shifts[rows]
    strides = (shape[1] * shape[2], shape[2], 1)
    terms = [np.zeros((len(source), m), dtype=dtype) for m in shape]
    for b in range(3):
        share = (signs[:, b, None] * np.arange(shape[b])[None, :] + shifts[:, b, None]) % shape[b] * strides[b]
        for a in range(3):
            if shape[a] == shape[b]:
                terms[a] += np.where(source[:, b, None] == a, share, 0).astype(dtype)
    return terms[0][:, :, None, None], terms[1][:, None, :, None], terms[2][:, None, None, :]


def _right_coset_representatives(maps: GridMaps, shape: Shape) -> list[int]:
    """Operators m_k (group indices) whose right cosets P·m_k, with P the axis-permuting operators, cover the rest.

    The axis-permuting operators form a subgroup P (products of signed permutations are signed
    permutations), so the compatible group is P ∪ P·m_1 ∪ …; operators compose in the grid's index
    frame, j = S i + t (mod N).
    """
    n, scaled = np.asarray(shape), maps.scaled
    permuting = maps.source[:, 0] >= 0

    def key(S: np.ndarray, t: np.ndarray) -> bytes:
        return S.tobytes() + np.mod(t, n).tobytes()

    perm = [(scaled[r], maps.shifts[r]) for r in np.nonzero(permuting)[0]]
    covered = {key(S, t) for S, t in perm}
    reps = []
    for r in np.nonzero(~permuting)[0]:
        if key(scaled[r], maps.shifts[r]) in covered:
            continue
        reps.append(int(maps.ops[r]))
        covered |= {key(S @ scaled[r], S @ maps.shifts[r] + t) for S, t in perm}
    return reps


def voxel_orbits(group: SpaceGroup, shape: Shape) -> VoxelOrbits:
    """:class:`VoxelOrbits` of ``group`` on ``shape`` (cached on the group).

    Each voxel's orbit is named by its smallest flat index over all operator images (the set of
    grid-compatible operators is a group, so that minimum is the same for every voxel of an orbit):
    a minimum over the axis-permuting operators P, whose flat images are broadcast sums of three 1D
    terms (:func:`_axis_image_terms`, blocks of operators at once), then over the right cosets P·m of
    the operators that mix axes: min over p·m of the image index = the P-minimum at m(x), one gather
    per coset (:func:`_right_coset_representatives`; 3 for primitive fcc, 2 for hcp).
    """
    shape = tuple(int(m) for m in shape)
    key = ("orbits", shape)
    if key not in group._cache:
        maps = grid_maps(group, shape)
        n = math.prod(shape)
        dtype = np.int32 if n < 2**31 else np.int64
        index = np.arange(n, dtype=dtype)
        least = index.reshape(shape).copy()
        rows = max(1, _ORBIT_BLOCK // n)  # operators per broadcast block
        terms = _axis_image_terms(maps, shape, dtype)
        for start in range(0, len(terms[0]), rows):
            images = terms[0][start:start + rows] + terms[1][start:start + rows] + terms[2][start:start + rows]
            np.minimum(least, images.min(axis=0), out=least)
        least = least.ravel()
        within_p = least.copy() if len(maps.ops) > len(terms[0]) else least
        for op in _right_coset_representatives(maps, shape):  # min over g = p·m of the P-minimum at m(x)
            np.minimum(least, within_p[group.flat_voxel_images(shape, op).ravel()], out=least)
        first = least == index
        labels = (np.cumsum(first, dtype=dtype) - 1)[least]
        representatives = np.flatnonzero(first)
        group._cache[key] = VoxelOrbits(shape, labels, representatives, np.bincount(labels, minlength=len(representatives)))
    return group._cache[key]


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
