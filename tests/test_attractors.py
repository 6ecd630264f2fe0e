"""ELF attractors on analytic periodic fields with known maxima: positions, values, symmetry, basins."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elf_workflows.grids import fractional_grid, voxel_volume
from elf_workflows.templates.attractors import find_attractors, fourier_values, local_maxima, refine_maxima
from elf_workflows.templates.basins import watershed


def gaussians(structure: Structure, shape, sites, amplitude, width) -> np.ndarray:
    """Σ amplitude·exp(−r²/2w²) over the periodic images of ``sites`` (fractional), r in Å."""
    frac = fractional_grid(shape)
    out = np.zeros(shape)
    shifts = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
    for site in np.atleast_2d(sites):
        d = frac - np.asarray(site)
        d -= np.round(d)
        for s in shifts:
            r2 = (((d + s) @ structure.lattice.matrix) ** 2).sum(-1)
            out += amplitude * np.exp(-r2 / (2 * width**2))
    return out


OCTA = [[0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]]
TETRA = [[x, y, z] for x in (0.25, 0.75) for y in (0.25, 0.75) for z in (0.25, 0.75)]


def test_off_grid_maximum_is_refined_below_a_voxel(triclinic_almg):
    site = np.array([0.2137, 0.2311, 0.6829])  # 1.49 Å from both atoms, off every grid point
    shape = (36, 40, 44)
    field = 0.2 + gaussians(triclinic_almg, shape, [site], 0.6, 0.7)
    atts = find_attractors(triclinic_almg, field, None)
    assert len(atts) == 1
    a = atts[0]
    voxel = np.abs(np.array(a.frac_coords) - site) * shape
    assert np.all(voxel < 0.1), voxel  # a tenth of a voxel
    assert a.elf == pytest.approx(0.8, abs=2e-3)
    assert a.kind == "interstitial" and a.multiplicity == 1 and a.wyckoff == "1a"
    assert np.isnan(a.electrons)  # no density given


def test_maxima_across_the_periodic_boundary(triclinic_almg):
    shape = (30, 30, 30)
    field = gaussians(triclinic_almg, shape, [[0.99, 0.005, 0.5]], 1.0, 0.5)
    flat = local_maxima(field)
    assert len(flat) == 1
    frac, value = refine_maxima(field, flat)
    d = frac[0] - [0.99, 0.005, 0.5]
    assert np.all(np.abs(d - np.round(d)) * 30 < 0.1)
    assert watershed(field, triclinic_almg.lattice).maxima.tolist() == flat.tolist()


@pytest.mark.parametrize("primitive", [False, True])
def test_fcc_octahedral_and_tetrahedral_sites_merge_into_4b_and_8c(fcc_la, primitive):
    structure = fcc_la.get_primitive_structure() if primitive else fcc_la
    conv_field = 0.3 + gaussians(fcc_la, (40, 40, 40), OCTA, 0.5, 0.5) + gaussians(fcc_la, (40, 40, 40), TETRA, 0.4, 0.4)
    if primitive:  # same field on a grid of the primitive cell
        shape = (24, 24, 24)
        sites_cart = np.array(OCTA + TETRA) @ fcc_la.lattice.matrix
        frac_sites = structure.lattice.get_fractional_coords(sites_cart) % 1.0
        octa = np.unique(np.round(frac_sites[:4], 6) % 1.0, axis=0)
        tetra = np.unique(np.round(frac_sites[4:], 6) % 1.0, axis=0)
        field = 0.3 + gaussians(structure, shape, octa, 0.5, 0.5) + gaussians(structure, shape, tetra, 0.4, 0.4)
    else:
        field = conv_field
    atts = find_attractors(structure, field, None)
    assert [a.kind for a in atts] == ["interstitial", "interstitial"]
    octa_att, tetra_att = atts
    n = 1 if primitive else 4
    assert (octa_att.multiplicity, tetra_att.multiplicity) == (n, 2 * n)
    assert (octa_att.wyckoff, tetra_att.wyckoff) == ("4b", "8c")
    assert (octa_att.site_symmetry, tetra_att.site_symmetry) == ("m-3m", "-43m")
    assert octa_att.nearest_atoms[0]["distance"] == pytest.approx(5.10 / 2, abs=1e-3)
    assert len(octa_att.nearest_atoms) == 6 and len(tetra_att.nearest_atoms) == 4
    assert tetra_att.nearest_atoms[0]["distance"] == pytest.approx(5.10 * np.sqrt(3) / 4, abs=1e-3)
    assert octa_att.elf > tetra_att.elf


def test_semicore_shell_maxima_are_atomic_however_high(fcc_la):
    """Maxima 0.7 Å from La (inside its PAW core radius) are atomic even when higher than the void's."""
    shape = (48, 48, 48)
    u = 0.7 / 5.10
    ring = [[u, 0, 0], [-u, 0, 0], [0, u, 0], [0, -u, 0], [0, 0, u], [0, 0, -u]]  # shell maxima on ±x, ±y, ±z
    ring_all = np.array([np.array(r) + t for r in ring for t in [[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]]]) % 1
    field = 0.2 + gaussians(fcc_la, shape, ring_all, 0.75, 0.25) + gaussians(fcc_la, shape, OCTA, 0.45, 0.6)
    atts = find_attractors(fcc_la, field, None)
    kinds = {a.kind for a in atts}
    assert kinds == {"atomic", "interstitial"}
    shell = max((a for a in atts if a.kind == "atomic"), key=lambda a: a.elf)
    inter = [a for a in atts if a.kind == "interstitial"]
    assert shell.elf > max(a.elf for a in inter)
    assert shell.nearest_atoms[0]["distance"] == pytest.approx(0.7, abs=0.03)
    assert (shell.multiplicity, shell.wyckoff, shell.images_found) == (24, "24e", 24)  # 6 per La
    assert inter[0].wyckoff == "4b"


def test_basin_electrons_sum_to_the_total_and_follow_symmetry(fcc_la):
    from elf_workflows.sad import sad_density, valence_count

    shape = (40, 40, 40)
    field = 0.3 + gaussians(fcc_la, shape, OCTA, 0.5, 0.5) + gaussians(fcc_la, shape, TETRA, 0.4, 0.4)
    rho = sad_density(fcc_la, shape)
    atts = find_attractors(fcc_la, field, rho)
    total = sum(a.multiplicity * a.electrons for a in atts)
    assert total == pytest.approx(valence_count(fcc_la), rel=1e-9)  # 44 e
    volume = sum(a.multiplicity * a.volume for a in atts)
    assert volume == pytest.approx(fcc_la.volume, rel=1e-9)
    assert all(a.images_found == a.multiplicity for a in atts)
    # with a uniform density the electrons are the basin volumes times ρ
    uniform = np.full(shape, 44 / fcc_la.volume)
    for a in find_attractors(fcc_la, field, uniform):
        assert a.electrons == pytest.approx(a.volume * 44 / fcc_la.volume, rel=1e-6)


def test_watershed_of_two_equivalent_gaussians_halves_the_cell():
    s = Structure(Lattice.cubic(4.0), ["Na"], [[0, 0, 0]])
    shape = (32, 32, 32)
    field = gaussians(s, shape, [[0.25, 0.5, 0.5], [0.75, 0.5, 0.5]], 1.0, 0.6)
    b = watershed(field, s.lattice)
    assert len(b.maxima) == 2
    vols = b.volumes(voxel_volume(s.lattice, shape))
    assert vols.sum() == pytest.approx(64.0)
    assert vols[0] == pytest.approx(32.0, rel=0.02)
    # the plane x = 1/2 and x = 0 separate them: every voxel with x < 1/2 (exclusive band) goes to the first
    labels = b.basin_index()
    assert np.all(labels[2:14] == labels[8, 16, 16])
    assert np.all(labels[18:30] == labels[24, 16, 16])


def test_fourier_laplacian_of_a_gaussian_density():
    """∇²[A exp(−r²/2σ²)] at the centre is −3A/σ²."""
    s = Structure(Lattice.cubic(8.0), ["Na"], [[0, 0, 0]])
    shape = (48, 48, 48)
    amp, sigma = 0.2, 0.8
    rho = gaussians(s, shape, [[0.5, 0.5, 0.5]], amp, sigma)
    lap = fourier_values(rho, s.lattice, [[0.5, 0.5, 0.5]], laplacian=True)[0]
    assert lap == pytest.approx(-3 * amp / sigma**2, rel=1e-3)
    assert fourier_values(rho, s.lattice, [[0.5013, 0.5, 0.5]])[0] == pytest.approx(
        amp * np.exp(-(0.0013 * 8) ** 2 / (2 * sigma**2)), rel=1e-6)


def test_noise_maxima_are_merged_by_persistence_real_shallow_ones_kept():
    s = Structure(Lattice.cubic(6.0), ["Na"], [[0, 0, 0]])
    shape = (40, 40, 40)
    main = gaussians(s, shape, [[0.5, 0.5, 0.5]], 0.5, 0.9)
    ripple = 0.004 * np.cos(2 * np.pi * 10 * fractional_grid(shape)[..., 0])  # many tiny maxima along x
    noisy = 0.3 + main + ripple
    kept = find_attractors(s, noisy, None, persistence=0.0)
    merged = find_attractors(s, noisy, None, persistence=0.01)
    assert sum(a.multiplicity for a in kept) > 3
    assert [(a.wyckoff, a.multiplicity) for a in merged] == [("1b", 1)]
    assert merged[0].volume == pytest.approx(s.volume)
    # a shallow but real second maximum (prominence ~0.05) survives the default filter
    shallow = 0.3 + main + gaussians(s, shape, [[0.5, 0.0, 0.0]], 0.08, 0.5)
    wy = sorted(a.wyckoff for a in find_attractors(s, shallow, None))
    assert wy == ["1b", "3d"]


def test_boundary_saddles_dense_table_equals_sorted_pairs_and_a_direct_scan(monkeypatch, rng):
    """The saddle of every adjacent basin pair, by both reductions and by a plain loop over voxel pairs."""
    from elf_workflows.templates import basins as basins_module
    from elf_workflows.templates.basins import OFFSETS, _boundary_saddles

    shape = (10, 8, 12)
    spectrum = np.fft.rfftn(rng.normal(size=shape))
    field = np.fft.irfftn(spectrum * (np.abs(np.fft.fftfreq(10))[:, None, None] < 0.25), s=shape)  # a few dozen basins
    index = watershed(field).basin_index()
    n = int(index.max()) + 1
    dense = _boundary_saddles(index, field, n)
    monkeypatch.setattr(basins_module, "_DENSE_PAIRS", 0)
    sorted_pairs = _boundary_saddles(index, field, n)
    expected: dict[tuple[int, int], float] = {}
    for i in np.ndindex(shape):
        for offset in OFFSETS:
            j = tuple((np.array(i) + offset) % shape)
            if index[i] != index[j]:
                key = (min(index[i], index[j]), max(index[i], index[j]))
                expected[key] = max(expected.get(key, -np.inf), min(field[i], field[j]))
    assert n > 10 and len(expected) > 20
    for a, b, s in (dense, sorted_pairs):
        assert dict(zip(zip(a.tolist(), b.tolist()), s.tolist())) == expected



def test_watershed_ties_do_not_follow_float_noise(monkeypatch):
    """A voxel midway between two equal maxima has two equal uphill slopes: the tie goes to the same
    neighbour however the last bits of the field fall (1e-7 noise, as two float32 code paths give)."""
    from elf_workflows.templates import basins

    n = 16
    x = np.arange(n) / n
    field = (np.cos(4 * np.pi * x)[:, None, None] + 0.3 * np.cos(2 * np.pi * x)[None, :, None]
             + 0.2 * np.cos(2 * np.pi * x)[None, None, :])
    reference = watershed(field).labels
    assert len(np.unique(reference)) == 2  # maxima at x = 0 and x = 1/2, y = z = 0; valleys at x = 1/4, 3/4
    noisy = [field + np.random.default_rng(seed).normal(0, 1e-7, field.shape) for seed in range(10)]
    assert all(np.array_equal(watershed(f).labels, reference) for f in noisy)
    monkeypatch.setattr(basins, "TIE_TOLERANCE", 0.0)  # without it the valley voxels follow the noise
    assert not all(np.array_equal(watershed(f).labels, reference) for f in noisy)
