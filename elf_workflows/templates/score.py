"""Template strength: one number from the interstitial ELF attractors of a bare metal sublattice.

For every symmetry-distinct interstitial attractor *a* (multiplicity m_a, ELF maximum η_a, basin
electrons q_a):

    score = (1 / N_metal) · Σ_a  m_a · q_a · clip((η_a − 0.5) / (1 − 0.5), 0, 1)

i.e. the valence electrons held in interstitial ELF basins per metal atom, each basin weighted by how
far its ELF maximum rises above the homogeneous electron gas (ELF = 0.5) towards perfect localisation
(ELF = 1). Units: electrons per metal atom. The reasons are in ``docs/templates.md``: the ELF value
alone does not make a template (compressed K, Mg, Al have high void ELF), the electron count in the
interstitial basins does (Th vs La frames), and a basin only counts as far as it is localised.
The Laplacian of the density at each maximum and the electride-site test (ELF > 0.7, ≥ 0.9 e,
∇²ρ < 0) are reported beside the score, not in it: a SAD density (used when no SCF density exists)
is a superposition of atoms whose Laplacian is positive in every void by construction.

Without an SCF density the basins partition :func:`elf_workflows.sad.partition_density`: free-atom
pseudo valence densities *with* their PAW compensation charges, the free-atom counterpart of the
GPAW density. The plain valence SAD (the surrogate's input) spreads semicore electrons into the
voids and over-fills interstitial basins (fcc Mg at 300 GPa: 24 e against the SCF density's 7.7 e).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from elf_workflows.templates.attractors import Attractor, find_attractors

if TYPE_CHECKING:
    from pymatgen.core import Structure

#: ELF of the homogeneous electron gas
ELF_GAS = 0.5
#: grids coarser than this (largest voxel edge, Å) are Fourier-refined by an integer factor before the
#: basins are cut (GPAW's 0.18 Å grids → 0.09 Å; basin electrons then converge to a few per cent)
BASIN_SPACING = 0.12
SCORE_FORMULA = "sum_a m_a * q_a * clip((elf_a - 0.5) / 0.5, 0, 1) / N_metal  [e per metal atom]"


@dataclass
class TemplateScore:
    """Score and attractors of one template.

    Attributes:
        score: template strength (localised interstitial electrons per metal atom).
        attractors: symmetry-distinct attractors (interstitial first).
        metrics: the ingredients and diagnostics (see :func:`score_attractors`).
        density_source: where basin electrons came from: ``chgcar``, ``scf`` or ``sad``.
        seconds: wall time of the analysis (s).
    """

    score: float
    attractors: list[Attractor]
    metrics: dict = field(default_factory=dict)
    density_source: str = "sad"
    seconds: float = 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["attractors"] = [a.as_dict() for a in self.attractors]
        return out


def localisation_weight(elf: float | np.ndarray) -> np.ndarray:
    """clip((ELF − 0.5)/0.5, 0, 1): 0 at or below the electron gas, 1 at perfect localisation."""
    return np.clip((np.asarray(elf, float) - ELF_GAS) / (1 - ELF_GAS), 0.0, 1.0)


def _interstitial_terms(structure: Structure,
                        attractors: list[Attractor]) -> tuple[int, list[Attractor], np.ndarray, np.ndarray]:
    """(N_metal, the interstitial attractors, their m_a q_a, their η_a): what a score is made of."""
    from elf_workflows.elements import is_metal

    n_metal = sum(1 for site in structure if is_metal(site.specie.symbol)) or len(structure)
    inter = [a for a in attractors if a.kind == "interstitial"]
    electrons = np.array([a.multiplicity * np.nan_to_num(a.electrons) for a in inter], float)
    return n_metal, inter, electrons, np.array([a.elf for a in inter], float)


def score_uncertainty(structure: Structure, attractors: list[Attractor], sigma: float) -> float:
    """Standard deviation of the score (e per metal atom) when every interstitial ELF maximum is off by N(0, σ²).

    Each attractor's weight w = clip(z, 0, 1), z = (η + ε − 0.5)/0.5 ~ N(μ, s²), has the closed-form
    moments of a normal clipped to [0, 1]; the attractors' variances (m_a q_a / N_metal)² Var[w] are
    summed as independent. Voids far below 0.5 add nothing, voids near 0.5 add most per electron
    (there a small ELF error turns a basin on or off), voids well above add m_a q_a σ / (0.5 N_metal).
    ``sigma``: the ELF error at void maxima of whatever made the ELF (a surrogate's:
    :data:`SURROGATE_VOID_SIGMA`).
    """
    from scipy.special import ndtr

    n_metal, inter, electrons, eta = _interstitial_terms(structure, attractors)
    if not inter or sigma <= 0:
        return 0.0
    mu = (eta - ELF_GAS) / (1 - ELF_GAS)
    sd = sigma / (1 - ELF_GAS)
    lo, hi = -mu / sd, (1 - mu) / sd  # the clip bounds in standard units
    phi_lo, phi_hi = np.exp(-0.5 * lo**2) / np.sqrt(2 * np.pi), np.exp(-0.5 * hi**2) / np.sqrt(2 * np.pi)
    inside, above = ndtr(hi) - ndtr(lo), 1 - ndtr(hi)
    mean = mu * inside + sd * (phi_lo - phi_hi) + above
    square = (mu**2 * inside + 2 * mu * sd * (phi_lo - phi_hi)
              + sd**2 * (inside + lo * phi_lo - hi * phi_hi) + above)
    return float(np.sqrt(((electrons / n_metal) ** 2 * np.maximum(square - mean**2, 0.0)).sum()))


#: ELF error (σ, standard deviation) of the shipped surrogate's per-voxel branch at void maxima of
#: elements it never saw: MAE 0.07–0.11 on three held-out element sets (docs/surrogate.md), × √(π/2)
SURROGATE_VOID_SIGMA = 0.1


def score_attractors(structure: Structure, attractors: list[Attractor]) -> tuple[float, dict]:
    """(score, metrics) from attractor data; see the module docstring for the formula."""
    from elf_workflows.sad import valence_count

    n_metal, inter, electrons, eta = _interstitial_terms(structure, attractors)
    weighted = float((electrons * localisation_weight(eta)).sum()) if inter else 0.0
    total_inter = float(electrons.sum()) if inter else 0.0
    valence = float(valence_count(structure))
    metrics = {
        "formula": SCORE_FORMULA,
        "n_metal": n_metal,
        "valence_electrons": valence,
        "n_interstitial": len(inter),
        "n_atomic": len(attractors) - len(inter),
        "max_interstitial_elf": float(eta.max()) if inter else None,
        "interstitial_electrons": round(total_inter, 6),
        "interstitial_fraction": round(total_inter / valence, 6) if valence else None,
        "localised_interstitial_electrons": round(weighted, 6),
        "n_electride_sites": int(sum(a.multiplicity for a in inter if a.electride_site)),
    }
    return round(weighted / n_metal, 6), metrics


def score_template(
    structure: Structure,
    elf: np.ndarray,
    density: np.ndarray | None = None,
    density_source: str | None = None,
    symprec: float = 1e-3,
    basin_spacing: float | None = BASIN_SPACING,
) -> TemplateScore:
    """Attractors and template strength of ``structure`` from its ELF grid.

    Args:
        structure: the metal sublattice.
        elf: ELF grid on the unit cell.
        density: valence density (e/Å³) to partition; when ``None``, the superposed free-atom
            partition densities on the ELF grid (:func:`~elf_workflows.sad.partition_density`).
        density_source: label stored with the result (``chgcar``, ``scf``); ``sad`` when no density.
        symprec: spglib tolerance (Å).
        basin_spacing: largest voxel edge (Å) for the basin analysis: coarser grids are Fourier
            interpolated onto an integer multiple of their shape (ELF clipped to [0, 1]); ``None``: never.
    """
    import math

    from elf_workflows.errors import GridError
    from elf_workflows.grids import check_grid, fourier_interpolate
    from elf_workflows.sad import partition_density

    start = time.perf_counter()
    elf = np.asarray(elf, float)
    if elf.ndim != 3 or min(elf.shape) < 3:
        raise GridError(f"an ELF grid of at least 3x3x3 voxels is needed, got shape {elf.shape}")
    if not np.all(np.isfinite(elf)):
        raise GridError("the ELF grid holds NaN or infinite values")
    if basin_spacing:
        edge = max(length / n for length, n in zip(structure.lattice.abc, elf.shape))
        factor = math.ceil(edge / basin_spacing - 1e-9)
        if factor > 1:
            fine = check_grid(tuple(n * factor for n in elf.shape), n_arrays=12)
            elf = np.clip(fourier_interpolate(elf, fine), 0.0, 1.0)
            if density is not None:
                density = fourier_interpolate(np.asarray(density, float), fine)
    if density is None:
        density = partition_density(structure, elf.shape)
        density_source = "sad"
    attractors = find_attractors(structure, elf, density, symprec=symprec)
    score, metrics = score_attractors(structure, attractors)
    return TemplateScore(score=score, attractors=attractors, metrics=metrics,
                         density_source=density_source or "scf", seconds=round(time.perf_counter() - start, 4))
