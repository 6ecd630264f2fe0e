"""Per-element data: valence counts, PAW core radii, radial pseudo valence, partition and pseudo-atom densities.

The table ``data/atomic_densities.npz`` is built by ``scripts/build_atomic_densities.py`` from the PBE
PAW datasets of ``gpaw-data`` (see that script for the source and the definitions). Radii are in Å,
densities in e/Å³.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from pymatgen.core import Element

from elf_workflows.errors import InputError

_TABLE = "atomic_densities.npz"


@dataclass(frozen=True)
class AtomicData:
    """Radial data of one element.

    Attributes:
        symbol: element symbol.
        Z: atomic number.
        valence: valence electrons of the PAW dataset (semicore included, e.g. 11 for La).
        r_core: largest PAW augmentation radius (Å); ELF maxima inside it are atomic shell structure.
        r: radial grid (Å).
        rho: spherical pseudo valence density on ``r`` (e/Å³), 4π∫ρr²dr = valence.
        rho_partition: the valence charge as GPAW's SCF density places it, pseudo valence + smooth
            core + compensation charge (e/Å³, negative near some nuclei), 4π∫ρr²dr = valence.
        rho_pseudo: the free atom's density in GPAW's pseudo ELF, pseudo valence (with its PAW norm
            deficit, not renormalised) + smooth core (e/Å³).
        tau_pseudo: its kinetic energy density τ̃ = ½Σ|∇ψ̃|² + smooth core τ̃_c (Å⁻⁵, ħ²/m_e = 1).
        source: where the data came from.
    """

    symbol: str
    Z: int
    valence: float
    r_core: float
    r: np.ndarray
    rho: np.ndarray
    rho_partition: np.ndarray
    rho_pseudo: np.ndarray
    tau_pseudo: np.ndarray
    source: str


@lru_cache(maxsize=1)
def _load() -> tuple[dict, dict[str, np.ndarray]]:
    with resources.files("elf_workflows.data").joinpath(_TABLE).open("rb") as fh:
        npz = np.load(fh)
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("meta")))
    return meta, arrays


def available_elements() -> list[str]:
    """Symbols that have atomic data (H to Rn)."""
    return list(_load()[0])


def atomic_data(symbol: str) -> AtomicData:
    """Radial data of ``symbol``; raises :class:`InputError` for an element without data."""
    symbol = str(symbol)
    meta, arrays = _load()
    if symbol not in meta:
        raise InputError(f"no atomic data for element {symbol!r} (available: H to Rn)")
    m = meta[symbol]
    return AtomicData(
        symbol=symbol,
        Z=int(m["Z"]),
        valence=float(m["valence"]),
        r_core=float(m["r_core"]),
        r=arrays[f"{symbol}/r"],
        rho=arrays[f"{symbol}/rho"],
        rho_partition=arrays[f"{symbol}/rho_partition"],
        rho_pseudo=arrays[f"{symbol}/rho_pseudo"],
        tau_pseudo=arrays[f"{symbol}/tau_pseudo"],
        source=m["source"],
    )


def valence_electrons(symbol: str) -> float:
    """Valence electrons of ``symbol`` in the PAW dataset (semicore included)."""
    return atomic_data(symbol).valence


def core_radius(symbol: str) -> float:
    """PAW core radius of ``symbol`` (Å)."""
    return atomic_data(symbol).r_core


def is_metal(symbol: str) -> bool:
    """True for metals (alkali, alkaline-earth, transition, post-transition, rare-earth, actinide)."""
    try:
        return bool(Element(symbol).is_metal)
    except ValueError:
        return False
