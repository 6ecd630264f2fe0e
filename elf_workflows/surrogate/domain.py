"""The compressions the surrogate was trained on, and whether a structure lies inside them.

Training records the V/V0 range of its cells in the model metadata (``trained_on.v_ratio_range``),
with V0 the ambient volume per atom from pymatgen's molar volumes (Vegard mean for binaries). The
shipped set spans V/V0 = 0.105–1: a part at V/V0 = 0.45–1 and a part compressed by the equations of
state to 30–350 GPa (``scripts/make_training_structures.py --pressures``). A structure more compressed
than a model's training cells is an extrapolation; :func:`extrapolation_note` says so.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

#: V/V0 range assumed for a model whose metadata does not record one (weights trained before session 3,
#: on the 0.45–1 part of the set alone)
TRAINED_V_RATIO = (0.45, 1.0)


@lru_cache(maxsize=None)
def ambient_volume_per_atom(symbol: str) -> float:
    """Ambient volume per atom (Å³) from pymatgen's molar volume (cm³/mol); atomic radius as a fallback (cached per element)."""
    from pymatgen.core import Element

    el = Element(symbol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mv = el.molar_volume
    if mv:
        return float(mv) / 0.602214076
    return 4.0 / 3.0 * np.pi * float(el.atomic_radius) ** 3 / 0.74


def compression_ratio(structure: Structure) -> float:
    """V/V0: volume per atom over the mean ambient volume per atom of its sites (dimensionless)."""
    v0 = np.mean([ambient_volume_per_atom(specie.symbol) for specie in structure.species])
    return float(structure.volume / len(structure) / v0)


def trained_v_ratio(model=None) -> tuple[float, float]:
    """The V/V0 range a model was trained on: its metadata's ``trained_on.v_ratio_range``, else
    :data:`TRAINED_V_RATIO`; ``model=None`` is the shipped model."""
    if model is None:
        from elf_workflows.surrogate.infer import load_model

        model = load_model()
    meta = getattr(model, "metadata", None) or {}
    rng = (meta.get("trained_on") or {}).get("v_ratio_range")
    return (float(rng[0]), float(rng[1])) if rng else TRAINED_V_RATIO


def extrapolation_note(structure: Structure, model=None, tol: float = 0.01) -> str | None:
    """A one-line note when ``structure`` is more compressed than the model's training cells (``model=None``:
    the shipped one), else None."""
    lo, hi = trained_v_ratio(model)
    ratio = compression_ratio(structure)
    if ratio < lo - tol:
        return (f"{structure.composition.reduced_formula}: V/V0 = {ratio:.2f} is below the surrogate's training "
                f"range ({lo:.2f}-{hi:.2f}); its ELF there is an extrapolation")
    return None
