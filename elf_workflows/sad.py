"""Superposition of atomic densities (SAD) on the periodic unit-cell grid.

The SAD is evaluated exactly periodic by Fourier superposition,

    ρ(G) = (1/V) Σ_species f_s(|G|) Σ_{j∈s} exp(−i G·r_j),      ρ(r) = Σ_G ρ(G) exp(i G·r),

with f_s(G) = 4π ∫ ρ_s(r) r² sin(Gr)/(Gr) dr the form factor of the radial pseudo valence density
(:mod:`elf_workflows.elements`), then one inverse FFT. The sum runs over the G vectors inside the
sphere inscribed in the grid's frequency box, so the band limit is isotropic and the field is
invariant under every space-group operator that maps the grid onto itself; f_s(0) = Z_val makes the
integral the valence electron count. Densities are in e/Å³.

Two radial densities can be superposed (``kind``):

* ``"valence"`` (:func:`sad_density`): the smooth pseudo valence density, normalised to the valence
  count. It is what GPAW's pseudo ELF is built from, hence the surrogate's input.
* ``"partition"`` (:func:`partition_density`): pseudo valence + smooth core + PAW compensation
  charge, the free-atom version of the SCF density that GPAW's basins partition. The smooth valence
  density spreads semicore electrons (Mg 2s2p, Ca 3s3p) far outside the nucleus, into the
  interstitial basins; the compensation charge keeps them at the nucleus. Basin electrons of a
  surrogate ELF are counted in this density.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import scipy.fft
from scipy.interpolate import CubicSpline

from elf_workflows.elements import atomic_data
from elf_workflows.errors import InputError
from elf_workflows.grids import check_grid, frequencies, real_field, squared_g_norms

if TYPE_CHECKING:
    from pymatgen.core import Structure

Shape = tuple[int, int, int]

#: largest spacing of the tabulated form factors (Å⁻¹) and their range (cubic-spline interpolated)
_DG = 0.02
_G_TABLE_MAX = 60.0
#: uniform radial step (Å) used for the Bessel transform
_DR = 0.004
#: largest (atoms × voxels-in-a-plane) block of phase factors held at once
_BLOCK = 4_000_000
#: largest number of fine-grid frequencies :func:`aliased_spectra` handles in one block (else alias by alias)
_ALIAS_BLOCK = 2**20


#: the radial densities that can be superposed (see the module docstring)
KINDS = ("valence", "partition", "pseudo", "pseudo_kinetic", "valence_squared")
#: the kinds that are electron densities (e/Å³); ``pseudo_kinetic`` is a kinetic energy density
DENSITY_KINDS = ("valence", "partition", "pseudo")
#: the kinds whose radial table is scaled so that f(0) is the valence count exactly
_NORMALISED = ("valence", "partition")
_RADIAL = {"valence": "rho", "partition": "rho_partition", "pseudo": "rho_pseudo", "pseudo_kinetic": "tau_pseudo",
           "valence_squared": "rho"}


def form_factor_table(symbol: str, kind: str = "valence") -> tuple[np.ndarray, np.ndarray]:
    """(|G| grid in Å⁻¹, f(|G|)) for ``symbol``: the spherical Bessel transform of its ``kind`` radial function.

    f(0) is the function's integral: the valence count (electrons) for ``valence`` and ``partition``.
    """
    if kind not in KINDS:
        raise InputError(f"unknown density kind {kind!r}; use one of {', '.join(KINDS)}")
    return _form_factor_table(str(symbol), kind)


class UniformCubicSpline:
    """scipy's :class:`~scipy.interpolate.CubicSpline` through a table on a uniform grid, evaluated by direct indexing.

    The same piecewise cubics (its coefficients), found by ``floor(x/Δx)`` instead of a binary
    search per point: ≈ 4× faster on the ~10⁴ |G| values of a cell, equal to 1e-15 relative (tested).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        spline = CubicSpline(x, y)
        self.start, self.step, self.last = float(x[0]), float(x[1] - x[0]), len(x) - 2
        self.coefficients = np.ascontiguousarray(spline.c.T)  # (intervals, 4), highest power first

    def to_array(self) -> np.ndarray:
        """Everything that defines the spline as one float64 array (:meth:`from_array` reads it back exactly)."""
        return np.concatenate([[self.start, self.step, self.last], self.coefficients.ravel()])

    @classmethod
    def from_array(cls, array: np.ndarray) -> UniformCubicSpline:
        """The spline written by :meth:`to_array`."""
        spline = cls.__new__(cls)
        spline.start, spline.step, spline.last = float(array[0]), float(array[1]), int(array[2])
        spline.coefficients = np.ascontiguousarray(array[3:].reshape(-1, 4))
        return spline

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, float)
        interval, d = self.locate(x)
        c = self.coefficients[interval]
        return ((c[..., 0] * d + c[..., 1]) * d + c[..., 2]) * d + c[..., 3]

    def knots(self) -> tuple[float, float, int]:
        """(first knot, knot spacing, last interval): splines that share them share :meth:`locate`."""
        return self.start, self.step, self.last

    def locate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(interval index, offset from its left knot) of every point of ``x``."""
        interval = np.clip(((x - self.start) / self.step).astype(np.int64), 0, self.last)
        return interval, x - (self.start + interval * self.step)


@lru_cache(maxsize=64)
def _stacked_splines(pairs: tuple[tuple[str, str], ...]) -> tuple[UniformCubicSpline, np.ndarray] | None:
    """(one of the splines, their coefficients stacked ``(4, K, intervals)``) when all share knots, else None."""
    splines = [_form_factor_spline(symbol, kind) for symbol, kind in pairs]
    if any(s.knots() != splines[0].knots() for s in splines):
        return None
    return splines[0], np.ascontiguousarray(np.stack([s.coefficients.T for s in splines], axis=1))


def form_factors(pairs: Sequence[tuple[str, str]], g: np.ndarray) -> np.ndarray:
    """:func:`form_factor` of several (symbol, kind) pairs at the same |G| (Å⁻¹), shape ``(len(pairs), *g.shape)``.

    The tables of :func:`form_factor_table` all share one |G| grid, so each point's spline interval
    is found once and the pairs' cubics are evaluated together: the same arithmetic as
    :func:`form_factor` per pair (equal to the last bit), about half its cost for the four tables
    of a binary cell.
    """
    g = np.asarray(g, float)
    pairs = tuple((str(symbol), kind) for symbol, kind in pairs)
    for _, kind in pairs:
        if kind not in KINDS:
            raise InputError(f"unknown density kind {kind!r}; use one of {', '.join(KINDS)}")
    stacked = _stacked_splines(pairs) if pairs else None
    if stacked is None:  # tables on different grids: one at a time
        return np.stack([form_factor(symbol, g, kind) for symbol, kind in pairs]) if pairs else np.empty((0, *g.shape))
    spline, coefficients = stacked
    interval, d = spline.locate(np.minimum(g, _G_TABLE_MAX).reshape(-1))
    c = [np.take(coefficients[p], interval, axis=1) for p in range(4)]  # (pairs, points) each: contiguous gathers
    values = ((c[0] * d + c[1]) * d + c[2]) * d + c[3]
    return np.where(g.reshape(-1) <= _G_TABLE_MAX, values, 0.0).reshape(len(pairs), *g.shape)


@lru_cache(maxsize=None)
def _form_factor_spline(symbol: str, kind: str) -> UniformCubicSpline:
    """The spline of :func:`form_factor_table`, read from the on-disk cache when an earlier process built it.

    Building a table takes ≈ 1.3 ms per element and kind (a 39 000-point sine transform and two
    spline fits), which every fresh worker process of a screening would pay again; the coefficients
    are kept under :func:`table_cache_dir` instead, keyed on the element's radial data and the table
    parameters, written atomically, and read back exactly (≈ 0.05 ms). An unwritable or disabled
    cache is simply not used.
    """
    path = _cached_table_path(symbol, kind)
    if path is not None and path.is_file():
        try:
            return UniformCubicSpline.from_array(np.load(path))
        except (OSError, ValueError):
            pass  # unreadable or truncated: rebuilt and rewritten below
    spline = UniformCubicSpline(*form_factor_table(symbol, kind))
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, spline.to_array())
            tmp.replace(path)
        except OSError:
            pass
    return spline


#: bump when the way tables are built changes (it is part of every cache key)
_TABLE_FORMAT = 1


def table_cache_dir() -> Path | None:
    """Where form-factor splines are kept across processes: ``$ELF_WORKFLOWS_CACHE/form-factors``,
    else ``$XDG_CACHE_HOME/elf-workflows/form-factors`` (``~/.cache`` by default); None when
    ``ELF_WORKFLOWS_CACHE`` is set to an empty string (no on-disk cache)."""
    env = os.environ.get("ELF_WORKFLOWS_CACHE")
    if env == "":
        return None
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "elf-workflows"
    return base / "form-factors"


def _cached_table_path(symbol: str, kind: str) -> Path | None:
    directory = table_cache_dir()
    if directory is None:
        return None
    data = atomic_data(symbol)
    digest = hashlib.sha256(repr((_TABLE_FORMAT, kind, _DG, _DR, _G_TABLE_MAX, data.valence)).encode())
    for array in (data.r, getattr(data, _RADIAL[kind])):
        digest.update(np.ascontiguousarray(array, dtype=float).tobytes())
    return directory / f"{symbol}-{kind}-{digest.hexdigest()[:16]}.npy"


@lru_cache(maxsize=None)
def _form_factor_table(symbol: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The trapezoid-rule Bessel transform f(g) = Σ_j 4π ρ(r_j) r_j² w_j sin(g r_j)/(g r_j), by one DST.

    On the uniform grids r_j = j·Δr and g_k = k·π/(M·Δr) the sum is (1/g_k) Σ_j x_j sin(π j k/M) with
    x_j = 4π ρ_j r_j w_j: a type-I discrete sine transform of length M − 1, with M the smallest
    FFT-friendly size giving Δg ≤ :data:`_DG`. Equal to the direct sum to 1e-9 relative and ~70× faster
    (a few ms per table instead of 0.1–0.25 s, which dominated the first cell of every element).
    """
    data = atomic_data(symbol)
    radial = getattr(data, _RADIAL[kind])
    # The PAW radial grids thin out at large r; a uniform grid keeps the high-G transform free of
    # aliasing noise (which would otherwise add up over the many G vectors of a fine grid).
    weight = np.abs(radial) * data.r**2
    significant = np.nonzero(weight > 1e-12 * weight.max())[0].max()
    r_max = data.r[min(significant + 1, len(data.r) - 1)]
    r = np.arange(0.0, r_max + _DR, _DR)
    rho = CubicSpline(data.r, radial)(np.minimum(r, data.r[-1]))
    if kind in ("valence", "valence_squared"):  # the partition density is negative near some nuclei (La, Li): keep it so
        rho = np.clip(rho, 0.0, None)
    weights = np.full_like(r, _DR)
    weights[[0, -1]] = 0.5 * _DR
    if kind == "valence_squared":  # the square of the normalised valence density (e²/Å⁶)
        rho = (rho * data.valence / (4 * np.pi * rho * r**2 * weights).sum()) ** 2
    integrand = 4 * np.pi * rho * r**2 * weights
    m = scipy.fft.next_fast_len(max(math.ceil(math.pi / (_DG * _DR)), len(r) + 1))
    x = np.zeros(m - 1)
    x[:len(r) - 1] = integrand[1:] / r[1:]
    sine_sums = scipy.fft.dst(x, type=1) / 2  # entry k−1: Σ_j x_j sin(π j k / m), k = 1 … m−1
    g = np.arange(math.ceil(_G_TABLE_MAX * m * _DR / math.pi) + 2) * (math.pi / (m * _DR))
    f = np.empty_like(g)
    f[0] = integrand.sum()  # sin(gr)/(gr) → 1
    f[1:] = sine_sums[:len(g) - 1] / g[1:]
    if kind in _NORMALISED:
        f *= data.valence / f[0]  # f(0) is exactly the valence count
    return g, f


def form_factor(symbol: str, g: np.ndarray, kind: str = "valence") -> np.ndarray:
    """f(|G|) of ``symbol`` at |G| (Å⁻¹): cubic spline through the table, 0 beyond it."""
    g = np.asarray(g, float)
    spline = _form_factor_spline(str(symbol), kind)
    return np.where(g <= _G_TABLE_MAX, spline(np.minimum(g, _G_TABLE_MAX)), 0.0)


def band_limit(structure: Structure, shape: Shape) -> float:
    """Radius (Å⁻¹) of the sphere inscribed in the grid's frequency box: π·min_a N_a/|a_a|."""
    return math.pi * min(n / length for n, length in zip(shape, structure.lattice.abc))


def species_structure_factors(structure: Structure, hkl: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
    """S_s(G) = Σ_{j∈s} exp(−2πi (h x_j + k y_j + l z_j)) of each species s on the product of the 1D
    Miller-index vectors ``hkl``, shape ``(len(h), len(k), len(l))``, read-only.

    They depend only on the fractional coordinates and on which sites share a species: the last
    :data:`_CACHED_CELLS` cells' are kept (up to :data:`_CACHED_SF_NUMBERS` numbers each), so the
    SAD, the electrostatic and species channels of one cell share them, and the same prototype at
    another pressure or with other elements reuses them. :func:`clear_caches` forgets them.
    """
    frac = np.ascontiguousarray(structure.frac_coords, dtype=float)
    symbols = [site.specie.symbol for site in structure]
    species = list(dict.fromkeys(symbols))  # first-occurrence order: the key sees the pattern, not the names
    groups = tuple(tuple(i for i, symbol in enumerate(symbols) if symbol == s) for s in species)
    if len(species) * math.prod(len(h) for h in hkl) > _CACHED_SF_NUMBERS:
        return {s: _structure_factor(frac[list(g)], *hkl) for s, g in zip(species, groups)}
    key = (frac.tobytes(), groups, tuple(np.asarray(h, float).tobytes() for h in hkl))
    if key not in _STRUCTURE_FACTORS:
        factors = tuple(_structure_factor(frac[list(g)], *hkl) for g in groups)
        for factor in factors:
            factor.setflags(write=False)
        _STRUCTURE_FACTORS[key] = factors
        while len(_STRUCTURE_FACTORS) > _CACHED_CELLS:
            _STRUCTURE_FACTORS.pop(next(iter(_STRUCTURE_FACTORS)))
    return dict(zip(species, _STRUCTURE_FACTORS[key]))


#: cells whose structure factors :func:`species_structure_factors` keeps, and the largest it keeps
_CACHED_CELLS = 16
_CACHED_SF_NUMBERS = 2**17
_STRUCTURE_FACTORS: dict = {}


def clear_caches(tables: bool = False) -> None:
    """Forget the kept structure factors (:func:`species_structure_factors`); with ``tables`` also the
    form-factor tables and splines of every element (as a fresh process has none: ≈ 1.3 ms per element
    and kind to rebuild)."""
    _STRUCTURE_FACTORS.clear()
    if tables:
        for cached in (_form_factor_table, _form_factor_spline, _stacked_splines):
            cached.cache_clear()


def _structure_factor(frac_coords: np.ndarray, h: np.ndarray, k: np.ndarray, l: np.ndarray) -> np.ndarray:
    """S(h, k, l) = Σ_j exp(−2πi (h x_j + k y_j + l z_j)) on the product of the integer frequency vectors
    ``h``, ``k``, ``l``, shape ``(len(h), len(k), len(l))``: separable phases and one matrix product per
    block of atoms, no loops over voxels (:func:`species_structure_factors` keeps them per cell)."""
    nx, ny = len(h), len(k)
    out = np.zeros((nx * ny, len(l)), dtype=np.complex128)
    block = max(1, _BLOCK // (nx * ny))
    for start in range(0, len(frac_coords), block):
        x = np.asarray(frac_coords[start:start + block], float)
        ex = np.exp(-2j * np.pi * np.outer(x[:, 0], h))
        ey = np.exp(-2j * np.pi * np.outer(x[:, 1], k))
        ez = np.exp(-2j * np.pi * np.outer(x[:, 2], l))
        exy = (ex[:, :, None] * ey[:, None, :]).reshape(len(x), nx * ny)
        out += exy.T @ ez
    return out.reshape(nx, ny, len(l))


def sad_density(structure: Structure, shape: Shape) -> np.ndarray:
    """SAD valence density (e/Å³) of ``structure`` on the grid ``shape``; integrates to the valence count."""
    return superpose(structure, shape, "valence")


def partition_density(structure: Structure, shape: Shape) -> np.ndarray:
    """Superposed free-atom partition densities (pseudo valence + compensation charges, e/Å³).

    The density to count basin electrons in when there is no SCF density; integrates to the valence
    count. Not a network input: the surrogate sees :func:`sad_density`.
    """
    return superpose(structure, shape, "partition")


def superpose(structure: Structure, shape: Shape, kind: str = "valence") -> np.ndarray:
    """Σ_atoms of the radial ``kind`` function of each species on the grid ``shape`` (e/Å³; Å⁻⁵ for ``pseudo_kinetic``)."""
    if kind not in KINDS:
        raise InputError(f"unknown density kind {kind!r}; use one of {', '.join(KINDS)}")
    shape = check_grid(shape, n_arrays=6)
    spectrum, _ = superposition_spectrum(structure, shape, kind)
    return real_field(spectrum, shape)


def superposition_spectrum(structure: Structure, shape: Shape,
                           form_factor_of: str | Callable[[str, np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(spectrum, |G|) of Σ_atoms of a spherical function per species on the rfft half grid.

    ``form_factor_of``: a kind of :data:`KINDS`, or a callable ``(symbol, |G|)`` giving each species'
    Fourier transform (its value at G = 0 is the function's integral). The spectrum is cut to the
    sphere inscribed in the grid's frequency box (G = 0 always kept) and scaled so that
    ``grids.real_field(spectrum, shape)`` (``irfftn``) is the field per Å³.
    """
    spectra, gnorm = superposition_spectra(structure, shape, {"f": form_factor_of})
    return spectra["f"], gnorm


def superposition_spectra(structure: Structure, shape: Shape,
                          functions: dict[str, str | Callable[[str, np.ndarray], np.ndarray]]) -> tuple[dict, np.ndarray]:
    """:func:`superposition_spectrum` of several spherical functions at once: ({name: spectrum}, |G|).

    One pass over G: the |G|, the structure factors and the spline intervals are found once for all.
    """
    half = (shape[0], shape[1], shape[2] // 2 + 1)
    spectra = {name: np.zeros(half, dtype=np.complex128) for name in functions}
    gnorm = _add_species_spectra(spectra, structure, frequencies(shape, rfft=True), functions,
                                 band_limit(structure, shape) * (1 - 1e-9))
    scale = math.prod(shape) / structure.volume
    for spectrum in spectra.values():
        spectrum *= scale
    return spectra, gnorm


def _add_species_spectra(out: dict[str, np.ndarray], structure: Structure, hkl: tuple[np.ndarray, ...],
                         functions: dict[str, str | Callable[[str, np.ndarray], np.ndarray]], limit: float,
                         gradient_of: str | None = None, fold: Shape | None = None) -> np.ndarray:
    """Add Σ_species f(|G|) S_species(G) for each named function to ``out[name]``; return |G|.

    ``functions``: name → a kind of :data:`KINDS` (all kinds evaluated together, :func:`form_factors`)
    or a callable ``(symbol, |G|) → f``. G runs over the product of the 1D Miller-index vectors ``hkl``
    (any integers, e.g. a fine grid's frequencies aliased onto a coarse one), cut to |G| < ``limit``
    (Å⁻¹; G = 0 is always inside); the sums are formed on the points inside only. Not yet scaled to
    a field per Å³. ``gradient_of``: also add iG times that function's sum to ``out["gradient"]``
    (3, ...). ``fold``: the shape ``h`` of ``out``'s arrays when the block is ``factor·h`` long on each
    axis (aliases laid out one after another): each point is added at its index mod ``h``, the fold
    Σ_m F(k + N∘m) of :func:`aliased_spectra` (by ``bincount``: no block-sized array is held).
    """
    gnorm = np.sqrt(squared_g_norms(structure.lattice, *hkl))
    inside = np.flatnonzero(gnorm < limit)  # flat indices: gathers and scatters 2–5× faster than a boolean mask
    g_inside = gnorm.take(inside)
    factors = species_structure_factors(structure, hkl)
    species = sorted(factors)
    kinds = [name for name, f in functions.items() if isinstance(f, str)]
    tables = form_factors([(symbol, functions[name]) for symbol in species for name in kinds], g_inside)
    sums: dict[str, np.ndarray] = {}
    for i, symbol in enumerate(species):
        sf = factors[symbol].take(inside)
        for name, f in functions.items():
            term = (tables[i * len(kinds) + kinds.index(name)] if isinstance(f, str) else f(symbol, g_inside)) * sf
            sums[name] = sums[name] + term if name in sums else term
    block = tuple(len(h) for h in hkl)
    if fold is None or block == tuple(fold):  # one point per target: added in place
        target = inside

        def add(array: np.ndarray, values: np.ndarray) -> None:
            array.reshape(-1)[target] += values
    else:
        i0, rest = np.divmod(inside, block[1] * block[2])
        i1, i2 = np.divmod(rest, block[2])
        target = ((i0 % fold[0]) * fold[1] + i1 % fold[1]) * fold[2] + i2 % fold[2]
        n = math.prod(fold)

        def add(array: np.ndarray, values: np.ndarray) -> None:
            flat = array.reshape(-1)
            flat += np.bincount(target, weights=values.real, minlength=n)
            flat += 1j * np.bincount(target, weights=values.imag, minlength=n)
    for name, total in sums.items():
        add(out[name], total)
    if gradient_of is not None:  # G only at the points inside
        miller = np.unravel_index(inside, block)
        G = (structure.lattice.inv_matrix * 2 * np.pi) @ np.stack([hkl[a][miller[a]] for a in range(3)])
        for a in range(3):
            add(out["gradient"][a], 1j * G[a] * sums[gradient_of])
    return gnorm


def aliased_spectra(structure: Structure, shape: Shape, kinds: tuple[str, ...], factor: int = 2,
                    gradient_of: str | None = None) -> dict[str, np.ndarray]:
    """rfft half spectra on ``shape`` of superpositions band-limited on a ``factor``× finer grid.

    ``grids.real_field(spectra[kind], shape)`` is the ``kind`` superposition (:data:`KINDS`) cut to the
    sphere inscribed in the *fine* grid's frequency box and sampled at the points of ``shape``: the
    fine spectrum folded onto the coarse one, Σ_m F(k + N∘m) over the factor³ aliases m, so no fine
    grid is ever held (memory of a few coarse arrays). Sharper radial functions (a kinetic energy
    density) keep their shape without the cost of the fine grid. ``gradient_of``: also return
    ``"gradient"``, the (3, ...) spectra of ∇ of that kind (Å⁻¹ per unit), for ``irfftn`` per component.
    This is the one derivative not taken by :func:`elf_workflows.grids.fft_derivative`: it multiplies
    the *fine* spectrum by iG before folding (a coarse-grid derivative of the folded field would use
    the aliased, wrong frequencies); the fine Nyquist planes lie outside the band-limit sphere, so
    nothing is lost there, and the result is the fine-grid gradient sampled exactly (tested).
    """
    shape = check_grid(shape, n_arrays=6)
    fine = tuple(factor * n for n in shape)
    limit = band_limit(structure, fine) * (1 - 1e-9)
    half = (shape[0], shape[1], shape[2] // 2 + 1)
    spectra = {kind: np.zeros(half, dtype=np.complex128) for kind in kinds}
    if gradient_of is not None:
        spectra["gradient"] = np.zeros((3, *half), dtype=np.complex128)
    functions = {kind: kind for kind in kinds}
    # Small grids take every alias in one block (one structure factor and one form-factor evaluation per
    # species, folded as it is added); big ones one alias at a time (coarse memory).
    aliases = [list(range(factor))] * 3
    blocks = ([aliases] if factor**3 * math.prod(half) <= _ALIAS_BLOCK else
              [[[m] for m in alias] for alias in itertools.product(range(factor), repeat=3)])
    for block in blocks:
        hkl = []
        for n_half, n, n_fine, ms in zip(half, shape, fine, block):
            index = np.concatenate([np.arange(n_half) + n * m for m in ms])  # fine FFT index, then its frequency
            hkl.append(np.where(index >= (n_fine + 1) // 2, index - n_fine, index).astype(float))
        _add_species_spectra(spectra, structure, tuple(hkl), functions, limit, gradient_of, fold=half)
    scale = math.prod(shape) / structure.volume
    return {key: value * scale for key, value in spectra.items()}


def valence_count(structure: Structure) -> float:
    """Total valence electrons of ``structure`` (PAW valence, semicore included)."""
    return float(sum(atomic_data(site.specie.symbol).valence for site in structure))


def integrate(field: np.ndarray, structure: Structure) -> float:
    """∫ field dV over the cell (field in per-Å³ units → a count)."""
    return float(field.mean() * structure.volume)
