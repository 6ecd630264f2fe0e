"""Input features of the surrogate and the gradient-expansion ELF baseline.

Every feature is a rotation-invariant scalar field: the density channels come from the SAD through
the one FFT-derivative helper :func:`elf_workflows.grids.fft_derivative`, the species channels and
the electrostatic channel from Fourier superpositions over the atoms, so the features are exactly
periodic and carry the symmetry of the structure.

The gradient-expansion (Kirzhnits; Tsirelson & Stash, Chem. Phys. Lett. 351, 142 (2002)) ELF is

    τ_GE = C_F ρ^{5/3} + |∇ρ|²/(72 ρ) + ∇²ρ / 6,     τ_W = |∇ρ|²/(8 ρ),
    D = τ_GE − τ_W ≥ 0,   D_h = C_F ρ^{5/3},   C_F = (3/10)(3π²)^{2/3},
    ELF = 1 / (1 + (D / D_h)²)

(atomic units for τ; the ratio D/D_h is dimensionless, so ρ in e/Å³ and derivatives in Å⁻¹ give the
same ELF as bohr units).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from elf_workflows.grids import (
    derived_fields,
    fft_derivative,
    frequencies,
    real_field,
    real_fields,
    real_spectrum,
    spectral_operators,
)

if TYPE_CHECKING:
    from pymatgen.core import Lattice, Structure

#: Thomas–Fermi constant (3/10)(3π²)^{2/3}
C_F = 0.3 * (3 * np.pi**2) ** (2.0 / 3.0)
#: densities below this (e/Å³) are floored before ratios are taken
RHO_FLOOR = 1e-5
#: widths σ (Å) of the Gaussian smoothings ρ_σ whose log-ratios ln(ρ_σ/ρ) are channels
SMOOTHING_WIDTHS = (0.4, 0.8, 1.6, 3.2)
#: widths σ (Å) at which the smoothed density's scaled gradient and Laplacian are channels
SMOOTHED_DERIVATIVE_WIDTHS = (0.4, 0.8, 1.6)
#: names of the density channels, in order
DENSITY_FEATURES = (
    ("log_rho", "reduced_gradient", "reduced_laplacian", "ge_elf")
    + tuple(f"smooth_ratio_{w:g}" for w in SMOOTHING_WIDTHS)
    + tuple(f"smooth_gradient_{w:g}" for w in SMOOTHED_DERIVATIVE_WIDTHS)
    + tuple(f"smooth_laplacian_{w:g}" for w in SMOOTHED_DERIVATIVE_WIDTHS)
)
#: names of the species channels (nearest-atom weighted element properties), in order
SPECIES_FEATURES = ("group", "row", "electronegativity")
#: names of the electrostatic channels (:func:`electrostatic_features`), in order
ELECTROSTATIC_FEATURES = ("electrostatic",)
#: the atomic-limit ELF is band-limited on a grid this many times finer than the feature grid
ATOMIC_LIMIT_OVERSAMPLING = 2
#: densities (e/Å³) below which the participation ratio reads 1, and its upper clip (a void's neighbours)
PARTICIPATION_FLOOR = 1e-3
PARTICIPATION_MAX = 16.0
#: names of the atomic-limit channels (:func:`atomic_limit_elf`), in order
ATOMIC_LIMIT_FEATURES = ("atomic_limit_elf", "atomic_limit_logit", "log_pseudo_density")
#: names of the compression channels (:func:`compression_features`, session 8), in order
COMPRESSION_FEATURES = ("log_compression",)
FEATURE_NAMES = (DENSITY_FEATURES + SPECIES_FEATURES + ELECTROSTATIC_FEATURES + ATOMIC_LIMIT_FEATURES
                 + COMPRESSION_FEATURES)
N_FEATURES = len(FEATURE_NAMES)
#: width (Å) of the Gaussian atom weights of the species channels
SPECIES_SIGMA = 0.7
#: width σ (Å) of the Gaussian pseudo-nuclei (charge +Z_val) of the electrostatic potential
NUCLEUS_SIGMA = 0.3
#: e²/(4πε₀) in eV·Å: a charge density in e/Å³ gives a potential in V
COULOMB_EV_ANGSTROM = 14.399645
#: scale (V) of the asinh compression of the electrostatic channels
POTENTIAL_SCALE = 2.0


def _pick(field: np.ndarray, at: np.ndarray | None) -> np.ndarray:
    """The whole field, or its values at the C-order flat voxel indices ``at``."""
    return field if at is None else field.reshape(-1)[at]


def _channels(n: int, shape: tuple[int, ...], at: np.ndarray | None) -> np.ndarray:
    """An empty float32 array for ``n`` channels on the grid ``shape``, or at the voxels ``at``."""
    return np.empty((n, *shape) if at is None else (n, len(at)), dtype=np.float32)


def _derivatives(density: np.ndarray, lattice: Lattice,
                 spectrum: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rho = np.maximum(np.asarray(density, float), RHO_FLOOR)
    spectrum = real_spectrum(density) if spectrum is None else spectrum
    grad2 = fft_derivative(density, lattice, "squared_gradient", spectrum=spectrum)
    lap = fft_derivative(density, lattice, "laplacian", spectrum=spectrum)
    return rho, grad2, lap


def _ge_elf(rho: np.ndarray, grad2: np.ndarray, lap: np.ndarray) -> np.ndarray:
    d_h = C_F * rho ** (5.0 / 3.0)
    d = d_h + grad2 / (72.0 * rho) + lap / 6.0 - grad2 / (8.0 * rho)
    chi = np.maximum(d, 0.0) / d_h
    return 1.0 / (1.0 + chi**2)


def gradient_expansion_elf(density: np.ndarray, lattice: Lattice) -> np.ndarray:
    """Gradient-expansion (Kirzhnits / Tsirelson–Stash) ELF of a periodic density (e/Å³) on its grid.

    Args:
        density: valence density in e/Å³, shape ``(nx, ny, nz)`` on the unit-cell grid.
        lattice: the pymatgen lattice of the cell (Å).

    Returns:
        ELF in [0, 1] on the same grid.
    """
    return _ge_elf(*_derivatives(density, lattice))


def _multiscale_requests() -> list[tuple[str, float]]:
    """The (derivative, σ) of :func:`multiscale_features`, in the order it consumes them."""
    requests = []
    for w in SMOOTHING_WIDTHS:
        requests.append(("value", w))
        if w in SMOOTHED_DERIVATIVE_WIDTHS:
            requests += [("squared_gradient", w), ("laplacian", w)]
    return requests


def _fill_multiscale(out: np.ndarray, rho: np.ndarray, fields) -> np.ndarray:
    """Write the ten multiscale channels into ``out`` from the fields of :func:`_multiscale_requests` (an iterator)."""
    n_ratio, n_deriv = len(SMOOTHING_WIDTHS), len(SMOOTHED_DERIVATIVE_WIDTHS)
    for k, w in enumerate(SMOOTHING_WIDTHS):
        rho_w = np.maximum(next(fields), RHO_FLOOR)
        out[k] = np.log(rho_w / rho) / 4.0
        if w in SMOOTHED_DERIVATIVE_WIDTHS:
            d = SMOOTHED_DERIVATIVE_WIDTHS.index(w)
            t = w * np.sqrt(next(fields)) / rho_w
            out[n_ratio + d] = t / (1.0 + t)
            out[n_ratio + n_deriv + d] = np.tanh(w**2 * next(fields) / rho_w)
    return out


def multiscale_features(density: np.ndarray, lattice: Lattice, out: np.ndarray | None = None,
                        spectrum: np.ndarray | None = None, at: np.ndarray | None = None) -> np.ndarray:
    """Where each voxel sits in its surroundings, at several length scales; ``(10, nx, ny, nz)`` float32.

    With ρ_σ the density smoothed over σ Å (:func:`elf_workflows.grids.gaussian_smooth`):

    - ``smooth_ratio_σ`` = ln(ρ_σ/ρ)/4, σ ∈ :data:`SMOOTHING_WIDTHS` (0.4–3.2 Å): > 0 in voids and
      density troughs, < 0 on shells and nuclei;
    - ``smooth_gradient_σ`` = t/(1+t), t = σ|∇ρ_σ|/ρ_σ, σ ∈ :data:`SMOOTHED_DERIVATIVE_WIDTHS`: 0 at
      centres of symmetric environments (void centres, nuclei), larger off-centre;
    - ``smooth_laplacian_σ`` = tanh(σ²∇²ρ_σ/ρ_σ): curvature of the surroundings (> 0 at minima).

    Derivatives through :func:`elf_workflows.grids.derived_fields` (the multipliers of
    :func:`elf_workflows.grids.fft_derivative`, ``smoothing=σ``), all from one forward FFT
    (``spectrum``, the density's ``rfftn``, computed here when not given), written into ``out``
    (float32) one scale at a time: big grids hold one float64 field at a time, not all ten. Each
    family lowers the validation MAE of a per-voxel model (the ablation is in docs/surrogate.md).
    ``at``: only at these C-order flat voxel indices, ``(10, len(at))`` (the smoothings still take the
    whole grid).
    """
    if out is None:
        out = _channels(len(SMOOTHING_WIDTHS) + 2 * len(SMOOTHED_DERIVATIVE_WIDTHS), np.shape(density), at)
    rho = np.maximum(_pick(np.asarray(density, float), at), RHO_FLOOR)
    spectrum = real_spectrum(density) if spectrum is None else spectrum
    fields = derived_fields(spectrum, lattice, np.shape(density), _multiscale_requests(), at)
    return _fill_multiscale(out, rho, fields)


def input_features(density: np.ndarray, lattice: Lattice, out: np.ndarray | None = None,
                   at: np.ndarray | None = None, spectrum: np.ndarray | None = None) -> np.ndarray:
    """The density channels (:data:`DENSITY_FEATURES`) from a density (e/Å³), float32, each bounded or of order one.

    Local (4):

    - ``log_rho``: ln(ρ / 1 e Å⁻³) / 4;
    - ``reduced_gradient``: s/(1+s) with s = |∇ρ| / (2 (3π²)^{1/3} ρ^{4/3});
    - ``reduced_laplacian``: tanh(q) with q = ∇²ρ / (4 (3π²)^{2/3} ρ^{5/3});
    - ``ge_elf``: :func:`gradient_expansion_elf` of the density;

    multi-scale (10): :func:`multiscale_features`. All twenty derived fields come from one forward
    FFT (:func:`elf_workflows.grids.derived_fields`; ``spectrum``: the density's, when the caller has
    it). ``out``: a float32 array to write them into. ``at``: only at these C-order flat voxel
    indices, ``(14, len(at))``.
    """
    if out is None:
        out = _channels(len(DENSITY_FEATURES), np.shape(density), at)
    requests = [("squared_gradient", 0.0), ("laplacian", 0.0)] + _multiscale_requests()
    spectrum = real_spectrum(density) if spectrum is None else spectrum
    fields = derived_fields(spectrum, lattice, np.shape(density), requests, at)
    rho = np.maximum(_pick(np.asarray(density, float), at), RHO_FLOOR)
    grad2, lap = next(fields), next(fields)
    kf = (3 * np.pi**2) ** (1.0 / 3.0)
    s = np.sqrt(grad2) / (2 * kf * rho ** (4.0 / 3.0))
    out[0] = np.log(rho) / 4.0
    out[1] = s / (1.0 + s)
    del s
    out[2] = np.tanh(lap / (4 * kf**2 * rho ** (5.0 / 3.0)))
    out[3] = _ge_elf(rho, grad2, lap)
    del grad2, lap
    _fill_multiscale(out[4:], rho, fields)
    return out


def element_properties(symbol: str) -> tuple[float, float, float]:
    """(group/18, row/7, Pauling electronegativity/4) of an element, each of order one."""
    from pymatgen.core import Element

    el = Element(symbol)
    x = el.X if el.X == el.X else 2.0  # NaN (noble gases) → a neutral value
    group = 3 if el.is_lanthanoid or el.is_actinoid else el.group
    return group / 18.0, el.row / 7.0, float(x) / 4.0


def species_features(structure: Structure, shape: tuple[int, int, int], sigma: float = SPECIES_SIGMA,
                     at: np.ndarray | None = None) -> np.ndarray:
    """Element properties (:func:`element_properties`) spread over the cell, shape ``(3, nx, ny, nz)``.

    p(r) = Σ_j p_j g(r − r_j) / Σ_j g(r − r_j) with periodic Gaussian weights g of width ``sigma`` Å
    (Fourier superposition, exactly periodic and symmetric): the property of the nearest atoms,
    blended smoothly between atoms of different species. ``at``: only at these flat voxel indices.
    """
    species, spectra = _species_spectra(structure, shape, sigma)
    return _species_channels(species, [_pick(w, at) for w in real_fields(spectra, shape)], shape, at)


def _species_spectra(structure: Structure, shape: tuple[int, int, int], sigma: float) -> tuple[list[str], list[np.ndarray]]:
    """(species, the spectrum of Σ_{j∈s} g(r − r_j) for each): one inverse FFT per species, not one per property."""
    from elf_workflows.sad import species_structure_factors

    gauss = spectral_operators(structure.lattice, shape).kernel(sigma)
    factors = species_structure_factors(structure, frequencies(shape, rfft=True))
    species = sorted(factors)
    return species, [gauss * factors[symbol] for symbol in species]


def _species_channels(species: list[str], weights: list[np.ndarray], shape: tuple[int, int, int],
                      at: np.ndarray | None) -> np.ndarray:
    """The species channels from each species' Gaussian weights (on the grid, or at ``at``)."""
    den = sum(weights[1:], weights[0])
    den = np.maximum(den, 1e-12 * den.max())  # the field is symmetric: its maximum is at some representative
    properties = [element_properties(symbol) for symbol in species]
    out = _channels(len(SPECIES_FEATURES), shape, at)
    for k in range(len(SPECIES_FEATURES)):
        out[k] = sum((p[k] * w for p, w in zip(properties[1:], weights[1:])), properties[0][k] * weights[0]) / den
    return out


def electrostatic_potential(structure: Structure, shape: tuple[int, int, int],
                            sigma: float = NUCLEUS_SIGMA) -> np.ndarray:
    """Electrostatic potential (V) of the superposed neutral free atoms on the grid ``shape``.

    Charges: a Gaussian pseudo-nucleus of charge +Z_val (width ``sigma`` Å) per atom and its
    partition density (:func:`elf_workflows.sad.partition_density`, −Z_val electrons, semicore at the
    nucleus). Poisson's equation in reciprocal space, V(G) = 4π ρ(G)/|G|² for G ≠ 0 (the cell is
    neutral; V averages to zero), band-limited like the SAD. Positive near nuclei; its shape across a
    void says how strongly the surrounding ions bind electrons there — the non-local information
    behind interstitial localisation that the density channels lack.
    """
    from elf_workflows.sad import superposition_spectrum

    return real_field(_potential_spectrum(*superposition_spectrum(structure, shape, _neutral_atom(sigma))), shape)


def _neutral_atom(sigma: float):
    """Form factor (symbol, |G|) → Z_val exp(−σ²G²/2) − f_partition(|G|) of a neutral free atom (e)."""
    from elf_workflows.elements import valence_electrons
    from elf_workflows.sad import form_factor

    def form_factor_of(symbol: str, g: np.ndarray) -> np.ndarray:
        return valence_electrons(symbol) * np.exp(-0.5 * sigma**2 * g**2) - form_factor(symbol, g, "partition")

    return form_factor_of


def _potential_spectrum(charge: np.ndarray, gnorm: np.ndarray) -> np.ndarray:
    """V(G) = 4π e²/(4πε₀) ρ(G)/|G|² (V) of a charge spectrum, 0 at G = 0 (in place)."""
    g2 = np.where(gnorm > 0, gnorm**2, 1.0)
    charge *= np.where(gnorm > 0, 4 * np.pi * COULOMB_EV_ANGSTROM / g2, 0.0)
    return charge


def electrostatic_features(structure: Structure, shape: tuple[int, int, int], at: np.ndarray | None = None) -> np.ndarray:
    """The electrostatic channel (:data:`ELECTROSTATIC_FEATURES`), ``(1, nx, ny, nz)`` float32.

    ``electrostatic`` = asinh(V/s), V from :func:`electrostatic_potential`, s = :data:`POTENTIAL_SCALE`.
    Added in session 4: on three validation sets of elements held out of training (Y+Zn, Sr+Ti,
    Nb+Cs) it lowered a per-voxel model's voxel MAE by 7–13 % (docs/surrogate.md).
    """
    return _electrostatic_channel(_pick(electrostatic_potential(structure, shape), at))


def _electrostatic_channel(potential: np.ndarray) -> np.ndarray:
    """asinh(V/s) of a potential (V), ``(1, ...)`` float32: the channel of :func:`electrostatic_features`."""
    return np.arcsinh(potential / POTENTIAL_SCALE)[None].astype(np.float32)


def elf_from_kinetic(rho: np.ndarray, grad2: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """ELF = 1/(1 + (D/D_h)²), D = τ − |∇ρ|²/(8ρ), D_h = C_F ρ^{5/3} (GPAW's ``gpaw.elf.elf``, one spin).

    ``rho`` in Å⁻³, ``grad2`` = |∇ρ|² in Å⁻⁸ and ``tau`` = ½Σ|∇ψ|² in Å⁻⁵ (ħ²/m_e = 1): D/D_h is
    dimensionless, so Å units give the same ELF as atomic units. ``rho`` is floored at :data:`RHO_FLOOR`.
    """
    return 1.0 / (1.0 + _pauli_ratio(rho, grad2, tau) ** 2)


def _pauli_ratio(rho: np.ndarray, grad2: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """χ = D/D_h of :func:`elf_from_kinetic` (signed; ``rho`` floored at :data:`RHO_FLOOR`)."""
    rho = np.maximum(rho, RHO_FLOOR)
    return (tau - grad2 / (8.0 * rho)) / (C_F * rho ** (5.0 / 3.0))


def _atomic_limit_fields(structure: Structure, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ñ, |∇ñ|², τ̃) of the superposed free pseudo atoms (Å⁻³, Å⁻⁸, Å⁻⁵), see :func:`atomic_limit_elf`."""
    from elf_workflows.sad import aliased_spectra

    spectra = aliased_spectra(structure, shape, ("pseudo", "pseudo_kinetic"), factor=ATOMIC_LIMIT_OVERSAMPLING,
                              gradient_of="pseudo")
    fields = real_fields([spectra.pop("pseudo"), spectra.pop("pseudo_kinetic"), *spectra.pop("gradient")], shape)
    rho, tau = next(fields), next(fields)
    grad2 = next(fields) ** 2
    for component in fields:
        grad2 += component**2
    return rho, grad2, tau


def atomic_limit_elf(structure: Structure, shape: tuple[int, int, int]) -> np.ndarray:
    """ELF of the superposed free pseudo atoms (the "promolecular" ELF), ``(nx, ny, nz)`` in [0, 1].

    ρ and τ are the Fourier superpositions of each element's free pseudo atom exactly as GPAW's pseudo
    ELF is built from it (:mod:`elf_workflows.sad` kinds ``pseudo`` and ``pseudo_kinetic``: smooth
    core included, PAW norm deficit kept; ``scripts/build_atomic_densities.py``), ∇ρ by the FFT
    derivative, all band-limited on a grid :data:`ATOMIC_LIMIT_OVERSAMPLING` times finer than ``shape``
    (:func:`elf_workflows.sad.aliased_spectra`: τ is sharper than ρ, and at 0.2 Å the plain band
    limit moved this ELF by up to 0.2 in compressed bcc Ca; twice finer agrees with four times finer
    to 0.007), then :func:`elf_from_kinetic`. For one atom in a large cell it is GPAW's pseudo ELF of
    the free spherical atom, shells and pseudo-core structure included, so it carries each element's
    PAW construction without an element label. Where atoms overlap τ is simply added, which misses
    the Pauli kinetic energy of compression: that difference is what the network learns.
    """
    return elf_from_kinetic(*_atomic_limit_fields(structure, shape))


def atomic_limit_features(structure: Structure, shape: tuple[int, int, int], at: np.ndarray | None = None) -> np.ndarray:
    """The atomic-limit channels (:data:`ATOMIC_LIMIT_FEATURES`), ``(3, nx, ny, nz)`` float32.

    - ``atomic_limit_elf``: :func:`atomic_limit_elf`;
    - ``atomic_limit_logit``: ln χ / 4 clipped to ±2, χ = |D|/D_h of the same ELF = 1/(1 + χ²): the
      ELF before the squashing, resolved where the ELF itself is flat near 0 or 1 (the network's
      output is a sigmoid of such a logit);
    - ``log_pseudo_density``: ln(ñ / 1 e Å⁻³)/4 of the free pseudo atoms, the density GPAW's ELF is
      built from (the density channels read the renormalised valence SAD).
    """
    rho, grad2, tau = (_pick(f, at) for f in _atomic_limit_fields(structure, shape))
    chi = np.abs(_pauli_ratio(rho, grad2, tau))
    out = _channels(len(ATOMIC_LIMIT_FEATURES), shape, at)
    out[0] = 1.0 / (1.0 + chi**2)  # elf_from_kinetic, from the χ computed once
    out[1] = np.clip(np.log(np.maximum(chi, 1e-12)) / 4.0, -2.0, 2.0)
    out[2] = np.log(np.maximum(rho, RHO_FLOOR)) / 4.0
    return out


def compression_features(structure: Structure, shape: tuple[int, int, int], at: np.ndarray | None = None) -> np.ndarray:
    """ln(V/V0) of the cell on every voxel, ``(1, nx, ny, nz)`` float32 (session 8).

    V/V0 is the volume per atom over the mean ambient volume per atom of the cell's elements
    (:func:`elf_workflows.surrogate.domain.compression_ratio`): how far the cell is compressed
    relative to its own elements, which the density channels convey only through each element's
    own density scale — a number a per-voxel model cannot read off an element it never saw.
    """
    from elf_workflows.surrogate.domain import compression_ratio

    return np.full((1, *shape) if at is None else (1, len(at)), np.log(compression_ratio(structure)), dtype=np.float32)


def log_participation(structure: Structure, shape: tuple[int, int, int]) -> np.ndarray:
    """ln P / 2 with P = (Σ_i ρ_i)² / Σ_i ρ_i², the number of atoms whose valence densities share a point.

    P is 1 where one atom's density dominates and approaches the number of neighbours in a void
    equidistant from them: a local, rotation-invariant measure of how shared the SAD is. Σ_i ρ_i² is
    the superposition of each species' squared normalised valence density (:mod:`elf_workflows.sad`
    kind ``valence_squared``); both sums are band-limited on a twice finer grid (the square is sharper)
    and P is clipped to [1, :data:`PARTICIPATION_MAX`]; below :data:`PARTICIPATION_FLOOR` (e/Å³) both
    sums are floored, so near-vacuum (where the squared sum's Fourier ringing dominates) reads P = 1.
    ``(nx, ny, nz)`` float32.
    """
    from elf_workflows.sad import aliased_spectra

    spectra = aliased_spectra(structure, shape, ("valence", "valence_squared"), factor=ATOMIC_LIMIT_OVERSAMPLING)
    rho = np.maximum(real_field(spectra["valence"], shape), PARTICIPATION_FLOOR)
    squares = np.maximum(real_field(spectra["valence_squared"], shape), PARTICIPATION_FLOOR**2)
    return (0.5 * np.log(np.clip(rho**2 / squares, 1.0, PARTICIPATION_MAX))).astype(np.float32)


def superposed_fields(structure: Structure, shape: tuple[int, int, int]) -> dict:
    """The SAD, the electrostatic potential and the species weights of a cell, from one pass over G.

    The valence SAD (:func:`elf_workflows.sad.sad_density`) and the neutral-atom charge of
    :func:`electrostatic_potential` share their |G|, structure factors and spline intervals
    (:func:`elf_workflows.sad.superposition_spectra`), and the SAD, the potential and the Gaussian
    weights of :func:`species_features` take one batched inverse FFT. Returns ``spectrum`` (the
    SAD's rfft spectrum, which the density channels transform from), ``density`` (e/Å³), ``potential``
    (V) on the grid, and ``species`` with their ``weights`` fields. The same fields as the separate
    functions, to rounding (tested).
    """
    from elf_workflows.sad import superposition_spectra

    spectra, gnorm = superposition_spectra(structure, shape, {"valence": "valence", "neutral": _neutral_atom(NUCLEUS_SIGMA)})
    species, weights = _species_spectra(structure, shape, SPECIES_SIGMA)
    fields = real_fields([spectra["valence"], _potential_spectrum(spectra["neutral"], gnorm), *weights], shape)
    return {"spectrum": spectra["valence"], "density": next(fields), "potential": next(fields), "species": species,
            "weights": list(fields)}


#: grids up to this many voxels take :func:`superposed_fields` in :func:`cell_features` (bigger ones,
#: whose memory matters more than its speed, one field at a time)
FUSED_MAX_VOXELS = 2**18


def cell_features(structure: Structure, density: np.ndarray | None = None, at: np.ndarray | None = None,
                  shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """All input channels (:data:`FEATURE_NAMES`) of a structure on its grid.

    ``density``: its SAD (e/Å³) on the grid, when the caller has it; without it, on the grid
    ``shape``, the SAD, the potential and the species weights come from :func:`superposed_fields`
    (one pass, one batched transform: what inference and training use) up to
    :data:`FUSED_MAX_VOXELS` voxels, and one at a time beyond. Each family is written into one
    preallocated float32 array, so a big grid never holds the channels twice. ``at``: only at these
    C-order flat voxel indices, ``(N_FEATURES, len(at))`` — what a per-voxel model needs at the voxel
    orbits' representatives (the fields behind the channels are still computed on the whole grid;
    the pointwise arithmetic on them is not).
    """
    if density is None and shape is None:
        raise ValueError("cell_features needs the density or the grid shape")
    shape = tuple(int(n) for n in (np.shape(density) if density is not None else shape))
    out = _channels(N_FEATURES, shape, at)
    n_density, n_species = len(DENSITY_FEATURES), len(SPECIES_FEATURES)
    spectrum = None
    if density is None and math.prod(shape) <= FUSED_MAX_VOXELS:
        fields = superposed_fields(structure, shape)
        density, spectrum = fields["density"], fields["spectrum"]
        out[n_density:n_density + n_species] = _species_channels(fields["species"], [_pick(w, at) for w in fields["weights"]],
                                                                 shape, at)
        out[n_density + n_species] = _electrostatic_channel(_pick(fields["potential"], at))[0]
        del fields
    else:
        if density is None:
            from elf_workflows.sad import sad_density

            density = sad_density(structure, shape)
        out[n_density:n_density + n_species] = species_features(structure, shape, at=at)
        out[n_density + n_species] = electrostatic_features(structure, shape, at=at)[0]
    input_features(density, structure.lattice, out=out[:n_density], at=at, spectrum=spectrum)
    del density, spectrum
    start = n_density + n_species + len(ELECTROSTATIC_FEATURES)
    out[start:start + len(ATOMIC_LIMIT_FEATURES)] = atomic_limit_features(structure, shape, at=at)
    start += len(ATOMIC_LIMIT_FEATURES)
    out[start:] = compression_features(structure, shape, at=at)
    return out
