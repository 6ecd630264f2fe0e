"""Symmetry pooling with spglib's Seitz operators (W, w), on whole cells and in the patch frame.

Whole cell. Let g = (W, w) map the grid onto itself: voxel i goes to ``S i + t`` (mod N) with
``S_ba = W_ba N_b / N_a`` and ``t = w N`` (:meth:`elf_workflows.symmetry.SpaceGroup.voxel_images`).
The pooled prediction is the group average ``P = (1/|G|) Σ_g g⁻¹·f(g·x)``. The SAD input x is
invariant (``g·x == x`` voxel for voxel on a compatible grid), so ``f(g·x) = f(x)`` and pooling is the
group average of the single prediction, ``P[i] = (1/|G|) Σ_g f(x)[S_g i + t_g]``: one network pass,
and P is invariant under every grid-compatible operator to float precision.

Patch frame. A training patch is a box of P³ voxels cut (with wrap-around) at an origin o. A point
operation acts on it as a rotation about the patch centre c = (P−1)/2 in voxel-index space,
``j → S (j − c) + c``, which maps the box onto itself when S is a signed permutation matrix. We
use every signed permutation S that is an isometry of the voxel lattice (Sᵀ M S = M with M the
metric of the voxel edge vectors a_i/N_i): these are real rotations/reflections of space, under
which the ELF of the rotated density is the rotated ELF. They include the point part of every
space-group operator that is a signed permutation in the cell frame (cubic, tetragonal,
orthorhombic cells; the a↔b swap and −1 of hexagonal ones); the operator's fractional
translation then becomes an origin shift, since ``x[o + S(j − c) + c] = x[o' + S(j − c) + c]``
with ``o' = o − S⁻¹ t`` for an invariant field. Operators that are not signed permutations in the
patch frame (e.g. hexagonal threefold axes) act only through the whole-cell pooling.
In training, the network sees the rotated patches of K sampled operators, the predictions are
rotated back and averaged, and the loss is taken on the pooled prediction.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import torch

from elf_workflows.symmetry import SpaceGroup, get_space_group, symmetrize

if TYPE_CHECKING:
    from pymatgen.core import Structure


def pool_cell(field: np.ndarray, group: SpaceGroup) -> np.ndarray:
    """Group average of a cell field over every operator that maps its grid onto itself (float64 sum,
    returned in the field's dtype): :func:`elf_workflows.symmetry.symmetrize`."""
    return symmetrize(field, group).astype(np.asarray(field).dtype)


def _signed_permutations() -> np.ndarray:
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            S = np.zeros((3, 3), dtype=np.int64)
            for row, (col, sign) in enumerate(zip(perm, signs)):
                S[row, col] = sign
            mats.append(S)
    return np.stack(mats)


_SIGNED_PERMS = _signed_permutations()


def patch_operations(lattice_matrix: np.ndarray, shape: tuple[int, int, int], tol: float = 1e-3) -> np.ndarray:
    """Signed axis permutations S (index frame, ``j → S j``) that are isometries of the voxel lattice.

    Args:
        lattice_matrix: rows a_1, a_2, a_3 (Å).
        shape: grid sizes (N_1, N_2, N_3).

    Returns:
        integer array ``(n_ops, 3, 3)``; the identity is always first.
    """
    edges = np.asarray(lattice_matrix, float) / np.asarray(shape, float)[:, None]
    metric = edges @ edges.T
    scale = np.abs(metric).max()
    keep = [S for S in _SIGNED_PERMS if np.abs(S.T @ metric @ S - metric).max() <= tol * scale]
    keep.sort(key=lambda S: not np.array_equal(S, np.eye(3, dtype=np.int64)))
    return np.stack(keep)


def group_patch_operations(structure: Structure, shape: tuple[int, int, int]) -> np.ndarray:
    """The signed-permutation point parts (index frame) of the structure's grid-compatible operators."""
    group = get_space_group(structure)
    n = np.asarray(shape)
    out = {}
    for W in group.compatible_operations(shape)[0]:
        S = np.round(W * (n[:, None] / n[None, :])).astype(np.int64)
        if np.all(np.abs(S).sum(0) == 1) and np.all(np.abs(S).sum(1) == 1):
            out[S.tobytes()] = S
    return np.stack(list(out.values()))


def _as_axes(S: np.ndarray) -> tuple[list[int], list[int]]:
    """For ``Y[j] = X[S(j−c)+c]`` on a cube: the permutation and flips that realise it on a tensor."""
    # Y[j_0, j_1, j_2] = X[k] with k_r = sign_r * (j_{col_r} - c) + c  for row r
    cols = [int(np.nonzero(S[r])[0][0]) for r in range(3)]
    signs = [int(S[r, cols[r]]) for r in range(3)]
    return cols, signs


def rotate_patch(x: torch.Tensor, S: np.ndarray) -> torch.Tensor:
    """``Y[..., j] = X[..., S (j − c) + c]`` for the last three (equal) axes of ``x``; c the patch centre."""
    cols, signs = _as_axes(S)
    # build Y: Y[j] = X[k], k_r = σ_r (j_{col_r} − c) + c. First flip X's axis r where σ_r = −1,
    # giving X'[k] = X[σ k̃]; then Y[j] = X'[j_{col_0}, j_{col_1}, j_{col_2}] i.e. Y axis col_r ← X' axis r.
    flip = [d - 3 + x.dim() for d in range(3) if signs[d] < 0]
    y = torch.flip(x, flip) if flip else x
    lead = list(range(x.dim() - 3))
    # Y[..., j_0, j_1, j_2] = X'[..., j_{cols[0]}, j_{cols[1]}, j_{cols[2]}]: axis r of X' ends at position cols[r]
    order = [0, 0, 0]
    for r in range(3):
        order[cols[r]] = r
    return y.permute(*lead, *[len(lead) + o for o in order])


def unrotate_patch(y: torch.Tensor, S: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`rotate_patch` (S of a signed permutation: S⁻¹ = Sᵀ)."""
    return rotate_patch(y, np.asarray(S).T)
