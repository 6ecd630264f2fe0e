"""Symmetry: spglib operators, their action on grids, symmetrisation."""

from __future__ import annotations

import numpy as np

from elf_workflows.symmetry import apply_operation, get_space_group, seitz_symbol, symmetrize, symmetry_error


def test_known_space_groups(fcc_la, hcp_y, b2_caba):
    assert (get_space_group(fcc_la).number, len(get_space_group(fcc_la))) == (225, 192)
    assert (get_space_group(hcp_y).symbol, len(get_space_group(hcp_y))) == ("P6_3/mmc", 24)
    assert get_space_group(b2_caba).symbol == "Pm-3m"


def test_symmetrize_projects_onto_invariant_fields(hcp_y, rng):
    group = get_space_group(hcp_y)
    shape = (12, 12, 18)
    noisy = rng.random(shape)
    assert symmetry_error(noisy, group) > 0.1
    sym = symmetrize(noisy, group)
    assert symmetry_error(sym, group) < 1e-12
    assert np.allclose(symmetrize(sym, group), sym)  # a projection
    assert abs(sym.mean() - noisy.mean()) < 1e-12  # averaging permutations keeps the mean


def test_voxel_images_follow_the_seitz_operator(hcp_y):
    group = get_space_group(hcp_y)
    shape = (12, 12, 18)
    for op in range(len(group)):
        ix, iy, iz = group.voxel_images(shape, op)
        W, w = group.rotations[op], group.translations[op]
        i = np.array([5, 7, 11])
        expected = np.mod(W @ (i / shape) + w, 1.0) * shape
        assert np.allclose([ix[tuple(i)], iy[tuple(i)], iz[tuple(i)]], np.round(expected) % shape)


def test_apply_operation_is_a_permutation(fcc_la, rng):
    group = get_space_group(fcc_la)
    field = rng.random((8, 8, 8))
    moved = apply_operation(field, group, 17)
    assert np.allclose(np.sort(moved.ravel()), np.sort(field.ravel()))


def test_seitz_symbol():
    assert seitz_symbol(np.eye(3, dtype=int), np.zeros(3)) == "(x, y, z)"
    W = np.array([[0, -1, 0], [1, -1, 0], [0, 0, 1]])
    assert seitz_symbol(W, np.array([0, 0, 0.5])) == "(-y, x-y, z+1/2)"


def test_axis_permutation_images_equal_the_voxel_gather(fcc_la, hcp_y, b2_caba, rng):
    """Every operator: the flip/roll/transpose path where it applies, the flat-index gather, and symmetrize, agree."""
    from elf_workflows.symmetry import grid_maps

    for structure, shape in [(fcc_la, (12, 12, 12)), (b2_caba, (10, 10, 10)), (hcp_y, (12, 12, 18))]:
        group = get_space_group(structure)
        field = rng.random(shape)
        ops = np.nonzero(group.is_grid_compatible(shape))[0]
        total = np.zeros(shape)
        for op in ops:
            gathered = field.ravel()[group.flat_voxel_images(shape, int(op))]
            np.testing.assert_array_equal(apply_operation(field, group, int(op)), gathered)
            total += gathered
        np.testing.assert_allclose(symmetrize(field, group), total / len(ops), rtol=1e-13)
        fast = int((grid_maps(group, shape).source[:, 0] >= 0).sum())
        assert (len(ops), fast) == {225: (192, 192), 221: (48, 48), 194: (24, 8)}[group.number]
