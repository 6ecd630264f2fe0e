"""Grids: FFT-friendly sizes, memory cap, Fourier interpolation and the FFT-derivative helper."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elf_workflows.errors import GridError
from elf_workflows.grids import (
    check_grid,
    fft_derivative,
    fft_friendly,
    fourier_interpolate,
    fractional_grid,
    grid_for_spacing,
    is_fft_friendly,
)
from elf_workflows.symmetry import get_space_group

OBLIQUE = Lattice([[4.0, 0.0, 0.0], [1.1, 3.7, 0.0], [0.6, -0.4, 4.4]])


def analytic(lattice: Lattice, shape):
    """f = sin(G1·r) + 0.5 cos(G2·r) with its exact gradient and Laplacian."""
    b = lattice.reciprocal_lattice.matrix
    g1, g2 = 2 * b[0] + b[1], b[1] - 3 * b[2]
    r = fractional_grid(shape) @ lattice.matrix
    p1, p2 = r @ g1, r @ g2
    f = np.sin(p1) + 0.5 * np.cos(p2)
    grad = np.cos(p1)[None] * g1[:, None, None, None] - 0.5 * np.sin(p2)[None] * g2[:, None, None, None]
    lap = -np.sin(p1) * (g1 @ g1) - 0.5 * np.cos(p2) * (g2 @ g2)
    return f, grad, lap


def test_fft_friendly_sizes():
    assert [fft_friendly(n) for n in (1, 7, 11, 13, 97)] == [1, 8, 12, 15, 100]
    assert fft_friendly(13, multiple_of=4) == 16 and fft_friendly(25, multiple_of=6) == 30
    assert is_fft_friendly(2 * 3 * 5 * 16) and not is_fft_friendly(14)


def test_grid_for_spacing_is_symmetric_and_fine_enough():
    hcp = Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(3.2, 5.1), ["Y"], [[1 / 3, 2 / 3, 0.25]])
    shape = grid_for_spacing(hcp, 0.1)
    assert shape[0] == shape[1] and all(is_fft_friendly(n) for n in shape)
    assert all(length / n <= 0.1 + 1e-12 for length, n in zip(hcp.lattice.abc, shape))
    assert get_space_group(hcp).is_grid_compatible(shape).all()
    # a body-centred tetragonal cell with a non-symmorphic translation along c
    ortho = Structure.from_spacegroup("I4_1/amd", Lattice.tetragonal(3.3, 8.1), ["Sn"], [[0, 0, 0]])
    shape = grid_for_spacing(ortho, 0.2)
    assert shape[0] == shape[1] and shape[2] % 4 == 0
    assert get_space_group(ortho).is_grid_compatible(shape).all()


def test_check_grid_refuses_bad_and_oversized_grids(monkeypatch):
    with pytest.raises(GridError, match="positive"):
        check_grid((0, 4, 4))
    with pytest.raises(GridError, match="three"):
        check_grid((4, 4))
    monkeypatch.setenv("ELF_WORKFLOWS_MAX_MEMORY_GB", "0.01")
    with pytest.raises(GridError, match=r"needs about .* GB"):
        check_grid((256, 256, 256))
    assert check_grid((16, 16, 16)) == (16, 16, 16)


def test_gradient_and_laplacian_of_an_analytic_field():
    shape = (24, 20, 30)
    f, grad, lap = analytic(OBLIQUE, shape)
    assert np.abs(fft_derivative(f, OBLIQUE, "gradient") - grad).max() < 1e-9
    assert np.abs(fft_derivative(f, OBLIQUE, "laplacian") - lap).max() < 1e-8
    hess = fft_derivative(f, OBLIQUE, "hessian")
    assert np.abs(np.trace(hess) - lap).max() < 1e-8


def test_odd_derivatives_drop_the_nyquist_plane():
    """A field symmetric under x → −x must have an exactly antisymmetric gradient."""
    rng = np.random.default_rng(0)
    shape = (16, 16, 16)
    field = rng.random(shape)
    field = 0.5 * (field + np.roll(field[::-1, ::-1, ::-1], 1, axis=(0, 1, 2)))  # inversion-symmetric
    grad = fft_derivative(field, Lattice.cubic(4.0), "gradient")
    inverted = np.roll(grad[:, ::-1, ::-1, ::-1], 1, axis=(1, 2, 3))
    assert np.abs(grad + inverted).max() < 1e-12


def test_fourier_interpolation_is_exact_for_band_limited_fields():
    f_coarse, _, _ = analytic(OBLIQUE, (24, 20, 30))
    f_fine, _, _ = analytic(OBLIQUE, (48, 45, 64))
    assert np.abs(fourier_interpolate(f_coarse, (48, 45, 64)) - f_fine).max() < 1e-10
    assert np.abs(fourier_interpolate(f_fine, (24, 20, 30)) - f_coarse).max() < 1e-10
    up_down = fourier_interpolate(fourier_interpolate(f_coarse, (31, 40, 33)), (24, 20, 30))
    assert np.abs(up_down - f_coarse).max() < 1e-10


def test_fft_derivative_of_a_smoothed_gaussian_is_analytic():
    from elf_workflows.grids import fft_derivative, gaussian_smooth

    # a normalised Gaussian of width a smoothed by σ is one of width b = √(a² + σ²): ∇ρ_b = −r ρ_b / b²
    L, n, a, sigma = 12.0, 64, 0.5, 0.6
    lat = Lattice.cubic(L)
    x = (np.arange(n) / n - 0.5) * L
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    r2 = X**2 + Y**2 + Z**2

    def gauss(w):
        return np.exp(-r2 / (2 * w**2)) / (2 * np.pi * w**2) ** 1.5

    b = np.hypot(a, sigma)
    grad = fft_derivative(gauss(a), lat, "gradient", smoothing=sigma)
    assert np.abs(grad[0] + X * gauss(b) / b**2).max() < 1e-6 * np.abs(grad[0]).max()
    lap = fft_derivative(gauss(a), lat, "laplacian", smoothing=sigma)
    assert np.abs(lap - (r2 / b**4 - 3 / b**2) * gauss(b)).max() < 1e-6 * np.abs(lap).max()
    # the same as differentiating the smoothed field
    assert np.allclose(lap, fft_derivative(gaussian_smooth(gauss(a), lat, sigma), lat, "laplacian"), atol=1e-12)


def test_squared_g_norms_equal_the_cartesian_g_squared():
    from elf_workflows.grids import cartesian_g, frequencies, squared_g_norms

    for lattice in (OBLIQUE, Lattice.cubic(3.7), Lattice.hexagonal(3.1, 5.0)):
        hkl = frequencies((6, 8, 10), rfft=True)
        G = cartesian_g(lattice, *hkl)
        np.testing.assert_allclose(squared_g_norms(lattice, *hkl), (G**2).sum(0), rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("batched", [True, False])
def test_derived_fields_equal_fft_derivative_one_by_one(batched, monkeypatch):
    import elf_workflows.grids as grids

    if not batched:  # every stack "too big": one scipy transform at a time
        monkeypatch.setattr(grids, "_BATCH_SPECTRA", 0)
    shape = (12, 10, 14)
    f, _, _ = analytic(OBLIQUE, shape)
    f = f + 0.3 * np.random.default_rng(0).normal(size=shape)  # every frequency present
    requests = [("value", 0.4), ("squared_gradient", 0.0), ("laplacian", 0.8), ("squared_gradient", 0.8), ("value", 1.6)]
    at = np.array([0, 7, 100, 1679])
    whole = list(grids.derived_fields(grids.real_spectrum(f), OBLIQUE, shape, requests))
    picked = list(grids.derived_fields(grids.real_spectrum(f), OBLIQUE, shape, requests, at=at))
    for (derivative, sigma), field, values in zip(requests, whole, picked):
        one = fft_derivative(f, OBLIQUE, derivative, smoothing=sigma)
        np.testing.assert_allclose(field, one, rtol=0, atol=1e-12 * np.abs(one).max())
        np.testing.assert_array_equal(values, field.reshape(-1)[at])


def test_batched_inverse_transforms_do_not_depend_on_the_thread_count():
    """torch splits a multi-threaded FFT differently (last-bit changes on 12³): real_fields runs it on one thread."""
    import scipy.fft
    import torch

    from elf_workflows.grids import real_field, real_fields

    shape = (12, 12, 12)
    spectra = list(scipy.fft.rfftn(np.random.default_rng(1).normal(size=(5, *shape)), axes=(1, 2, 3)))
    before = torch.get_num_threads()
    try:
        fields = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            fields[threads] = np.stack(list(real_fields(spectra, shape)))
            assert torch.get_num_threads() == threads  # restored
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(fields[1], fields[2])
    np.testing.assert_allclose(fields[1], np.stack([real_field(s, shape) for s in spectra]), rtol=0, atol=1e-14)
