"""Attractors of the ELF: periodic local maxima, refined below a voxel, merged by symmetry, classified.

Pipeline (all vectorised over voxels):

1. **Maxima**: the fixed points of the steepest-ascent watershed (:mod:`.basins`) — voxels no higher
   than none of their 26 periodic neighbours.
2. **Refinement**: a Newton step on the quadratic fitted by central differences to each maximum's
   3×3×3 neighbourhood (step clipped to half a voxel), giving positions below the voxel size and the
   interpolated ELF value.
3. **Symmetry merging**: each maximum is snapped onto its site-symmetric position (the mean of the
   images the space-group operators of the structure map close to it), its orbit is generated with the
   Seitz operators of :func:`elf_workflows.symmetry.get_space_group`, and every other maximum lying on
   the orbit is merged into it. The Wyckoff letter comes from spglib run on the structure plus the whole
   orbit as ghost sites.
4. **Classification** by position, never by ELF value: an attractor closer to a nucleus than that
   element's PAW core radius (:func:`elf_workflows.elements.core_radius`, Å) is atomic shell structure
   (PAW semicore shells of Ca, Y, La, Ba give ELF maxima 0.6–0.9 Å from the nucleus); the rest are
   interstitial.
5. **Basins**: the ELF watershed partitions the valence density; each attractor gets the electrons (e)
   and volume (Å³) of its basin (per attractor: the orbit's basins summed, divided by its
   multiplicity, so that Σ multiplicity × electrons is the cell's electron count), the
   density and its Laplacian at the maximum (e/Å³, e/Å⁵; Fourier-interpolated).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from elf_workflows.grids import local_maxima_mask
from elf_workflows.templates.basins import Basins, merge_shallow_basins, watershed

if TYPE_CHECKING:
    from pymatgen.core import Structure

#: attractors closer than this (Å) to an image of a merged orbit belong to it
MERGE_TOLERANCE = 0.35
#: maxima rising less than this (ELF units) above the saddle to a higher basin are noise and merged
PERSISTENCE = 0.002
#: spglib type number of ghost sites that stand for attractors
_GHOST = 250
#: electride-site criteria (Ahmed et al., arXiv 2510.01583): ELF, basin electrons, Laplacian (e/Å⁵)
ELECTRIDE_ELF = 0.7
ELECTRIDE_ELECTRONS = 0.9
BOHR = 0.529177210903
ELECTRIDE_LAPLACIAN = -1e-3 / BOHR**5  # |∇²ρ| > 1e-3 e/bohr⁵, negative


@dataclass
class Attractor:
    """One symmetry-distinct ELF attractor (values per attractor; ``multiplicity`` images in the cell).

    Attributes:
        kind: ``interstitial`` or ``atomic`` (within a nucleus' core radius).
        frac_coords: fractional position in the structure's lattice (site-symmetric).
        cart_coords: Cartesian position (Å).
        elf: ELF at the refined maximum.
        electrons: valence electrons in its ELF basin (e).
        volume: basin volume (Å³).
        multiplicity: symmetry-equivalent images in the cell given.
        wyckoff: Wyckoff position in the conventional setting, e.g. ``4b``.
        site_symmetry: site-symmetry symbol from spglib.
        density: valence density at the maximum (e/Å³).
        laplacian: ∇²ρ at the maximum (e/Å⁵); negative means a local concentration.
        nearest_atoms: the first coordination shell: ``{"element", "index", "distance"}`` (Å), nearest first.
        electride_site: ELF > 0.7, ≥ 0.9 e and ∇²ρ < −1e-3 e/bohr⁵ (interstitial only).
        images_found: how many of the images were found as grid maxima.
    """

    kind: str
    frac_coords: list[float]
    cart_coords: list[float]
    elf: float
    electrons: float
    volume: float
    multiplicity: int
    wyckoff: str
    site_symmetry: str
    density: float
    laplacian: float
    nearest_atoms: list[dict] = field(default_factory=list)
    electride_site: bool = False
    images_found: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------- maxima
def local_maxima(field: np.ndarray) -> np.ndarray:
    """Flat indices of the periodic local maxima: voxels ≥ all 26 neighbours."""
    return np.flatnonzero(local_maxima_mask(field))


def refine_maxima(field: np.ndarray, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-voxel positions and values of maxima by a Newton step on the central-difference quadratic.

    Returns ``(frac, values)``: fractional coordinates ``(n, 3)`` and interpolated field values ``(n,)``.
    A step is taken only where the fitted Hessian is negative definite; it is clipped to ±0.5 voxel.
    """
    field = np.asarray(field, float)
    shape = np.asarray(field.shape)
    idx = np.stack(np.unravel_index(np.asarray(flat, int), field.shape), axis=1)  # (n, 3)

    def f(offset) -> np.ndarray:
        j = (idx + np.asarray(offset)) % shape
        return field[j[:, 0], j[:, 1], j[:, 2]]

    f0 = f((0, 0, 0))
    eye = np.eye(3, dtype=int)
    grad = np.stack([(f(eye[a]) - f(-eye[a])) / 2 for a in range(3)], axis=1)
    hess = np.empty((len(idx), 3, 3))
    for a in range(3):
        hess[:, a, a] = f(eye[a]) - 2 * f0 + f(-eye[a])
        for b in range(a + 1, 3):
            hess[:, a, b] = hess[:, b, a] = (f(eye[a] + eye[b]) - f(eye[a] - eye[b])
                                             - f(-eye[a] + eye[b]) + f(-eye[a] - eye[b])) / 4
    step = np.zeros((len(idx), 3))
    eig = np.linalg.eigvalsh(hess) if len(idx) else np.zeros((0, 3))
    ok = np.all(eig < -1e-14, axis=1)
    if ok.any():
        step[ok] = -np.linalg.solve(hess[ok], grad[ok][..., None])[..., 0]
    step = np.clip(step, -0.5, 0.5)
    value = f0 + np.einsum("na,na->n", grad, step) + 0.5 * np.einsum("na,nab,nb->n", step, hess, step)
    value = np.maximum(value, f0)
    return ((idx + step) / shape) % 1.0, value


def fourier_values(field: np.ndarray, lattice, frac: np.ndarray, laplacian: bool = False) -> np.ndarray:
    """Trigonometric interpolation of a periodic grid field (or its Laplacian, per Å²) at fractional points."""
    from elf_workflows.grids import fft_derivative

    field = np.asarray(field, float)
    if laplacian:
        field = fft_derivative(field, lattice, "laplacian")
    frac = np.atleast_2d(np.asarray(frac, float))
    nx, ny, nz = field.shape
    spectrum = np.fft.fftn(field) / field.size
    phase = [np.exp(2j * np.pi * np.outer(frac[:, a], np.fft.fftfreq(n, 1.0 / n)))  # (points, n)
             for a, n in enumerate(field.shape)]
    t = (spectrum.reshape(nx * ny, nz) @ phase[2].T).reshape(nx, ny, len(frac))  # sum over l (BLAS)
    u = np.einsum("ijp,pj->ip", t, phase[1])
    return np.einsum("ip,pi->p", u, phase[0]).real


# ------------------------------------------------------------------------------------------- symmetry
def _cart_dist(lattice_matrix: np.ndarray, d: np.ndarray) -> np.ndarray:
    d = d - np.round(d)
    return np.linalg.norm(d @ lattice_matrix, axis=-1)


def site_symmetric_position(x: np.ndarray, rotations: np.ndarray, translations: np.ndarray,
                            matrix: np.ndarray, tol: float = MERGE_TOLERANCE) -> np.ndarray:
    """Snap ``x`` onto the position its stabiliser fixes: the mean of the images within ``tol`` Å of ``x``."""
    for _ in range(3):
        images = np.einsum("oab,b->oa", rotations, x) + translations
        d = images - x
        d -= np.round(d)
        close = np.linalg.norm(d @ matrix, axis=1) < tol
        x = (x + d[close].mean(0)) % 1.0
    return x


def orbit(x: np.ndarray, rotations: np.ndarray, translations: np.ndarray, matrix: np.ndarray,
          tol: float = 1e-3) -> np.ndarray:
    """Distinct images of ``x`` (fractional, in [0, 1)) under the operators, duplicates within ``tol`` Å removed."""
    images = (np.einsum("oab,b->oa", rotations, x) + translations) % 1.0
    keep: list[np.ndarray] = []
    for y in images:
        if not keep or _cart_dist(matrix, np.asarray(keep) - y).min() > tol:
            keep.append(y)
    return np.asarray(keep)


def wyckoff_of_orbit(structure: Structure, images: np.ndarray, symprec: float = 1e-3) -> tuple[str, str]:
    """(Wyckoff label like ``4b``, site symmetry) of an orbit, from spglib on the structure plus ghost sites."""
    return wyckoff_of_orbits(structure, [images], symprec)[0]


def wyckoff_of_orbits(structure: Structure, orbits: list[np.ndarray], symprec: float = 1e-3) -> list[tuple[str, str]]:
    """Wyckoff labels of several orbits in one spglib call (each orbit a ghost species of its own)."""
    import spglib

    if not orbits:
        return []
    coords = [structure.frac_coords] + list(orbits)
    types = [site.specie.Z for site in structure]
    first = []
    for k, images in enumerate(orbits):
        first.append(len(types))
        types += [_GHOST + k] * len(images)
    data = spglib.get_symmetry_dataset((structure.lattice.matrix, np.vstack(coords), types), symprec=symprec)
    if data is None:
        return [("?", "?")] * len(orbits)
    ratio = abs(np.linalg.det(data.std_lattice)) / abs(np.linalg.det(structure.lattice.matrix))
    return [(f"{int(round(len(images) * ratio))}{data.wyckoffs[i]}", str(data.site_symmetry_symbols[i]))
            for i, images in zip(first, orbits)]


# -------------------------------------------------------------------------------------------- driver
def nearest_atoms(structure: Structure, frac: np.ndarray, shell: float = 0.25) -> list[dict]:
    """The atoms within ``shell`` Å of the nearest one, nearest first: ``{"element", "index", "distance"}``."""
    cart = structure.lattice.get_cartesian_coords(frac)
    radius = 3.0
    while True:
        hits = structure.lattice.get_points_in_sphere(structure.frac_coords, cart, radius)
        if len(hits):
            break
        radius *= 1.5
    dists = np.array([h[1] for h in hits])
    order = np.argsort(dists, kind="stable")
    d0 = dists[order[0]]
    out = []
    for j in order:
        if dists[j] > d0 + shell:
            break
        atom = int(hits[j][2])
        out.append({"element": structure[atom].specie.symbol, "index": atom, "distance": round(float(dists[j]), 4)})
    return out


def _is_atomic(structure: Structure, frac: np.ndarray, core_scale: float) -> bool:
    from elf_workflows.elements import core_radius

    cart = structure.lattice.get_cartesian_coords(frac)
    radius = max(core_radius(el.symbol) for el in structure.composition.elements) * core_scale + 0.01
    for _, dist, atom, *_ in structure.lattice.get_points_in_sphere(structure.frac_coords, cart, radius):
        if dist < core_radius(structure[int(atom)].specie.symbol) * core_scale:
            return True
    return False


def find_attractors(
    structure: Structure,
    elf: np.ndarray,
    density: np.ndarray | None = None,
    symprec: float = 1e-3,
    merge_tolerance: float = MERGE_TOLERANCE,
    core_scale: float = 1.0,
    basins: Basins | None = None,
    persistence: float = PERSISTENCE,
) -> list[Attractor]:
    """Symmetry-distinct ELF attractors of ``structure``, with basin electrons and volumes.

    Args:
        structure: the cell the grids belong to.
        elf: ELF grid, ``elf[i, j, k]`` at fractional ``(i/nx, j/ny, k/nz)``.
        density: valence density (e/Å³) for basin electrons and the Laplacian; Fourier-resampled onto
            the ELF grid when its shape differs. Without it, electrons/density/laplacian are NaN.
        symprec: spglib tolerance (Å).
        merge_tolerance: maxima within this distance (Å) of an orbit image are merged into it.
        core_scale: multiplies each element's core radius in the atomic/interstitial test.
        basins: a precomputed watershed of ``elf`` (computed when omitted).
        persistence: basins whose maximum rises less than this above the saddle to a higher basin are
            merged into it (noise filter, ELF units; 0 keeps every grid maximum).

    Returns:
        Attractors sorted interstitial first, then by descending ELF.
    """
    from elf_workflows.grids import fourier_interpolate, voxel_volume
    from elf_workflows.symmetry import get_space_group

    elf = np.asarray(elf, float)
    lattice = structure.lattice
    matrix = lattice.matrix
    if basins is None:
        basins = watershed(elf, lattice)
    basins = merge_shallow_basins(basins, elf, persistence)
    maxima = basins.maxima
    frac, values = refine_maxima(elf, maxima)
    dv = voxel_volume(lattice, elf.shape)
    if density is not None:
        density = np.asarray(density, float)
        if density.shape != elf.shape:
            density = fourier_interpolate(density, elf.shape)
        electrons = basins.integrate(density, dv)
    else:
        electrons = np.full(len(maxima), np.nan)
    volumes = basins.volumes(dv)

    group = get_space_group(structure, symprec)
    W, w = group.rotations, group.translations
    unassigned = np.ones(len(maxima), bool)
    found: list[tuple[np.ndarray, float, np.ndarray, list[int], int]] = []
    for i in np.argsort(-values, kind="stable"):
        if not unassigned[i]:
            continue
        x = site_symmetric_position(frac[i], W, w, matrix, merge_tolerance)
        images = orbit(x, W, w, matrix)
        cand = np.flatnonzero(unassigned)
        # distance of every unassigned maximum to every image of this orbit
        d = frac[cand][:, None, :] - images[None, :, :]
        dist = np.linalg.norm((d - np.round(d)) @ matrix, axis=-1)
        nearest = dist.argmin(1)
        member = dist[np.arange(len(cand)), nearest] < merge_tolerance
        member |= cand == i
        members = cand[member]
        unassigned[members] = False
        n_found = len(np.unique(nearest[member]))
        found.append((x, float(values[members].max()), images, members.tolist(), n_found))

    xs = np.array([f[0] for f in found]) if found else np.zeros((0, 3))
    if density is not None and len(xs):
        rho_at = fourier_values(density, lattice, xs)
        lap_at = fourier_values(density, lattice, xs, laplacian=True)
    else:
        rho_at = lap_at = np.full(len(xs), np.nan)

    labels = wyckoff_of_orbits(structure, [f[2] for f in found], symprec)
    out: list[Attractor] = []
    for k, (x, value, images, members, n_found) in enumerate(found):
        wyckoff, site_sym = labels[k]
        kind = "atomic" if _is_atomic(structure, x, core_scale) else "interstitial"
        # the basins found, shared over the whole orbit: multiplicity × q is then exactly the electrons
        # (and volume) of those basins, never more than the cell holds, also when a flat maximum made
        # fewer grid maxima than images (their basins then hold the missing images' share)
        q = float(electrons[members].sum() / len(images))
        vol = float(volumes[members].sum() / len(images))
        lap = float(lap_at[k])
        electride = bool(kind == "interstitial" and value > ELECTRIDE_ELF and q >= ELECTRIDE_ELECTRONS
                         and lap < ELECTRIDE_LAPLACIAN)
        out.append(Attractor(
            kind=kind,
            frac_coords=[round(float(c), 6) for c in x],
            cart_coords=[round(float(c), 6) for c in lattice.get_cartesian_coords(x)],
            elf=round(value, 6),
            electrons=round(q, 6),
            volume=round(vol, 6),
            multiplicity=len(images),
            wyckoff=wyckoff,
            site_symmetry=site_sym,
            density=round(float(rho_at[k]), 8),
            laplacian=round(lap, 8),
            nearest_atoms=nearest_atoms(structure, x),
            electride_site=electride,
            images_found=n_found,
        ))
    out.sort(key=lambda a: (a.kind != "interstitial", -a.elf))
    return out
