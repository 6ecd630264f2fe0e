"""SAD: integrals, an independent real-space reference, the radial table, symmetry and translations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elf_workflows.elements import atomic_data, available_elements, valence_electrons
from elf_workflows.grids import fractional_grid, grid_for_spacing
from elf_workflows.sad import form_factor, integrate, partition_density, sad_density, valence_count
from elf_workflows.symmetry import get_space_group, symmetry_error


def real_space_sad(structure: Structure, shape) -> np.ndarray:
    """Direct sum of the tabulated radial densities over periodic images (independent of the FFT path)."""
    cart = fractional_grid(shape).reshape(-1, 3) @ structure.lattice.matrix
    out = np.zeros(len(cart))
    for site in structure:
        data = atomic_data(site.specie.symbol)
        for image in itertools.product(range(-3, 4), repeat=3):
            centre = (site.frac_coords + image) @ structure.lattice.matrix
            out += np.interp(np.linalg.norm(cart - centre, axis=1), data.r, data.rho, right=0.0)
    return out.reshape(shape)


def test_table_covers_h_to_rn_with_normalised_densities():
    symbols = available_elements()
    assert symbols[0] == "H" and symbols[-1] == "Rn" and len(symbols) == 86
    for symbol in ("H", "Li", "Ca", "La", "Ce", "Lu", "Tc", "Pb"):
        data = atomic_data(symbol)
        integral = np.trapezoid(4 * np.pi * data.rho * data.r**2, data.r)
        assert integral == pytest.approx(data.valence, rel=1e-9)
        assert form_factor(symbol, np.array([0.0]))[0] == pytest.approx(data.valence, rel=1e-12)
    assert valence_electrons("La") == 11 and valence_electrons("Ca") == 10


def test_partition_table_integrates_to_the_valence_and_keeps_semicore_at_the_nucleus():
    for symbol in ("Li", "Mg", "Ca", "La", "Fe", "Tc", "Pb"):
        data = atomic_data(symbol)
        integral = np.trapezoid(4 * np.pi * data.rho_partition * data.r**2, data.r)
        assert integral == pytest.approx(data.valence, rel=1e-9)
        assert form_factor(symbol, np.array([0.0]), "partition")[0] == pytest.approx(data.valence, rel=1e-12)
    # Mg's 2s2p semicore (8 of its 10 valence electrons) sits within 0.8 Å in the partition density;
    # the smooth valence density holds only 2.7 e there
    mg = atomic_data("Mg")
    inside = mg.r < 0.8
    assert np.trapezoid((4 * np.pi * mg.rho_partition * mg.r**2)[inside], mg.r[inside]) == pytest.approx(7.82, abs=0.02)
    assert np.trapezoid((4 * np.pi * mg.rho * mg.r**2)[inside], mg.r[inside]) == pytest.approx(2.68, abs=0.02)


@pytest.mark.gpaw
@pytest.mark.parametrize("symbol, a, tolerance", [("Mg", 3.6, 0.005), ("La", 4.6, 0.03)])
def test_partition_density_matches_gpaws_own_atomic_guess(symbol, a, tolerance):
    """GPAW's initial density (atomic orbitals + PAW compensation charges on its real-space grid) is an
    independent reference: same setups, different code path (LCAO basis functions, localized-function
    compensation charges) — and it is what the SCF density starts from."""
    pytest.importorskip("gpaw")
    from gpaw.new.ase_interface import GPAW
    from pymatgen.io.ase import AseAtomsAdaptor

    structure = Structure(Lattice.cubic(a), [symbol] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    calc = GPAW(mode={"name": "pw", "ecut": 300}, xc="PBE", kpts={"size": [1, 1, 1]}, gpts=[24, 24, 24], txt=None)
    calc.create_new_calculation(AseAtomsAdaptor.get_atoms(structure))
    guess = calc.dft.densities().pseudo_densities(add_compensation_charges=True)
    reference = np.asarray(guess.gather().data, float).sum(axis=0)
    partition = partition_density(structure, reference.shape)
    valence = sad_density(structure, reference.shape)
    assert integrate(partition, structure) == pytest.approx(integrate(reference, structure), rel=1e-9)
    error = np.abs(partition - reference).sum() / np.abs(reference).sum()
    assert error < tolerance
    # the plain valence SAD is far from GPAW's density: 107 % (Mg) and 20 % (La) relative L1
    assert np.abs(valence - reference).sum() / np.abs(reference).sum() > 5 * tolerance


@pytest.mark.parametrize("name", ["fcc_la", "hcp_y", "b2_caba", "triclinic_almg"])
def test_integral_is_the_valence_count(name, request):
    structure = request.getfixturevalue(name)
    rho = sad_density(structure, grid_for_spacing(structure, 0.15))
    assert integrate(rho, structure) == pytest.approx(valence_count(structure), abs=1e-6)


def test_two_atom_cell_matches_direct_real_space_sum(triclinic_almg):
    shape = (40, 40, 44)
    rho = sad_density(triclinic_almg, shape)
    ref = real_space_sad(triclinic_almg, shape)
    assert np.abs(rho - ref).max() < 1e-3 * ref.max()
    assert np.corrcoef(rho.ravel(), ref.ravel())[0, 1] > 0.99999


def test_one_atom_in_a_large_box_reproduces_the_radial_table():
    box = Structure(Lattice.cubic(12.0), ["Ca"], [[0, 0, 0]])
    shape = (120, 120, 120)
    rho = sad_density(box, shape)
    data = atomic_data("Ca")
    r = np.arange(40) * 0.1  # along x from the nucleus, out to 3.9 Å
    expected = np.interp(r, data.r, data.rho)
    assert np.abs(rho[:40, 0, 0] - expected).max() < 2e-3 * expected.max()


@pytest.mark.parametrize("name", ["fcc_la", "hcp_y", "b2_caba"])
def test_invariant_under_every_grid_compatible_operation(name, request):
    structure = request.getfixturevalue(name)
    shape = grid_for_spacing(structure, 0.15)
    group = get_space_group(structure)
    assert group.is_grid_compatible(shape).all()
    assert symmetry_error(sad_density(structure, shape), group) < 1e-6


def test_partially_compatible_grid_keeps_the_compatible_operations(hcp_y):
    shape = (24, 20, 36)  # breaks the hexagonal a = b operations
    group = get_space_group(hcp_y)
    mask = group.is_grid_compatible(shape)
    assert 0 < mask.sum() < len(group)
    assert symmetry_error(sad_density(hcp_y, shape), group) < 1e-6


def test_translation_by_a_grid_vector_rolls_the_field(triclinic_almg):
    shape = (30, 32, 36)
    shift = np.array([3, -5, 7])
    moved = triclinic_almg.copy()
    moved.translate_sites(list(range(len(moved))), shift / np.array(shape), frac_coords=True)
    rho = sad_density(triclinic_almg, shape)
    rolled = np.roll(rho, tuple(shift), axis=(0, 1, 2))
    assert np.abs(sad_density(moved, shape) - rolled).max() < 1e-10 * rho.max()


def test_pressure_is_carried_by_the_lattice(fcc_la):
    """Compressing the cell raises the interstitial density (the octahedral hole at ½,½,½)."""
    compressed = fcc_la.copy()
    compressed.scale_lattice(fcc_la.volume * 0.7)
    shape = (40, 40, 40)
    assert sad_density(compressed, shape)[20, 20, 20] > 1.3 * sad_density(fcc_la, shape)[20, 20, 20]


def test_pseudo_kind_integrates_to_the_free_pseudo_atoms_and_is_not_a_kinetic_sad():
    """``pseudo`` keeps each atom's PAW norm deficit (not renormalised); ``pseudo_kinetic`` is no density."""
    from elf_workflows.errors import InputError
    from elf_workflows.jobs import SadMaker
    from elf_workflows.sad import superpose

    s = Structure(Lattice.cubic(3.0), ["Fe", "Pb"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rho = superpose(s, (30, 30, 30), "pseudo")
    expected = sum(np.trapezoid(4 * np.pi * atomic_data(el).rho_pseudo * atomic_data(el).r ** 2, atomic_data(el).r)
                   for el in ("Fe", "Pb"))
    assert integrate(rho, s) == pytest.approx(expected, rel=3e-4)  # f(0) by the uniform-grid quadrature, not renormalised
    assert expected < valence_count(s) - 5  # Fe 4.97 + Pb 8.45 of 8 + 14 valence electrons
    maker = SadMaker(kind="pseudo_kinetic")
    with pytest.raises(InputError, match="pseudo_kinetic"):
        maker.make.original(maker, s, [12, 12, 12])  # the job's function itself, run in this process


@pytest.mark.parametrize("symbol,kind", [("La", "valence"), ("Fe", "pseudo_kinetic"), ("Ca", "partition")])
def test_form_factor_equals_the_direct_bessel_sum(symbol, kind):
    """The DST-based table against the plain sum 4π Σ ρ r² w sin(gr)/(gr) on the same radial grid."""
    from scipy.interpolate import CubicSpline

    from elf_workflows import sad

    data = atomic_data(symbol)
    radial = getattr(data, sad._RADIAL[kind])
    weight = np.abs(radial) * data.r**2
    r_max = data.r[min(np.nonzero(weight > 1e-12 * weight.max())[0].max() + 1, len(data.r) - 1)]
    r = np.arange(0.0, r_max + sad._DR, sad._DR)
    rho = CubicSpline(data.r, radial)(np.minimum(r, data.r[-1]))
    if kind == "valence":
        rho = np.clip(rho, 0.0, None)
    w = np.full_like(r, sad._DR)
    w[[0, -1]] = 0.5 * sad._DR
    g = np.array([0.0, 0.37, 1.9, 7.3, 21.1, 44.4, 59.7])
    gr = np.outer(np.maximum(g, 1e-12), np.where(r > 0, r, 1.0))
    direct = (np.sin(gr) / gr) @ (4 * np.pi * rho * r**2 * w)
    if kind in sad._NORMALISED:
        direct *= data.valence / direct[0]
    np.testing.assert_allclose(form_factor(symbol, g, kind), direct, rtol=0, atol=1e-7 * np.abs(direct).max())


def test_valence_squared_kind_integrates_to_the_radial_square():
    """Σ_i ρ_i² integrates to N ∫ρ_s² (the table's f(0)); ∫ρ_s² checked against the radial table itself."""
    from elf_workflows.sad import form_factor, superpose

    s = Structure(Lattice.cubic(7.0), ["Ca", "Ca"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    squares = superpose(s, (56, 56, 56), "valence_squared")
    data = atomic_data("Ca")
    rho = np.clip(data.rho, 0, None) * data.valence / np.trapezoid(4 * np.pi * np.clip(data.rho, 0, None) * data.r**2, data.r)
    direct = np.trapezoid(4 * np.pi * rho**2 * data.r**2, data.r)
    assert form_factor("Ca", np.array([0.0]), "valence_squared")[0] == pytest.approx(direct, rel=2e-3)
    assert integrate(squares, s) == pytest.approx(2 * direct, rel=2e-3)


def test_uniform_cubic_spline_is_scipys_cubic_spline():
    from scipy.interpolate import CubicSpline

    from elf_workflows.sad import UniformCubicSpline

    x = np.linspace(0.0, 5.0, 201)
    y = np.sin(3 * x) * np.exp(-x)
    points = np.concatenate([x, np.random.default_rng(0).uniform(0, 5, 1000), [0.0, 5.0]])
    np.testing.assert_allclose(UniformCubicSpline(x, y)(points), CubicSpline(x, y)(points), rtol=0, atol=1e-14)


def test_form_factors_of_many_pairs_equal_each_form_factor_to_the_bit():
    from elf_workflows.sad import _G_TABLE_MAX, form_factors

    g = np.concatenate([np.random.default_rng(2).uniform(0, 40, 501), [0.0, _G_TABLE_MAX, _G_TABLE_MAX + 1]])
    pairs = [("Fe", "pseudo"), ("Fe", "pseudo_kinetic"), ("Pb", "valence"), ("Ca", "partition")]
    values = form_factors(pairs, g.reshape(-1, 3))
    assert values.shape == (4, len(g) // 3, 3)
    for (symbol, kind), row in zip(pairs, values):
        np.testing.assert_array_equal(row, form_factor(symbol, g, kind).reshape(-1, 3))
    assert values[:, -1, -1].tolist() == [0.0] * 4  # beyond the table
    with pytest.raises(Exception, match="unknown density kind"):
        form_factors([("Fe", "core")], g)


def test_structure_factors_are_kept_per_site_pattern_and_reused_across_scales_and_elements():
    from elf_workflows import sad
    from elf_workflows.grids import frequencies

    sad.clear_caches()
    hkl = frequencies((8, 8, 10), rfft=True)
    b2 = Structure(Lattice.cubic(3.9), ["Ca", "Ba"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    first = sad.species_structure_factors(b2, hkl)
    for symbol, frac in (("Ca", [[0, 0, 0]]), ("Ba", [[0.5, 0.5, 0.5]])):
        np.testing.assert_array_equal(first[symbol], sad._structure_factor(np.array(frac, float), *hkl))
    assert not first["Ca"].flags.writeable
    # the same prototype compressed and with other elements (Sr at the corner, K at the centre): the same arrays
    other = Structure(Lattice.cubic(3.1), ["Sr", "K"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    again = sad.species_structure_factors(other, hkl)
    assert again["Sr"] is first["Ca"] and again["K"] is first["Ba"]
    # a different site pattern is computed afresh
    unary = Structure(Lattice.cubic(3.1), ["K", "K"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(sad.species_structure_factors(unary, hkl)["K"], first["Ca"] + first["Ba"], atol=1e-12)
    sad.clear_caches()
    assert sad.species_structure_factors(b2, hkl)["Ca"] is not first["Ca"]


def test_form_factor_splines_are_kept_on_disk_and_read_back_exactly(tmp_path, monkeypatch):
    from elf_workflows import sad

    monkeypatch.setenv("ELF_WORKFLOWS_CACHE", str(tmp_path))
    sad.clear_caches(tables=True)
    built = sad._form_factor_spline("Ca", "pseudo_kinetic")
    files = list((tmp_path / "form-factors").glob("Ca-pseudo_kinetic-*.npy"))
    assert len(files) == 1 and not list((tmp_path / "form-factors").glob("*.tmp.npy"))
    sad.clear_caches(tables=True)

    def no_build(*args):
        raise AssertionError("the table was rebuilt instead of read")

    with monkeypatch.context() as m:  # a new process: read from disk, not built
        m.setattr(sad, "form_factor_table", no_build)
        read = sad._form_factor_spline("Ca", "pseudo_kinetic")
    np.testing.assert_array_equal(read.coefficients, built.coefficients)
    assert read.knots() == built.knots()
    g = np.linspace(0, 40, 97)
    np.testing.assert_array_equal(read(g), built(g))
    # a damaged file is rebuilt and rewritten
    files[0].write_bytes(b"not a table")
    sad.clear_caches(tables=True)
    np.testing.assert_array_equal(sad._form_factor_spline("Ca", "pseudo_kinetic").coefficients, built.coefficients)
    assert np.load(files[0]).size > 3
    # an empty ELF_WORKFLOWS_CACHE disables the disk cache
    monkeypatch.setenv("ELF_WORKFLOWS_CACHE", "")
    sad.clear_caches(tables=True)
    assert sad.table_cache_dir() is None
    sad._form_factor_spline("Sr", "valence")
    assert not list((tmp_path / "form-factors").glob("Sr-*"))
    sad.clear_caches(tables=True)
