"""Surrogate: features, periodic U-Net equivariance, symmetry pooling, tiling, losses, training, shipped weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from elf_workflows.grids import fourier_interpolate
from elf_workflows.sad import sad_density
from elf_workflows.surrogate import SurrogateModel, gradient_expansion_elf, load_model, native_grid, predict_elf
from elf_workflows.surrogate.features import N_FEATURES, species_features
from elf_workflows.surrogate.losses import UncertaintyWeighting, grad_loss, hist_loss, soft_histogram
from elf_workflows.surrogate.model import PeriodicUNet, UNetConfig, predict_grid
from elf_workflows.surrogate.symmetry_pool import (
    group_patch_operations,
    patch_operations,
    rotate_patch,
    unrotate_patch,
)
from elf_workflows.symmetry import get_space_group, symmetry_error

torch.set_num_threads(1)


def b2(a=3.9, A="Ca", B="Ba"):
    return Structure(Lattice.cubic(a), [A, B], [[0, 0, 0], [0.5, 0.5, 0.5]])


def random_model(seed=0, **kw) -> SurrogateModel:
    torch.manual_seed(seed)
    net = PeriodicUNet(UNetConfig(**kw))
    with torch.no_grad():  # make the random net far from constant (the U-Net's own init keeps unit scale)
        for name, p in net.named_parameters():
            if not name.startswith(("down.", "up.", "dec.")):
                p.mul_(2.0)
    return SurrogateModel(net=net.eval(), version="test-random")


# ---------------------------------------------------------------- features
def test_gradient_expansion_elf_uniform_gas_is_half():
    rho = np.full((8, 8, 8), 0.05)
    assert np.allclose(gradient_expansion_elf(rho, Lattice.cubic(4.0)), 0.5, atol=1e-12)


def test_gradient_expansion_elf_matches_analytic_gaussian():
    # ρ = A exp(−α r²): |∇ρ|² = 4α² r² ρ², ∇²ρ = (4α² r² − 6α) ρ (periodic images negligible in a 12 Å box)
    L, n, alpha, A = 12.0, 64, 0.8, 2.0
    x = (np.arange(n) / n - 0.5) * L
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    r2 = X**2 + Y**2 + Z**2
    rho = A * np.exp(-alpha * r2) + 1e-3  # + a uniform background keeps every ratio finite
    ge = gradient_expansion_elf(rho, Lattice.cubic(L))
    cf = 0.3 * (3 * np.pi**2) ** (2 / 3)
    g2 = 4 * alpha**2 * r2 * (rho - 1e-3) ** 2
    lap = (4 * alpha**2 * r2 - 6 * alpha) * (rho - 1e-3)
    d = cf * rho ** (5 / 3) + g2 / (72 * rho) + lap / 6 - g2 / (8 * rho)
    expected = 1 / (1 + (np.maximum(d, 0) / (cf * rho ** (5 / 3))) ** 2)
    inner = r2 < 2.5**2
    assert np.abs(ge - expected)[inner].max() < 2e-4
    assert 0.0 <= ge.min() and ge.max() <= 1.0


def test_gaussian_smoothing_widens_a_gaussian_analytically():
    from elf_workflows.grids import gaussian_smooth

    # a normalised Gaussian of width a convolved with one of width σ is a Gaussian of width √(a² + σ²)
    L, n, a = 12.0, 64, 0.5
    x = (np.arange(n) / n - 0.5) * L
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    r2 = X**2 + Y**2 + Z**2

    def gauss(w, q=50.0):  # q electrons
        return q * np.exp(-r2 / (2 * w**2)) / (2 * np.pi * w**2) ** 1.5

    for w in (0.4, 0.8):
        got = gaussian_smooth(gauss(a), Lattice.cubic(L), w)
        assert np.abs(got - gauss(np.hypot(a, w))).max() < 1e-6 * gauss(a).max()
        assert got.sum() * L**3 / n**3 == pytest.approx(50.0, rel=1e-9)  # charge kept


def test_density_features_carry_the_space_group():
    from elf_workflows.surrogate.features import DENSITY_FEATURES, input_features

    s = b2(3.9)
    feats = input_features(sad_density(s, (20, 20, 20)), s.lattice)
    assert feats.shape == (len(DENSITY_FEATURES), 20, 20, 20) and np.isfinite(feats).all()
    assert max(symmetry_error(c.astype(float), s) for c in feats) < 1e-5
    names = list(DENSITY_FEATURES)
    ratios = feats[[i for i, n in enumerate(names) if n.startswith("smooth_ratio")]]
    grads = feats[[i for i, n in enumerate(names) if n.startswith("smooth_gradient")]]
    # the smoothed ratios are positive in the void between the atoms (face centre) and negative on Ba
    assert len(ratios) == 4 and (ratios[:, 10, 10, 0] > 0).all() and (ratios[:, 10, 10, 10] < 0).all()
    # the smoothed gradient vanishes at sites of 4/mmm or m-3m symmetry (face centre, atoms), not between
    assert np.abs(grads[:, [10, 0, 10], [10, 0, 10], [0, 0, 10]]).max() < 1e-6
    assert grads[0, 5, 5, 5] > 0.05  # off-centre, at the finest scale


def test_compression_channel_is_log_volume_over_ambient_volume():
    from elf_workflows.surrogate.features import FEATURE_NAMES, cell_features, compression_features

    # pymatgen's molar volumes: Ca 26.2 cm³/mol, Ba 38.16 cm³/mol → 43.51 and 63.37 Å³ per atom
    v_ca, v_ba = 26.2 / 0.602214076, 38.16 / 0.602214076
    for scale in (1.0, 0.5, 0.2):
        a = (4 * v_ca * scale) ** (1 / 3)  # conventional fcc, 4 atoms
        fcc = Structure(Lattice.cubic(a), ["Ca"] * 4, [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
        channel = compression_features(fcc, (4, 4, 4))
        assert channel.shape == (1, 4, 4, 4) and np.ptp(channel) == 0
        assert channel[0, 0, 0, 0] == pytest.approx(np.log(scale), abs=1e-6)
    # a binary: V0 is the mean of its elements' ambient volumes (Vegard)
    b2 = Structure(Lattice.cubic(3.5), ["Ca", "Ba"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    expected = np.log(3.5**3 / 2 / ((v_ca + v_ba) / 2))
    feats = cell_features(b2, sad_density(b2, (8, 8, 8)))
    assert FEATURE_NAMES[-1] == "log_compression"
    np.testing.assert_allclose(feats[-1], expected, atol=1e-6)


def test_species_features_are_nearest_atom_properties():
    from elf_workflows.surrogate.features import element_properties

    k = Structure(Lattice.cubic(3.0), ["K"], [[0, 0, 0]])
    f = species_features(k, (12, 12, 12))
    assert np.allclose(f, np.array(element_properties("K"))[:, None, None, None], atol=1e-6)
    s = b2(3.9)
    f = species_features(s, (20, 20, 20))
    assert np.allclose(f[:, 0, 0, 0], element_properties("Ca"), atol=2e-3)  # Ca at the origin
    assert np.allclose(f[:, 10, 10, 10], element_properties("Ba"), atol=2e-3)  # Ba at the body centre
    assert max(symmetry_error(c, s) for c in f) < 1e-9


def test_electrostatic_potential_matches_the_radial_coulomb_integral_of_an_isolated_atom():
    """One Mg atom in a 10 Å cube: the FFT Poisson potential, up to the constant that its zero cell average
    sets, equals the real-space radial Coulomb integral of the same charges (Gaussian +Z pseudo-nucleus,
    tabulated partition density) — an independent path through the physics."""
    from scipy.special import erf

    from elf_workflows.elements import atomic_data
    from elf_workflows.surrogate.features import (
        COULOMB_EV_ANGSTROM,
        NUCLEUS_SIGMA,
        electrostatic_features,
        electrostatic_potential,
    )

    atom = Structure(Lattice.cubic(10.0), ["Mg"], [[0, 0, 0]])
    shape = (100, 100, 100)
    v = electrostatic_potential(atom, shape)
    data = atomic_data("Mg")
    r, rho = data.r, data.rho_partition
    shell = 4 * np.pi * rho * r**2
    inner = np.concatenate([[0.0], np.cumsum(0.5 * (shell[1:] + shell[:-1]) * np.diff(r))])  # electrons within r
    outer_t = 4 * np.pi * rho * r
    outer = np.concatenate([np.cumsum((0.5 * (outer_t[1:] + outer_t[:-1]) * np.diff(r))[::-1])[::-1], [0.0]])

    def radial(x):
        nucleus = data.valence * erf(x / (np.sqrt(2) * NUCLEUS_SIGMA)) / x
        return COULOMB_EV_ANGSTROM * (nucleus - np.interp(x, r, inner) / x - np.interp(x, r, outer))

    radii = np.array([0.5, 1.0, 1.5, 2.0, 3.0])  # along x: voxels 5, 10, 15, 20, 30
    grid_v = v[(radii * 10).astype(int), 0, 0]
    expected = radial(radii)
    assert np.abs((grid_v - grid_v[-1]) - (expected - expected[-1])).max() < 0.05  # V, of a 21 V range
    assert v.mean() == pytest.approx(0.0, abs=1e-10)
    # invariant under the structure's space group, like every channel
    s = b2(3.9)
    f = electrostatic_features(s, (20, 20, 20))
    assert f.shape == (1, 20, 20, 20) and max(symmetry_error(c, s) for c in f) < 1e-9


def test_elf_from_kinetic_is_gpaws_elf_formula():
    """Against GPAW's own ``gpaw.elf.elf`` (atomic units) on random densities: the Å form is the same ELF."""
    gpaw_elf = pytest.importorskip("gpaw.elf")
    from elf_workflows.surrogate.features import elf_from_kinetic

    bohr = 0.529177210903
    rng = np.random.default_rng(0)
    rho = rng.uniform(0.01, 1.0, 50)  # Å⁻³
    grad2 = rng.uniform(0.0, 2.0, 50) * rho**2  # Å⁻⁸
    tau = grad2 / (8 * rho) + rng.uniform(0.0, 3.0, 50) * rho ** (5 / 3)  # Å⁻⁵
    ours = elf_from_kinetic(rho, grad2, tau)
    theirs = gpaw_elf.elf((rho * bohr**3)[None], (grad2 * bohr**8)[None], (tau * bohr**5)[None])
    assert np.allclose(ours, theirs, atol=1e-12)


def test_pseudo_atom_tables_are_gpaws_free_pseudo_atom():
    """ρ̃ integrates to the pseudo valence (PAW norm deficit kept) + smooth core; τ̃ ≥ τ_W (von Weizsäcker bound)."""
    from elf_workflows.elements import atomic_data

    # Fe: 3d pseudo waves carry half their norm (raw ∫ñ_v = 4.09 of 8 e) plus 0.88 e of smooth core
    fe = atomic_data("Fe")
    assert np.trapezoid(4 * np.pi * fe.rho_pseudo * fe.r**2, fe.r) == pytest.approx(4.97, abs=0.01)
    for symbol in ("Li", "Ca", "Fe", "La", "Pb", "Tc"):
        d = atomic_data(symbol)
        assert np.all(d.tau_pseudo >= 0)
        inner = (d.r > 0.05) & (d.r < 2.0)
        tau_w = np.gradient(d.rho_pseudo, d.r) ** 2 / (8 * d.rho_pseudo)
        assert np.all(d.tau_pseudo[inner] >= 0.98 * tau_w[inner])


@pytest.mark.parametrize("one_block", [True, False])
def test_aliased_spectra_equal_the_finer_grid_sampled(one_block, monkeypatch):
    """Folding the 2× finer spectrum is exact: the same field as superposing on the fine grid and sampling it
    (all aliases in one block, and one alias at a time as for big grids)."""
    from elf_workflows import sad
    from elf_workflows.grids import fft_derivative
    from elf_workflows.sad import aliased_spectra, superpose

    if not one_block:
        monkeypatch.setattr(sad, "_ALIAS_BLOCK", 0)

    s = Structure(Lattice([[3.1, 0, 0], [0.4, 3.3, 0], [0.2, 0.3, 3.6]]), ["Fe", "Pb"], [[0, 0, 0], [0.45, 0.5, 0.55]])
    shape = (14, 16, 18)
    spectra = aliased_spectra(s, shape, ("pseudo", "pseudo_kinetic"), factor=2, gradient_of="pseudo")
    fine_shape = tuple(2 * n for n in shape)
    for kind in ("pseudo", "pseudo_kinetic"):
        fine = superpose(s, fine_shape, kind)[::2, ::2, ::2]
        folded = np.fft.irfftn(spectra[kind], s=shape)
        assert np.abs(folded - fine).max() < 1e-9 * np.abs(fine).max()
    grad_fine = fft_derivative(superpose(s, fine_shape, "pseudo"), s.lattice, "gradient")[:, ::2, ::2, ::2]
    grad = np.stack([np.fft.irfftn(spectra["gradient"][a], s=shape) for a in range(3)])
    assert np.abs(grad - grad_fine).max() < 1e-9 * np.abs(grad_fine).max()


def test_atomic_limit_elf_of_one_atom_is_the_radial_elf():
    """One atom in a 12 Å box on the 0.2 Å feature grid against the ELF of its radial tables (spline
    derivative, no grid): the channel is GPAW's free pseudo atom, shells and pseudo core included."""
    from scipy.interpolate import CubicSpline

    from elf_workflows.elements import atomic_data
    from elf_workflows.surrogate.features import atomic_limit_elf, elf_from_kinetic

    for symbol, tolerance in (("Li", 0.003), ("Ca", 0.003), ("La", 0.003), ("Pb", 0.006)):
        atom = Structure(Lattice.cubic(12.0), [symbol], [[0, 0, 0]])
        elf = atomic_limit_elf(atom, (60, 60, 60))
        d = atomic_data(symbol)
        r = np.arange(1, 9) * 0.2  # along x, out to 1.6 Å
        rho = CubicSpline(d.r, d.rho_pseudo)
        expected = elf_from_kinetic(rho(r), rho(r, 1) ** 2, CubicSpline(d.r, d.tau_pseudo)(r))
        assert np.abs(elf[1:9, 0, 0] - expected).max() < tolerance, symbol
        assert expected.max() - expected.min() > 0.3  # a real shell structure was compared
    s = b2(3.9)
    f = atomic_limit_elf(s, (20, 20, 20))
    assert 0 <= f.min() and f.max() <= 1 and symmetry_error(f, s) < 1e-9


def test_atomic_limit_channels_are_one_elf_its_logit_and_the_pseudo_density():
    from elf_workflows.sad import superpose
    from elf_workflows.surrogate.features import ATOMIC_LIMIT_FEATURES, atomic_limit_elf, atomic_limit_features

    s = b2(3.6, "Fe", "Pb")
    f = atomic_limit_features(s, (18, 18, 18))
    assert f.shape == (len(ATOMIC_LIMIT_FEATURES), 18, 18, 18) and f.dtype == np.float32
    assert np.allclose(f[0], atomic_limit_elf(s, (18, 18, 18)), atol=1e-6)
    inside = np.abs(f[1]) < 2.0  # unclipped: ELF = 1 / (1 + χ²) with ln χ = 4 · logit
    assert inside.mean() > 0.99
    assert np.allclose(f[0][inside], 1.0 / (1.0 + np.exp(8.0 * f[1][inside].astype(float))), atol=1e-5)
    # the pseudo density the channel is built on: the superposition on a twice finer grid, sampled
    fine = superpose(s, (36, 36, 36), "pseudo")[::2, ::2, ::2]
    assert np.allclose(f[2], np.log(np.maximum(fine, 1e-5)) / 4.0, atol=1e-5)
    assert max(symmetry_error(c, s) for c in f) < 1e-6


# ------------------------------------------------------- equivariance / pooling
def test_origin_shift_equivariance_on_commensurate_shifts():
    model = random_model()
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(N_FEATURES, 16, 12, 20)).astype(np.float32)
    base = predict_grid(model.net, feats)
    for shift in [(4, 0, 0), (0, 8, 4), (12, 4, 16)]:
        shifted = predict_grid(model.net, np.roll(feats, shift, axis=(1, 2, 3)))
        assert np.abs(shifted - np.roll(base, shift, axis=(0, 1, 2))).max() < 1e-5
    # an odd shift is not commensurate with the pooling: the raw network is not exactly equivariant there
    odd = predict_grid(model.net, np.roll(feats, (1, 0, 0), axis=(1, 2, 3)))
    assert np.abs(odd - np.roll(base, (1, 0, 0), axis=(0, 1, 2))).max() > 1e-4


@pytest.mark.parametrize("structure", [
    b2(),
    Structure(Lattice.cubic(4.2), ["La"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
    Structure(Lattice.hexagonal(2.6, 4.2), ["Y", "Y"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
])
def test_space_group_invariance_of_prediction(structure):
    model = random_model()
    elf = predict_elf(structure, model=model)
    shape = elf.shape
    assert all(n % model.config.multiple == 0 for n in shape)
    group = get_space_group(structure)
    assert group.is_grid_compatible(shape).all()
    assert symmetry_error(elf, group) < 1e-6
    raw = predict_elf(structure, model=model, pool=False)
    assert symmetry_error(raw, group) > 1e-5  # the pooling, not luck, makes it symmetric
    assert 0.0 <= elf.min() and elf.max() <= 1.0
    # the same cell with its origin moved by a lattice-commensurate vector gives the moved field
    moved = structure.copy()
    moved.translate_sites(range(len(moved)), [4 / shape[0], 0, 0], frac_coords=True)
    assert np.abs(predict_elf(moved, model=model) - np.roll(elf, 4, axis=0)).max() < 1e-5


def test_native_grid_multiple_and_requested_grid():
    s = Structure(Lattice.hexagonal(2.6, 4.2), ["Y", "Y"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    shape = native_grid(s, 0.2, 4)
    assert shape[0] == shape[1] and all(n % 4 == 0 for n in shape)
    assert all(length / n <= 0.2 + 1e-9 for length, n in zip(s.lattice.abc, shape))
    model = random_model()
    out = predict_elf(s, shape=(18, 18, 30), model=model)
    native = predict_elf(s, model=model)
    assert out.shape == (18, 18, 30)
    assert np.allclose(out, np.clip(fourier_interpolate(native, (18, 18, 30)), 0, 1), atol=1e-6)


def test_a_per_voxel_model_takes_grids_that_are_no_multiple_of_the_pooling_stride():
    """Without a U-Net nothing pools, so the native grid is the smallest FFT-friendly, symmetric one (session 10)."""
    from elf_workflows.surrogate import load_model, model_grid

    fcc = Structure(Lattice.cubic(6.87), ["La"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    primitive = fcc.get_primitive_structure()  # a = 4.86 Å: 25 voxels of 0.194 Å per axis
    shipped = load_model()
    assert not shipped.net.unet_active()
    assert model_grid(primitive, shipped) == (25, 25, 25)
    with_unet = random_model()  # a U-Net that runs keeps the multiple of 4
    assert with_unet.net.unet_active() and model_grid(primitive, with_unet) == (32, 32, 32)
    hcp = Structure(Lattice.hexagonal(2.6, 4.2), ["Y", "Y"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    shape = model_grid(hcp, shipped)  # still symmetric: the screw axis' 1/2 translation needs an even c
    assert shape[0] == shape[1] and shape[2] % 2 == 0 and all(a / n <= 0.2 + 1e-9 for a, n in zip(hcp.lattice.abc, shape))


def test_pointwise_branch_in_slabs_equals_whole():
    torch.manual_seed(0)
    net = PeriodicUNet(UNetConfig(base_channels=4, levels=2, point_channels=16))
    torch.nn.init.normal_(net.point[-1].weight)  # the zero-initialised last layer would hide any error
    x = torch.randn(1, N_FEATURES, 12, 8, 8)
    with torch.no_grad():
        whole = net.point(x)
        slabs = net.pointwise(x, chunk_voxels=100)  # 1 slab (64 voxels) per chunk: 12 chunks
    assert whole.abs().max() > 0.1 and torch.allclose(whole, slabs, atol=1e-6)


def test_pointwise_branch_once_per_orbit_equals_every_voxel():
    """Symmetric features: the per-voxel branch run on the orbit representatives and broadcast gives the
    every-voxel network output, untiled and tiled."""
    from elf_workflows.surrogate.features import cell_features
    from elf_workflows.symmetry import voxel_orbits

    structure = b2(3.2)
    shape = native_grid(structure, 0.2, 4)
    feats = cell_features(structure, sad_density(structure, shape))
    orbits = voxel_orbits(get_space_group(structure), shape)
    assert len(orbits) < np.prod(shape) / 20
    for model, core in [(random_model(), None), (random_model(levels=2, convs_per_level=1), 8)]:
        full = predict_grid(model.net, feats, core=core)
        fast = predict_grid(model.net, feats, core=core, orbits=orbits)
        assert full.std() > 0.05 and np.abs(full - fast).max() < 1e-6


def test_a_per_voxel_model_at_orbit_representatives_equals_the_whole_pipeline():
    """A model whose U-Net is dropped (the shipped one) forms its channels and runs its branch only at
    the orbits' representatives: the same ELF as every channel on every voxel + network + pooling."""
    from elf_workflows.surrogate.features import cell_features
    from elf_workflows.surrogate.infer import model_grid, predict_native
    from elf_workflows.surrogate.model import per_voxel_elf
    from elf_workflows.surrogate.symmetry_pool import pool_cell
    from elf_workflows.symmetry import voxel_orbits

    model = load_model()
    assert not model.net.unet_active()
    for structure in (b2(3.3, "Fe", "Pb"), Structure(Lattice.hexagonal(2.9, 4.7), ["Mg", "Mg"],
                                                     [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])):
        group = get_space_group(structure)
        # the whole network needs multiples of its pooling stride: compare on such a grid
        shape = native_grid(structure, model.config.spacing, model.config.multiple, group=group)
        rho = sad_density(structure, shape)
        orbits = voxel_orbits(group, shape)
        full = cell_features(structure, rho)
        np.testing.assert_array_equal(cell_features(structure, rho, at=orbits.representatives),
                                      full.reshape(len(full), -1)[:, orbits.representatives])
        with torch.inference_mode():
            fast = orbits.broadcast(per_voxel_elf(model.net, cell_features(structure, shape=shape, at=orbits.representatives)))
            native = predict_native(structure, model)  # the same path on the model's own (stride-free) grid
        slow = pool_cell(predict_grid(model.net, full), group)
        assert fast.std() > 0.05 and np.abs(fast - slow).max() < 1e-6
        assert native.shape == model_grid(structure, model, group) and native.std() > 0.05


def test_merged_per_voxel_models_predict_the_sigmoid_of_their_mean_logit():
    from elf_workflows.surrogate.model import merge_pointwise, per_voxel_elf

    members = []
    for seed, width in ((1, 16), (2, 8)):
        net = random_model(seed, base_channels=4, point_channels=width).net
        with torch.no_grad():
            torch.nn.init.normal_(net.point[-1].weight, 0.0, 0.5)  # the last layer starts at zero
            net.point[-1].bias.fill_(0.3 * seed)
            net.head.bias.fill_(-0.2 * seed)
        with pytest.raises(ValueError, match="per-voxel models"):
            merge_pointwise([net])  # its U-Net still reads its features
        net.drop_unet()
        members.append(net)
    merged = merge_pointwise(members)
    assert merged.config.point_channels == 24 and not merged.unet_active()
    assert merged.config.point_groups == 1  # blocks of 16 and 8: a dense block-diagonal hidden layer
    x = torch.randn(1, N_FEATURES, 6, 5, 7)
    with torch.no_grad():
        logits = [m.logits(x) for m in members]
        assert (logits[0] - logits[1]).abs().max() > 0.5  # two different models
        assert torch.allclose(merged.logits(x), (logits[0] + logits[1]) / 2, atol=1e-5)
    rows = x[0].reshape(N_FEATURES, -1).numpy()
    expected = torch.sigmoid((logits[0] + logits[1]) / 2).reshape(-1).numpy()
    assert np.abs(per_voxel_elf(merged, rows) - expected).max() < 1e-6


def test_an_ensemble_model_keeps_its_members_domain_and_provenance_and_loads_as_saved(tmp_path):
    from elf_workflows.surrogate.infer import ensemble_models, save_model
    from elf_workflows.surrogate.model import per_voxel_elf

    members = []
    for seed, width in ((3, 8), (4, 8)):
        model = random_model(seed, base_channels=4, point_channels=width)
        with torch.no_grad():
            torch.nn.init.normal_(model.net.point[-1].weight, 0.0, 0.5)
        model.net.drop_unet()
        model.metadata = {"trained_on": {"v_ratio_range": [0.2, 0.9]}, "val_mae": 0.01 * seed, "epoch": 3}
        model.version = f"surrogate-member{seed}"
        members.append(model)
    ensemble = ensemble_models(members)
    assert ensemble.metadata["trained_on"] == {"v_ratio_range": [0.2, 0.9]}
    assert [m["version"] for m in ensemble.metadata["ensemble"]["members"]] == ["surrogate-member3", "surrogate-member4"]
    assert [m["val_mae"] for m in ensemble.metadata["ensemble"]["members"]] == [0.03, 0.04]
    assert save_model(ensemble.net, tmp_path / "e.pt", ensemble.metadata) == ensemble.version
    loaded = load_model(tmp_path / "e.pt")
    assert loaded.version == ensemble.version and loaded.config.point_channels == 16
    assert loaded.config.point_groups == 2  # one hidden block per member
    rows = np.random.default_rng(0).normal(size=(N_FEATURES, 50)).astype(np.float32)
    logit = [np.log(e / (1 - e)) for e in (per_voxel_elf(m.net, rows) for m in members)]
    assert np.allclose(per_voxel_elf(loaded.net, rows), 1 / (1 + np.exp(-(logit[0] + logit[1]) / 2)), atol=1e-5)
    members[1].metadata["trained_on"] = {"v_ratio_range": [0.1, 0.9]}
    with pytest.raises(ValueError, match="trained on the same cells"):
        ensemble_models(members)
    # the dataset compares by its directory's name (older members stored their checkout's absolute path)
    members[0].metadata["trained_on"] = {"dataset": "/work/main/data/reference", "v_ratio_range": [0.2, 0.9]}
    members[1].metadata["trained_on"] = {"dataset": "reference", "v_ratio_range": [0.2, 0.9]}
    assert ensemble_models(members).metadata["trained_on"]["dataset"] == "/work/main/data/reference"
    members[1].metadata["trained_on"]["dataset"] = "reference-600eV"
    with pytest.raises(ValueError, match="trained on the same cells"):
        ensemble_models(members)


def test_a_grouped_branch_equals_its_dense_block_diagonal_form_and_merges_again():
    """A hidden layer of blocks (an ensemble's, point_groups > 1) runs block by block (pointwise_rows): the same
    logits as the dense block-diagonal layer, on grids and rows, with and without autograd; merging an
    ensemble with another member of the same block size keeps it grouped (the mean of the two models given:
    each model, not each original member, weighs the same)."""
    from dataclasses import replace

    from elf_workflows.surrogate.model import PeriodicUNet, _dense_hidden_weight, merge_pointwise, per_voxel_elf

    members = []
    for seed in (5, 6, 7):
        net = random_model(seed, base_channels=4, point_channels=8).net
        with torch.no_grad():
            torch.nn.init.normal_(net.point[-1].weight, 0.0, 0.5)
            net.point[-1].bias.fill_(0.1 * seed)
        net.drop_unet()
        members.append(net)
    pair = merge_pointwise(members[:2])
    assert pair.config.point_groups == 2 and tuple(pair.point[2].weight.shape) == (16, 8, 1, 1, 1)
    dense = PeriodicUNet(replace(pair.config, point_groups=1))
    state = pair.state_dict()
    state["point.2.weight"] = _dense_hidden_weight(pair)
    dense.load_state_dict(state)
    assert (dense.point[2].weight[:8, 8:] == 0).all() and dense.point[2].weight[:8, :8].abs().sum() > 0
    x = torch.randn(1, N_FEATURES, 6, 5, 7)
    with torch.no_grad():
        assert torch.allclose(pair.logits(x), dense.logits(x), atol=1e-5)
        assert (pair.logits(x) - pair.logits(x).mean()).abs().max() > 0.1  # not a constant
    assert torch.allclose(pair.pointwise(x), dense.point(x), atol=1e-5)  # with autograd (training's path)
    rows = x[0].reshape(N_FEATURES, -1).numpy()
    assert np.abs(per_voxel_elf(pair, rows) - per_voxel_elf(dense, rows)).max() < 1e-6
    trio = merge_pointwise([pair, members[2]])  # an ensemble joined by a third member
    assert trio.config.point_groups == 3 and trio.config.point_channels == 24
    with torch.no_grad():
        assert torch.allclose(trio.logits(x), (pair.logits(x) + members[2].logits(x)) / 2, atol=1e-5)
        equal = merge_pointwise(members)
        assert equal.config.point_groups == 3
        assert torch.allclose(equal.logits(x), sum(m.logits(x) for m in members) / 3, atol=1e-5)
    mixed = merge_pointwise([pair, dense])  # blocks of 8 and one dense block of 16: dense block-diagonal
    assert mixed.config.point_groups == 1
    with torch.no_grad():
        assert torch.allclose(mixed.logits(x), pair.logits(x), atol=1e-5)


def test_the_shipped_weights_are_the_ensemble_of_the_members_kept_in_data_candidates():
    """data/candidates keeps the shipped ensemble's members (sessions 14–15): merging them gives the shipped
    weights bit for bit (the version is a digest of the weights), one hidden block per member, with their
    domain and provenance."""
    from pathlib import Path

    from elf_workflows.surrogate.infer import ensemble_models

    shipped = load_model()
    names = [m["version"] for m in shipped.metadata["ensemble"]["members"]]
    candidates = Path(__file__).resolve().parents[1] / "data" / "candidates"
    members = [load_model(candidates / f"{name}.pt") for name in names]
    rebuilt = ensemble_models(members)
    assert len(names) == 3 and rebuilt.version == shipped.version
    assert shipped.config.point_groups == 3 and shipped.config.point_channels == 3 * 128
    assert rebuilt.metadata["trained_on"] == shipped.metadata["trained_on"]


def test_a_dropped_unet_leaves_bias_plus_pointwise_and_is_skipped_at_inference():
    net = random_model().net
    x = torch.randn(1, N_FEATURES, 8, 8, 8)
    assert net.unet_active()
    with torch.no_grad():
        before = net.logits(x)
    assert net.drop_unet() > 0 and not net.unet_active()
    with torch.no_grad():
        after = net.logits(x)
        expected = net.head.bias.reshape(1, 1, 1, 1, 1) + net.point(x)
    assert (before - after).abs().max() > 0.01  # the U-Net had been contributing
    assert torch.allclose(after, expected, atol=1e-6)
    assert torch.allclose(net.logits(x), expected, atol=1e-6)  # with autograd the U-Net runs, into zero weights
    shipped = load_model().net
    assert not shipped.unet_active()  # the shipped weights are a per-voxel branch (--epochs 0): zero U-Net head
    from elf_workflows.surrogate.features import cell_features

    cell = b2(3.4)
    feats = torch.from_numpy(cell_features(cell, sad_density(cell, native_grid(cell, 0.2, 4))))[None]
    with torch.no_grad():
        skipped = shipped.logits(feats)  # inference skips the U-Net
    ran = shipped.logits(feats)  # with autograd it runs, into the zero head
    assert torch.allclose(ran.detach(), skipped, atol=1e-5)
    assert torch.allclose(skipped, shipped.head.bias.reshape(1, 1, 1, 1, 1) + shipped.point(feats), atol=1e-5)
    fresh = PeriodicUNet(UNetConfig(base_channels=8))
    fresh.input_shift.copy_(shipped.input_shift)
    fresh.input_scale.copy_(shipped.input_scale)
    assert fresh.unet_alive_fraction(feats) > 0.5


def test_inference_convolutions_equal_the_autograd_ones():
    """The oneDNN call used at CPU inference, with the input standardisation folded into the first
    convolution, gives the module's circular convolutions (non-cubic grid, non-trivial statistics)."""
    from elf_workflows.surrogate.model import _onednn_inference, circular_conv

    torch.manual_seed(0)
    net = PeriodicUNet(UNetConfig(base_channels=4, levels=2, point_channels=8))
    rng = np.random.default_rng(3)  # standardisation folded into the first convolution at inference
    net.set_input_statistics(rng.normal(size=N_FEATURES), rng.uniform(0.2, 3.0, size=N_FEATURES))
    x = torch.randn(1, N_FEATURES, 8, 6, 10)
    with torch.enable_grad():
        reference = net.logits(x).detach()
        conv_reference = net.down[0][0](x).detach()
    with torch.inference_mode():
        assert _onednn_inference(x) == torch.backends.mkldnn.is_available()
        fast = net.logits(x)
        conv_fast = circular_conv(net.down[0][0], x)
    assert conv_reference.abs().max() > 0.5
    torch.testing.assert_close(conv_fast, conv_reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5)


def test_fresh_unet_keeps_the_signal_at_unit_scale():
    torch.manual_seed(0)
    x = torch.randn(1, N_FEATURES, 32, 32, 32)
    with torch.no_grad():
        std = float(PeriodicUNet(UNetConfig(base_channels=16)).unet_features(x).std(dim=(2, 3, 4)).mean())
        torch.manual_seed(0)
        default = PeriodicUNet(UNetConfig(base_channels=16))
        for m in default.modules():  # PyTorch's own initialisation, as before session 6
            if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
                m.reset_parameters()
        std_default = float(default.unet_features(x).std(dim=(2, 3, 4)).mean())
    assert 0.2 < std < 5.0  # the head sees features that vary as much as the input does
    assert std_default < 0.02  # the default shrank them ~threefold per layer


def test_unet_reads_standardised_inputs_and_the_pointwise_branch_raw_ones():
    torch.manual_seed(0)
    net = PeriodicUNet(UNetConfig(base_channels=4, levels=2, point_channels=8)).eval()
    torch.nn.init.normal_(net.point[-1].weight)
    x = torch.randn(1, N_FEATURES, 8, 8, 8) * 3 + 1
    with torch.no_grad():
        unet_raw = net.logits(x) - net.pointwise(x)
        mean, std = np.full(N_FEATURES, 1.0), np.full(N_FEATURES, 3.0)
        net.set_input_statistics(mean, std)
        unet_std = net.logits(x) - net.pointwise(x)
        net.set_input_statistics(np.zeros(N_FEATURES), np.ones(N_FEATURES))
        expected = net.logits((x - 1) / 3) - net.pointwise((x - 1) / 3)
    assert torch.allclose(unet_std, expected, atol=1e-5) and not torch.allclose(unet_std, unet_raw, atol=1e-3)


def test_model_files_without_input_statistics_load_as_identity(tmp_path):
    from elf_workflows.errors import InputError
    from elf_workflows.surrogate.infer import save_model

    model = random_model(base_channels=4, levels=2)
    save_model(model.net, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    for key in PeriodicUNet.OPTIONAL_BUFFERS:  # a file written before session 6
        del payload["state_dict"][key]
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt").net
    assert torch.equal(old.input_shift, torch.zeros(N_FEATURES)) and torch.equal(old.input_scale, torch.ones(N_FEATURES))
    x = torch.randn(1, N_FEATURES, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(old(x), model.net(x), atol=1e-6)
    payload["state_dict"]["stray.weight"] = torch.zeros(1)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="do not fit the architecture"):
        load_model(tmp_path / "bad.pt")


def test_tiled_equals_untiled():
    rng = np.random.default_rng(2)
    small = random_model(levels=2, convs_per_level=1)  # halo 6: many tiles stay cheap
    for shape in [(24, 24, 24), (40, 32, 20)]:
        feats = rng.normal(size=(N_FEATURES, *shape)).astype(np.float32)
        full = predict_grid(small.net, feats)
        tiled = predict_grid(small.net, feats, core=8)
        assert np.abs(full - tiled).max() < 1e-5
    model = random_model()  # the shipped architecture, two tiles of 16 + 2×28 voxels
    feats = rng.normal(size=(N_FEATURES, 32, 16, 16)).astype(np.float32)
    assert np.abs(predict_grid(model.net, feats) - predict_grid(model.net, feats, core=16)).max() < 1e-5
    # a halo below the receptive radius is not identical: the halo is needed
    cfg = small.config
    assert cfg.halo() >= cfg.receptive_radius()
    x = torch.from_numpy(rng.normal(size=(1, N_FEATURES, 24, 24, 24)).astype(np.float32))
    with torch.no_grad():
        a = small.net(x)[0, 0, 8:16, 8:16, 8:16]
        b = small.net(x[:, :, 6:18, 6:18, 6:18])[0, 0, 2:10, 2:10, 2:10]  # halo 2 < 6
    assert (a - b).abs().max() > 1e-4


def test_patch_rotation_matches_index_formula_and_inverts():
    x = torch.arange(4 * 4 * 4, dtype=torch.float32).reshape(1, 4, 4, 4)
    c = 1.5
    ops = patch_operations(np.eye(3) * 4.0, (4, 4, 4))
    assert len(ops) == 48 and np.array_equal(ops[0], np.eye(3))
    for S in ops[::5]:
        y = rotate_patch(x, S)
        for j in [(0, 1, 2), (3, 0, 1), (2, 2, 3)]:
            k = np.rint(S @ (np.array(j) - c) + c).astype(int)
            assert y[0][j].item() == x[0][tuple(k)].item()
        assert torch.equal(unrotate_patch(y, S), x)


def test_patch_operations_follow_the_voxel_metric():
    assert len(patch_operations(np.diag([4.0, 4.0, 6.0]), (20, 20, 30))) == 48  # cubic voxels
    assert len(patch_operations(np.diag([4.0, 4.0, 6.0]), (20, 20, 20))) == 16  # tetragonal voxels
    hexa = Lattice.hexagonal(2.6, 4.2).matrix
    assert len(patch_operations(hexa, (12, 12, 20))) == 8
    # a B2 cell: its 48 point operations are all signed permutations in the cell frame
    assert len(group_patch_operations(b2(), (20, 20, 20))) == 48


# ---------------------------------------------------------------- losses
def test_soft_histogram_analytic():
    bins = 20
    c = 0.37
    h = soft_histogram(torch.full((1, 1000), c), bins)[0].numpy()
    centres = (np.arange(bins) + 0.5) / bins
    w = np.exp(-0.5 * ((c - centres) * bins) ** 2)
    assert np.allclose(h, w / w.sum(), atol=1e-6)
    ramp = torch.linspace(0, 1, 200001)[None]
    hr = soft_histogram(ramp, bins)[0].numpy()
    assert np.allclose(hr[5:-5], 1 / bins, rtol=2e-4)  # uniform values → flat interior
    assert abs(hr.sum() - 1) < 1e-6


def test_hist_loss_values():
    a = torch.full((2, 1, 8, 8, 8), 0.1)
    b = torch.full((2, 1, 8, 8, 8), 0.9)
    assert hist_loss(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert hist_loss(a, b).item() == pytest.approx(1.0, abs=1e-6)  # disjoint distributions
    # a voxel permutation changes no histogram
    x = torch.rand(1, 1, 8, 8, 8)
    perm = x.flatten()[torch.randperm(512)].reshape(x.shape)
    assert hist_loss(x, perm).item() < 1e-6


def test_grad_loss_analytic_ramp():
    n, alpha = 10, 0.03
    i = torch.arange(n, dtype=torch.float64)
    ramp = (alpha * i)[:, None, None].expand(n, n, n)[None, None]
    zero = torch.zeros_like(ramp)
    assert grad_loss(ramp, zero).item() == pytest.approx(alpha / 3, rel=1e-12)  # one axis of three
    assert grad_loss(ramp + 0.4, ramp).item() == pytest.approx(0.0, abs=1e-12)  # offsets have no gradient
    # sin along z: mean |Δ sin(k j)| over whole periods
    k = 2 * np.pi / n
    s = torch.sin(k * i)[None, None, :].expand(n, n, n)[None, None]
    expected = np.abs(np.diff(np.sin(k * np.arange(n)))).mean() / 3
    assert grad_loss(s, zero).item() == pytest.approx(expected, rel=1e-10)


def test_uncertainty_weights_move_towards_log_loss():
    w = UncertaintyWeighting()
    opt = torch.optim.Adam(w.parameters(), lr=0.05)
    losses = torch.tensor([0.02, 0.3, 0.005])
    for _ in range(600):
        opt.zero_grad()
        w(losses).backward()
        opt.step()
    # the minimum of exp(−s)·L + s is at s = ln L
    assert np.allclose(w.log_vars.detach().numpy(), np.log(losses.numpy()), atol=0.05)
    assert np.allclose(w.weights(), 1 / losses.numpy(), rtol=0.06)


def test_uncertainty_weights_start_balanced():
    w = UncertaintyWeighting()
    losses = torch.tensor([0.05, 0.2, 0.01])
    w.start_at(losses)
    assert np.allclose(w.weights(), 1 / losses.numpy(), rtol=1e-6)
    # at s = ln L the objective is stationary in s
    s = w.log_vars.detach().clone().requires_grad_(True)
    (torch.exp(-s) * losses + s).sum().backward()
    assert np.allclose(s.grad.numpy(), 0.0, atol=1e-6)


# ---------------------------------------------------------------- shipped weights
def test_shipped_weights_load_and_predict():
    model = load_model()
    assert model.version and isinstance(model.version, str)
    assert model.net.n_parameters() < 1_000_000
    s = b2(3.6, "Fe", "Pb")
    elf = predict_elf(s, model=model)
    assert 0.0 <= elf.min() and elf.max() <= 1.0
    assert elf.std() > 0.05  # a trained field, not a constant
    assert symmetry_error(elf, s) < 1e-6
    # ELF is low right at a heavy nucleus' valence shell minimum and not saturated everywhere
    assert 0.2 < elf.mean() < 0.9
    meta = json.loads((__import__("importlib").resources.files("elf_workflows.data") / "surrogate.json").read_text())
    assert meta["version"] == model.version


def test_model_of_another_feature_set_fails_with_one_line(tmp_path):
    from elf_workflows.errors import InputError
    from elf_workflows.surrogate.infer import save_model

    torch.manual_seed(0)
    path = tmp_path / "old.pt"
    save_model(PeriodicUNet(UNetConfig(in_channels=N_FEATURES - 1)), path)
    with pytest.raises(InputError, match=f"reads {N_FEATURES - 1} input channels") as err:
        load_model(path)
    assert "\n" not in str(err.value)


def test_participation_counts_the_atoms_sharing_a_point():
    """P = (Σρ_i)²/Σρ_i² is 1 at an atom and exactly 2 midway between two equal atoms far from the others."""
    from elf_workflows.surrogate.features import log_participation

    s = Structure(Lattice.orthorhombic(12.0, 12.0, 3.2), ["Ca", "Ca"], [[0.0, 0, 0], [0.0, 0.5, 0]])  # chains along c
    shape = (60, 60, 16)
    p = np.exp(2 * log_participation(s, shape).astype(float))
    assert p[0, 0, 0] == pytest.approx(1.0, abs=0.02)  # on an atom its own density dominates
    assert p[0, 0, 8] == pytest.approx(2.0, abs=0.02)  # midway between an atom and its c image
    assert p[0, 15, 8] == pytest.approx(4.0, abs=0.1)  # centre of a rectangle of four equal atoms (farther images add a little)
    assert p[30, 30, 0] == 1.0  # near-vacuum reads 1


def test_fused_superposition_gives_the_features_of_the_separate_fields(monkeypatch):
    """cell_features without a density (one pass over G, one batched transform) equals the separate path."""
    import elf_workflows.surrogate.features as features
    from elf_workflows.sad import sad_density
    from elf_workflows.surrogate.features import cell_features, superposed_fields
    from elf_workflows.surrogate.features import electrostatic_potential

    for s in (Structure(Lattice.cubic(3.9), ["Ca", "Ba"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
              Structure(Lattice.from_parameters(3.1, 3.4, 3.9, 81, 97, 104), ["Sr", "Ca"], [[0, 0, 0], [0.41, 0.52, 0.47]])):
        shape = (12, 14, 16)
        fields = superposed_fields(s, shape)
        rho = sad_density(s, shape)
        np.testing.assert_allclose(fields["density"], rho, rtol=0, atol=1e-12 * rho.max())
        np.testing.assert_allclose(fields["spectrum"], np.fft.rfftn(rho), rtol=0, atol=1e-10 * np.abs(fields["spectrum"]).max())
        v = electrostatic_potential(s, shape)
        np.testing.assert_allclose(fields["potential"], v, rtol=0, atol=1e-12 * np.abs(v).max())
        fused, separate = cell_features(s, shape=shape), cell_features(s, rho)
        np.testing.assert_allclose(fused, separate, rtol=1e-6, atol=1e-6)
        at = np.array([0, 5, 99, 1000, 2687])
        np.testing.assert_array_equal(cell_features(s, shape=shape, at=at), fused.reshape(len(fused), -1)[:, at])
        with monkeypatch.context() as m:  # a grid above the fused limit: the fields one at a time
            m.setattr(features, "FUSED_MAX_VOXELS", 0)
            np.testing.assert_array_equal(cell_features(s, shape=shape), separate)


def test_predict_many_batches_the_network_and_equals_one_cell_at_a_time(monkeypatch):
    import elf_workflows.surrogate.infer as infer
    from elf_workflows.surrogate import load_model, predict_elf, predict_many

    model = load_model()
    cells = [Structure(Lattice.cubic(3.9), ["Ca", "Ba"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
             Structure(Lattice.cubic(5.0), ["La"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
             Structure(Lattice.hexagonal(3.0, 4.9), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
             Structure(Lattice.from_parameters(3.1, 3.4, 3.9, 81, 97, 104), ["Sr", "Ca"], [[0, 0, 0], [0.41, 0.52, 0.47]])]
    grids = [(10, 12, 14), None, (9, 9, 12), (12, 12, 12)]
    one = [predict_elf(s, shape=g, model=model) for s, g in zip(cells, grids)]
    monkeypatch.setattr(infer, "BATCH_ROWS", 400)  # several batches, one of them several cells
    many = predict_many(cells, model=model, shapes=grids)
    assert [a.shape for a in many] == [a.shape for a in one]
    for a, b in zip(many, one):
        # a float32 network: the batch size (and the thread count) choose the matrix kernels, a few ulps
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    with pytest.raises(Exception, match="2 grids for 4 structures"):
        predict_many(cells, model=model, shapes=grids[:2])
