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


def test_voxel_orbits_count_by_burnside_and_every_operator_keeps_them(fcc_la, hcp_y, b2_caba, rng):
    """The number of orbits is the mean number of voxels an operator fixes (Burnside's lemma, an independent
    count); every operator maps each voxel into its own orbit; the orbit mean is the group average."""
    from elf_workflows.symmetry import grid_maps, voxel_orbits

    primitive_fcc = fcc_la.get_primitive_structure()  # 36 of its 48 operators mix axes on its grid
    for structure, shape in [(fcc_la, (12, 12, 12)), (primitive_fcc, (10, 10, 10)), (b2_caba, (10, 10, 10)),
                             (hcp_y, (12, 12, 18))]:
        group = get_space_group(structure)
        orbits = voxel_orbits(group, shape)
        n = int(np.prod(shape))
        ops = np.nonzero(group.is_grid_compatible(shape))[0]
        images = [group.flat_voxel_images(shape, int(op)).ravel() for op in ops]
        assert len(orbits) * len(ops) == sum(int((image == np.arange(n)).sum()) for image in images)
        for image in images:
            np.testing.assert_array_equal(orbits.labels[image], orbits.labels)
        assert orbits.sizes.sum() == n
        np.testing.assert_array_equal(orbits.labels[orbits.representatives], np.arange(len(orbits)))
        field = rng.random(shape)
        np.testing.assert_allclose(orbits.mean(field), sum(field.ravel()[i] for i in images).reshape(shape) / len(ops),
                                   rtol=1e-13)
        if structure is primitive_fcc:
            assert (grid_maps(group, shape).source[:, 0] < 0).sum() == 36


def test_a_compressed_or_relabelled_cell_takes_the_cached_group_after_a_check(b2_caba):
    from elf_workflows.symmetry import clear_caches, operations_hold

    clear_caches()
    group = get_space_group(b2_caba)
    compressed = b2_caba.copy()
    compressed.scale_lattice(0.4 * b2_caba.volume)
    relabelled = b2_caba.copy()
    relabelled.replace_species({"Ca": "Fe", "Ba": "Pb"})
    assert get_space_group(compressed) is group and get_space_group(relabelled) is group
    for cell in (compressed, relabelled):  # spglib itself, on each cell, finds the same operators
        clear_caches()
        fresh = get_space_group(cell)
        assert fresh is not group and fresh.number == group.number
        np.testing.assert_array_equal(fresh.rotations, group.rotations)
    bcc = b2_caba.copy()
    bcc.replace_species({"Ba": "Ca"})  # same lattice and sites, one species: another pattern, another group
    assert len(get_space_group(bcc)) == 2 * len(group)
    lattice, frac = b2_caba.lattice.matrix, b2_caba.frac_coords
    assert operations_hold(group.rotations, group.translations, lattice, frac, (20, 56), 1e-3)
    assert not operations_hold(group.rotations, group.translations, lattice, frac + [[0, 0, 0], [0.01, 0, 0]],
                               (20, 56), 1e-3)
    assert operations_hold(group.rotations, group.translations, lattice, frac, (20, 20), 1e-3)  # a subgroup of bcc's
