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
            dens = [Fraction(float(t)).limit_denominator(48).denominator for t in self.translations[:, a]]
            out.append(math.lcm(*dens) if dens else 1)
        return out


def get_space_group(structure: Structure, symprec: float = 1e-3) -> SpaceGroup:
    """Space group of ``structure`` from spglib, operators in the structure's own cell."""
    cell = (structure.lattice.matrix, structure.frac_coords, [site.specie.Z for site in structure])
    dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if dataset is None:
        raise InputError(f"spglib found no symmetry for {structure.composition.reduced_formula} (symprec={symprec})")
    return SpaceGroup(
        number=int(dataset.number),
        symbol=str(dataset.international),
        rotations=np.asarray(dataset.rotations, dtype=np.int64),
        translations=np.mod(np.asarray(dataset.translations, float), 1.0),
        wyckoffs=tuple(dataset.wyckoffs),
        equivalent_atoms=tuple(int(i) for i in dataset.equivalent_atoms),
        symprec=symprec,
    )


def _as_space_group(structure_or_group, symprec: float) -> SpaceGroup:
    return structure_or_group if isinstance(structure_or_group, SpaceGroup) else get_space_group(structure_or_group, symprec)


def apply_operation(field: np.ndarray, group: SpaceGroup, op: int) -> np.ndarray:
    """The field seen through operator ``op``: ``out[i] = field[image(i)]`` (equal to ``field`` if symmetric)."""
    field = np.asarray(field)
    return field.ravel()[group.flat_voxel_images(field.shape, op)]


def symmetrize(field: np.ndarray, structure_or_group, symprec: float = 1e-3) -> np.ndarray:
    """Average a periodic field over every space-group operator that maps its grid onto itself."""
    group = _as_space_group(structure_or_group, symprec)
    field = np.asarray(field)
    ops = np.nonzero(group.is_grid_compatible(field.shape))[0]
    out = np.zeros(field.shape, dtype=np.result_type(field.dtype, np.float64))
    for op in ops:
        out += apply_operation(field, group, int(op))
    return out / len(ops)


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
