"""Periodic unit-cell grids: sizes, memory checks, Fourier interpolation and FFT derivatives.

Conventions: ``field[i, j, k]`` sits at fractional coordinates ``(i/nx, j/ny, k/nz)`` (VASP order).
Reciprocal vectors are Cartesian, in Å⁻¹, with the factor 2π (G·r is a phase in radians).
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import TYPE_CHECKING, Iterator, Literal, Sequence

import numpy as np
import scipy.fft

from elf_workflows.errors import GridError

if TYPE_CHECKING:
    from pymatgen.core import Lattice, Structure

Shape = tuple[int, int, int]

#: default cap on the memory one grid computation may take (GB); ``ELF_WORKFLOWS_MAX_MEMORY_GB`` overrides
DEFAULT_MAX_MEMORY_GB = 8.0
#: largest number of voxels per axis accepted at all
MAX_AXIS = 4096


def max_memory_bytes() -> float:
    """The configured memory cap in bytes (``ELF_WORKFLOWS_MAX_MEMORY_GB``, default 8 GB)."""
    value = os.environ.get("ELF_WORKFLOWS_MAX_MEMORY_GB", "")
    try:
        return float(value) * 1e9 if value else DEFAULT_MAX_MEMORY_GB * 1e9
    except ValueError as exc:
        raise GridError(f"ELF_WORKFLOWS_MAX_MEMORY_GB={value!r} is not a number") from exc


def check_grid(shape, n_arrays: int = 8, itemsize: int = 8) -> Shape:
    """Validate a grid shape and refuse one whose working arrays would not fit in memory.

    Args:
        shape: three grid sizes.
        n_arrays: how many full-size arrays the computation holds at once.
        itemsize: bytes per value.
    """
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError) as exc:
        raise GridError(f"grid {shape!r} is not three integers") from exc
    if len(shape) != 3:
        raise GridError(f"a grid needs three sizes, got {len(shape)}")
    if any(n <= 0 for n in shape):
        raise GridError(f"grid sizes must be positive, got {' '.join(map(str, shape))}")
    if any(n > MAX_AXIS for n in shape):
        raise GridError(f"grid {' '.join(map(str, shape))} exceeds {MAX_AXIS} voxels along an axis")
    need = math.prod(shape) * n_arrays * itemsize
    cap = max_memory_bytes()
    if need > cap:
        raise GridError(
            f"grid {'x'.join(map(str, shape))} needs about {need / 1e9:.1f} GB, over the {cap / 1e9:.1f} GB cap "
            "(set ELF_WORKFLOWS_MAX_MEMORY_GB to raise it, or use a coarser grid)")
    return shape  # type: ignore[return-value]


def is_fft_friendly(n: int) -> bool:
    """True when ``n`` has no prime factor other than 2, 3 and 5."""
    for p in (2, 3, 5):
        while n % p == 0 and n > 1:
            n //= p
    return n == 1


def fft_friendly(n: int, multiple_of: int = 1) -> int:
    """Smallest integer ≥ ``n`` with prime factors 2, 3, 5 only that is a multiple of ``multiple_of``."""
    m = max(int(n), 1)
    while not (is_fft_friendly(m) and m % multiple_of == 0):
        m += 1
    return m


def grid_for_spacing(structure: Structure, spacing: float, symprec: float = 1e-3) -> Shape:
    """Smallest FFT-friendly grid with voxels no larger than ``spacing`` (Å) that every space-group op maps onto itself.

    Axes that a rotation mixes get equal sizes; each size is a multiple of the denominators of the
    fractional translations along it.
    """
    from elf_workflows.symmetry import get_space_group

    if not spacing > 0:
        raise GridError(f"grid spacing must be positive, got {spacing} Å")
    n_min = [max(1, math.ceil(length / spacing - 1e-9)) for length in structure.lattice.abc]
    sg = get_space_group(structure, symprec=symprec)
    groups = sg.axis_groups()
    denominators = sg.translation_denominators()
    shape = [0, 0, 0]
    for group in groups:
        need = max(n_min[a] for a in group)
        multiple = math.lcm(*(denominators[a] for a in group))
        size = fft_friendly(need, multiple)
        for a in group:
            shape[a] = size
    return tuple(shape)  # type: ignore[return-value]


def frequencies(shape: Shape, rfft: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer Miller indices (h, k, l) of the FFT layout of ``shape`` (``rfft``: half last axis)."""
    nx, ny, nz = shape
    h = np.fft.fftfreq(nx, 1.0 / nx)
    k = np.fft.fftfreq(ny, 1.0 / ny)
    l = np.fft.rfftfreq(nz, 1.0 / nz) if rfft else np.fft.fftfreq(nz, 1.0 / nz)
    return h, k, l


#: stacks of spectra up to this many complex numbers in all take one batched inverse FFT
#: (:func:`real_fields`, :func:`derived_fields`); bigger ones one transform at a time (memory of one field)
_BATCH_SPECTRA = 2**20
#: grids up to this many voxels keep their G vectors (:func:`reciprocal_vectors`); bigger ones rebuild them
_CACHED_G_VOXELS = 2**18


def reciprocal_vectors(lattice: Lattice, shape: Shape, rfft: bool = False) -> np.ndarray:
    """Cartesian G vectors (Å⁻¹, 2π included) of the FFT layout, shape ``(3, nx, ny, nz')``.

    The features of one cell ask for them a dozen times: on grids up to :data:`_CACHED_G_VOXELS`
    voxels the last few are kept (read-only), keyed on the exact lattice and grid.
    """
    shape = tuple(int(n) for n in shape)
    if math.prod(shape) > _CACHED_G_VOXELS:
        return cartesian_g(lattice, *frequencies(shape, rfft))
    return _cached_reciprocal_vectors(np.asarray(lattice.matrix, float).tobytes(), shape, bool(rfft))


@lru_cache(maxsize=8)
def _cached_reciprocal_vectors(matrix: bytes, shape: Shape, rfft: bool) -> np.ndarray:
    from pymatgen.core import Lattice

    g = cartesian_g(Lattice(np.frombuffer(matrix).reshape(3, 3)), *frequencies(shape, rfft))
    g.setflags(write=False)
    return g


def cartesian_g(lattice: Lattice, h: np.ndarray, k: np.ndarray, l: np.ndarray) -> np.ndarray:
    """Cartesian G = h b₁ + k b₂ + l b₃ (Å⁻¹, 2π included) on the product of 1D Miller-index vectors, ``(3, nh, nk, nl)``."""
    b = lattice.inv_matrix.T * 2 * np.pi  # rows b_i with a_i·b_j = 2π δ_ij (pymatgen's reciprocal_lattice, no new Lattice)
    return (h[None, :, None, None] * b[0][:, None, None, None]
            + k[None, None, :, None] * b[1][:, None, None, None]
            + l[None, None, None, :] * b[2][:, None, None, None])


def local_maxima_mask(field: np.ndarray, floor: float | None = None) -> np.ndarray:
    """Boolean mask of the periodic local maxima of ``field``: voxels ≥ all 26 neighbours (wrap-around),
    and above ``floor`` when given."""
    from scipy.ndimage import maximum_filter

    field = np.asarray(field, float)
    mask = field >= maximum_filter(field, size=3, mode="wrap")
    return mask if floor is None else mask & (field > floor)


def squared_g_norms(lattice: Lattice, h: np.ndarray, k: np.ndarray, l: np.ndarray) -> np.ndarray:
    """|G|² (Å⁻², 2π included) on the product of 1D Miller-index vectors, ``(nh, nk, nl)``, from the metric.

    |G|² = Σ_ab m_a m_b (b_a·b_b): three axis terms plus the cross terms a skewed cell has (an
    orthogonal one has none), without the ``(3, nh, nk, nl)`` Cartesian G of :func:`cartesian_g`.
    """
    b = lattice.inv_matrix.T * 2 * np.pi
    metric = b @ b.T
    axes = [np.asarray(m, float).reshape([-1 if i == a else 1 for i in range(3)]) for a, m in enumerate((h, k, l))]
    out = metric[0, 0] * axes[0] ** 2 + metric[1, 1] * axes[1] ** 2 + metric[2, 2] * axes[2] ** 2
    for a, c in ((0, 1), (0, 2), (1, 2)):
        if metric[a, c] != 0.0:
            out = out + 2 * metric[a, c] * axes[a] * axes[c]
    return out


def real_spectrum(field: np.ndarray) -> np.ndarray:
    """``rfftn`` of a real 3D field over its grid axes, shape ``(nx, ny, nz//2 + 1)``.

    scipy's pocketfft: the same transform as ``np.fft.rfftn`` (to 1e-15), 1.3–1.9× faster per call on
    the 16³–32³ grids of the surrogate, which takes some thirty transforms per cell.
    """
    return scipy.fft.rfftn(np.asarray(field, float), axes=(0, 1, 2))


def real_field(spectrum: np.ndarray, shape: Shape) -> np.ndarray:
    """The real 3D field of shape ``shape`` whose :func:`real_spectrum` is ``spectrum`` (``irfftn``)."""
    return scipy.fft.irfftn(spectrum, s=tuple(shape), axes=(0, 1, 2))


def real_fields(spectra: Sequence[np.ndarray], shape: Shape) -> Iterator[np.ndarray]:
    """:func:`real_field` of each spectrum ``(nx, ny, nz//2 + 1)`` of ``spectra``, in order (an iterator).

    Up to :data:`_BATCH_SPECTRA` numbers in all, one batched transform (torch's ``irfftn``: ≈ 2×
    faster than one scipy transform each on the 16³–24³ grids of the surrogate, equal to 1e-15),
    always on one thread: with more, torch splits the transform differently and its last bits
    change, which would make features depend on ``--threads`` (it is tested that they do not);
    more numbers, one spectrum at a time as the fields are asked for (memory of one field).
    """
    if sum(spectrum.size for spectrum in spectra) > _BATCH_SPECTRA:
        yield from (real_field(spectrum, shape) for spectrum in spectra)
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's FFT splits its work by thread count, and its rounding with it
    try:
        fields = torch.fft.irfftn(torch.from_numpy(np.stack(spectra)), s=tuple(shape), dim=(1, 2, 3)).numpy()
    finally:
        torch.set_num_threads(threads)
    yield from fields


def _nyquist_mask(shape: Shape, rfft: bool) -> np.ndarray:
    """True on every Nyquist plane (index n/2 of an even axis) of the FFT layout."""
    h, k, l = frequencies(shape, rfft)
    nx, ny, nz = shape
    mh = (nx % 2 == 0) & (np.abs(h) == nx // 2)
    mk = (ny % 2 == 0) & (np.abs(k) == ny // 2)
    ml = (nz % 2 == 0) & (np.abs(l) == nz // 2)
    return mh[:, None, None] | mk[None, :, None] | ml[None, None, :]


class SpectralOperators:
    """The Fourier multipliers of a lattice's grid: iG_a with the Nyquist planes dropped, −|G|², Gaussian kernels.

    Built once per lattice and grid (:func:`spectral_operators`) and kept, on grids up to
    :data:`_CACHED_G_VOXELS` voxels, with the G vectors they come from: the features of one cell take
    some twenty derivatives of one density. Bigger grids build each multiplier when asked for it
    (one complex grid at a time).
    """

    def __init__(self, G: np.ndarray, shape: Shape, keep: bool):
        self.G, self.shape, self._memo = G, shape, ({} if keep else None)

    def _remember(self, key, build):
        if self._memo is None:
            return build()
        if key not in self._memo:
            value = build()
            value.setflags(write=False)  # kept and shared: nobody may change it in place
            self._memo[key] = value
        return self._memo[key]

    def g2(self) -> np.ndarray:
        """|G|² (Å⁻²)."""
        return self._remember("g2", lambda: (self.G**2).sum(0))

    def gradient(self, a: int) -> np.ndarray:
        """iG_a (Å⁻¹) with every Nyquist plane zeroed: odd derivatives cannot represent their sine part."""
        return self._remember(("gradient", a), lambda: 1j * self.G[a] * ~_nyquist_mask(self.shape, rfft=True))

    def laplacian(self) -> np.ndarray:
        """−|G|² (Å⁻²)."""
        return self._remember("laplacian", lambda: -self.g2())

    def kernel(self, sigma: float) -> np.ndarray | float:
        """Fourier transform exp(−σ²G²/2) of a normalised Gaussian of standard deviation ``sigma`` (Å); 1 for σ = 0."""
        if sigma <= 0:
            return 1.0
        return self._remember(("kernel", float(sigma)), lambda: np.exp(-0.5 * sigma**2 * self.g2()))

    def component_spectra(self, spectrum: np.ndarray, derivative: str):
        """The spectra whose inverse transforms make up ``derivative`` of the field with ``spectrum`` (a generator)."""
        if derivative == "value":
            yield spectrum
        elif derivative in ("gradient", "squared_gradient"):
            for a in range(3):
                yield self.gradient(a) * spectrum
        elif derivative == "laplacian":
            yield self.laplacian() * spectrum
        elif derivative == "hessian":
            for a in range(3):
                for b in range(a, 3):
                    yield -self.G[a] * self.G[b] * spectrum
        else:
            raise ValueError(f"unknown derivative {derivative!r}")


def spectral_operators(lattice: Lattice, shape: Shape) -> SpectralOperators:
    """The :class:`SpectralOperators` of ``lattice`` on the rfft layout of ``shape`` (kept for small grids)."""
    shape = tuple(int(n) for n in shape)
    if math.prod(shape) > _CACHED_G_VOXELS:
        return SpectralOperators(reciprocal_vectors(lattice, shape, rfft=True), shape, keep=False)
    return _cached_spectral_operators(np.asarray(lattice.matrix, float).tobytes(), shape)


@lru_cache(maxsize=8)
def _cached_spectral_operators(matrix: bytes, shape: Shape) -> SpectralOperators:
    return SpectralOperators(_cached_reciprocal_vectors(matrix, shape, True), shape, keep=True)


def _combine(derivative: str, components: list[np.ndarray]) -> np.ndarray:
    """A derivative from the inverse transforms of its :meth:`SpectralOperators.component_spectra`."""
    if derivative in ("value", "laplacian"):
        return components[0]
    if derivative == "gradient":
        return np.stack(components)
    if derivative == "squared_gradient":
        squared = components[0] ** 2
        for component in components[1:]:
            squared += component**2
        return squared
    out = np.empty((3, 3, *components[0].shape))  # hessian: the six of a ≤ b
    pairs = [(a, b) for a in range(3) for b in range(a, 3)]
    for (a, b), component in zip(pairs, components):
        out[a, b] = out[b, a] = component
    return out


def gaussian_smooth(field: np.ndarray, lattice: Lattice, sigma: float,
                    spectrum: np.ndarray | None = None) -> np.ndarray:
    """Periodic convolution of a real field with a normalised isotropic Gaussian of width ``sigma`` (Å).

    Keeps the integral and the symmetry of the field (the kernel is isotropic). ``spectrum``: the
    field's :func:`real_spectrum` when the caller already has it (one forward FFT for many derived fields).
    """
    return fft_derivative(field, lattice, "value", smoothing=sigma, spectrum=spectrum)


def fft_derivative(
    field: np.ndarray,
    lattice: Lattice,
    derivative: Literal["value", "gradient", "squared_gradient", "laplacian", "hessian"] = "gradient",
    smoothing: float = 0.0,
    spectrum: np.ndarray | None = None,
) -> np.ndarray:
    """Spectral derivatives of a periodic real field on the unit-cell grid (units: field per Å^order).

    ``gradient`` → ``(3, nx, ny, nz)`` Cartesian components; ``squared_gradient`` → |∇f|², the
    same components squared and summed one at a time (a big grid never holds all three);
    ``laplacian`` → ``(nx, ny, nz)``; ``hessian`` → ``(3, 3, nx, ny, nz)``; ``value`` → the field
    itself (smoothed). Odd derivatives drop the Nyquist planes (their sine part is not representable
    on the grid; keeping it makes symmetric fields come out asymmetric). ``smoothing`` > 0:
    derivatives of the field smoothed as :func:`gaussian_smooth` (σ in Å), in the same spectral
    pass. ``spectrum``: the field's :func:`real_spectrum` when the caller already has it. The
    multipliers are :class:`SpectralOperators`; :func:`derived_fields` takes many derivatives at once.
    """
    field = np.asarray(field, dtype=float)
    shape = field.shape
    ops = spectral_operators(lattice, shape)
    spectrum = (real_spectrum(field) if spectrum is None else spectrum) * ops.kernel(smoothing)
    return _transform(derivative, ops.component_spectra(spectrum, derivative), shape)


def _transform(derivative: str, spectra, shape: Shape) -> np.ndarray:
    """A derivative from its component spectra, one inverse FFT at a time (|∇f|² summed as it goes)."""
    if derivative == "squared_gradient":  # a big grid never holds the three components at once
        components = (real_field(s, shape) for s in spectra)
        squared = next(components) ** 2
        for component in components:
            squared += component**2
        return squared
    return _combine(derivative, [real_field(s, shape) for s in spectra])


def derived_fields(spectrum: np.ndarray, lattice: Lattice, shape: Shape,
                   requests: list[tuple[str, float]], at: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Many :func:`fft_derivative` s of one field from its :func:`real_spectrum`, one array per request, in order.

    ``requests``: (derivative, smoothing σ in Å) pairs, derivative ``value``, ``squared_gradient``
    or ``laplacian`` (scalar fields). ``at``: only the values at these C-order flat voxel indices.
    The same multipliers as :func:`fft_derivative`; while all the component spectra together hold
    at most :data:`_BATCH_SPECTRA` numbers they take one batched inverse FFT (torch's, ≈ 2× faster
    than one scipy transform each on the 16³–24³ grids of the surrogate; equal to 1e-15), else one
    transform at a time.
    """
    shape = tuple(int(n) for n in shape)
    ops = spectral_operators(lattice, shape)
    smoothed: dict[float, np.ndarray] = {}

    def spectra_of(derivative: str, sigma: float):
        if sigma not in smoothed:  # the smoothed spectrum of the latest σ only (requests come grouped by σ)
            smoothed.clear()
            smoothed[sigma] = spectrum * ops.kernel(sigma)
        return ops.component_spectra(smoothed[sigma], derivative)

    def picked(field: np.ndarray) -> np.ndarray:
        return field if at is None else field.reshape(-1)[at]

    n_components = sum(3 if derivative == "squared_gradient" else 1 for derivative, _ in requests)
    if n_components * spectrum.size > _BATCH_SPECTRA:  # computed as they are asked for: one field at a time
        for derivative, sigma in requests:
            yield picked(_transform(derivative, spectra_of(derivative, sigma), shape))
        return
    fields = real_fields([c for derivative, sigma in requests for c in spectra_of(derivative, sigma)], shape)
    for derivative, _ in requests:
        yield _combine(derivative, [picked(next(fields)) for _ in range(3 if derivative == "squared_gradient" else 1)])


def _resample_axis(spectrum: np.ndarray, axis: int, m: int) -> np.ndarray:
    """Zero-pad or truncate one axis of a full FFT spectrum from n to m points, Nyquist split symmetrically."""
    n = spectrum.shape[axis]
    if m == n:
        return spectrum
    spectrum = np.moveaxis(spectrum, axis, 0)
    out = np.zeros((m, *spectrum.shape[1:]), dtype=spectrum.dtype)
    k = min(n, m)
    half = (k - 1) // 2
    out[: half + 1] = spectrum[: half + 1]
    if half:
        out[-half:] = spectrum[-half:]
    if k % 2 == 0:
        if n < m:  # the old Nyquist term splits evenly into +n/2 and -n/2
            out[k // 2] = 0.5 * spectrum[k // 2]
            out[m - k // 2] = 0.5 * spectrum[k // 2]
        else:  # +m/2 and -m/2 alias onto the new Nyquist bin
            out[k // 2] = spectrum[k // 2] + spectrum[n - k // 2]
    return np.moveaxis(out, 0, axis)


def fourier_interpolate(field: np.ndarray, shape: Shape) -> np.ndarray:
    """Resample a periodic real field onto another grid of the same cell by Fourier interpolation.

    Up-sampling reproduces the band-limited field exactly at the old grid points; down-sampling
    keeps the frequencies the new grid can hold.
    """
    field = np.asarray(field, dtype=float)
    shape = tuple(int(n) for n in shape)
    if shape == field.shape:
        return field.copy()
    spectrum = scipy.fft.fftn(field)
    for axis, m in enumerate(shape):
        spectrum = _resample_axis(spectrum, axis, m)
    scale = math.prod(shape) / field.size
    return scipy.fft.ifftn(spectrum).real * scale


def fractional_grid(shape: Shape) -> np.ndarray:
    """Fractional coordinates of every voxel, shape ``(nx, ny, nz, 3)``."""
    axes = [np.arange(n) / n for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def voxel_volume(lattice: Lattice, shape: Shape) -> float:
    """Volume of one voxel (Å³)."""
    return float(lattice.volume / math.prod(shape))
