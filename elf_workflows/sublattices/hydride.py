"""A hydride's metal sublattice: strip H (and optionally every non-metal), keep metal positions and cell.

The sublattice sits at the hydride's own volume; its pressure is the hydride's when the caller gives it.
The pressure at which the *bare* metal would have that volume is estimated by inverting the shipped
EOS (Vegard volume of its metals equal to its volume per atom), and the prototype is recognised by
matching against the registry with pymatgen's ``StructureMatcher`` (volume scaled, loose axial ratio).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Element, Structure
from scipy.optimize import brentq

from elf_workflows.errors import InputError
from elf_workflows.io import read_structure, validate_structure
from elf_workflows.sublattices.eos import P_MAX_GPA, mixture_source, vegard_volume
from elf_workflows.sublattices.generate import make_document
from elf_workflows.sublattices.prototypes import PROTOTYPES, build_prototype


def strip_structure(structure: Structure, strip: Iterable[str] = ("H",), strip_nonmetals: bool = False) -> Structure:
    """``structure`` without the species in ``strip`` (and every non-metal with ``strip_nonmetals``)."""
    strip = {str(s).strip() for s in strip}
    for s in strip:
        if not Element.is_valid_symbol(s):
            raise InputError(f"unknown element symbol {s!r} in strip list")
    present = {el.symbol for el in structure.composition.elements}
    remove = {s for s in present if s in strip or (strip_nonmetals and not Element(s).is_metal)}
    kept = present - remove
    if not kept:
        raise InputError(f"nothing left of {structure.composition.reduced_formula} after removing {', '.join(sorted(remove))}")
    metals = [s for s in kept if Element(s).is_metal]
    if not metals:
        raise InputError(f"no metal in {structure.composition.reduced_formula} after removing "
                         f"{', '.join(sorted(remove)) or 'nothing'}; use strip_nonmetals to drop {', '.join(sorted(kept))}")
    out = structure.copy()
    if remove:
        out.remove_species(sorted(remove))
    return out


def match_prototype(structure: Structure) -> str | None:
    """Registry prototype the sublattice matches (volume scaled; hcp/AlB2 axial ratio free within 10 %)."""
    matcher = StructureMatcher(ltol=0.1, stol=0.2, angle_tol=3.0, primitive_cell=True, scale=True,
                               attempt_supercell=True)
    symbols = [el.symbol for el in structure.composition.elements]
    for name, proto in PROTOTYPES.items():
        candidates = []
        if len(symbols) == 1 and proto.is_unary:
            candidates.append(build_prototype(name, symbols[0]))
        if len(symbols) == 2:
            for st in proto.binary_stoichiometries:
                candidates.append(build_prototype(name, symbols[0], symbols[1], 1.0, st))
        if any(matcher.fit(structure, c) for c in candidates):
            return name
    return None


def estimate_pressure(structure: Structure, prototype: str | None = None) -> float | None:
    """Pressure (GPa) at which the EOS gives the sublattice's volume per atom; None outside 0..1000 GPa.

    Uses the EOS of the matched prototype (fcc when none matched); mixtures use Vegard's rule.
    """
    comp = {el.symbol: amt for el, amt in structure.composition.items()}
    proto = prototype if prototype in PROTOTYPES else "fcc"
    v = structure.volume / len(structure)
    f = lambda p: vegard_volume(comp, proto, p) - v  # noqa: E731
    try:
        lo, hi = f(0.0), f(P_MAX_GPA)
    except InputError:
        return None
    if lo < 0 or hi > 0:
        return None
    return float(brentq(f, 0.0, P_MAX_GPA, xtol=1e-6))


def sublattice_from_hydride(structure_or_path: Structure | str | Path, strip: Iterable[str] = ("H",),
                            strip_nonmetals: bool = False, pressure_gpa: float | None = None,
                            estimate: bool = True) -> dict:
    """The metal sublattice document of a hydride.

    Args:
        structure_or_path: a :class:`Structure` or a file pymatgen reads.
        strip: species removed (default H).
        strip_nonmetals: also remove every non-metal (B, C, N, ...).
        pressure_gpa: the hydride's pressure (GPa) when known (e.g. 150 for LaH10 at a = 5.10 Å);
            it becomes ``pressure_gpa`` of the document (and enters its ``template_id``).
        estimate: also estimate ``bare_metal_pressure_gpa``, the pressure at which the bare metal
            (shipped EOS: GPAW fit where there is one) has the sublattice's volume per atom. It is *not* the
            hydride's pressure: the H atoms take volume, so it is far lower (LaH10 at a = 5.10 Å, ~150 GPa,
            → a few GPa for bare fcc La).

    Returns:
        a document with the contract keys (``pressure_gpa`` = the given pressure or None);
        ``prototype`` is the matched registry name or ``"hydride"``; extras ``parent_formula``,
        ``stripped``, ``bare_metal_pressure_gpa``, ``origin``.
    """
    from elf_workflows.sublattices.eos import check_pressure

    if pressure_gpa is not None:
        pressure_gpa = check_pressure(pressure_gpa)
    if isinstance(structure_or_path, (str, Path)):
        parent = read_structure(structure_or_path)
        origin = str(structure_or_path)
    else:
        parent = validate_structure(structure_or_path, name="hydride")
        origin = "structure"
    sub = strip_structure(parent, strip, strip_nonmetals)
    removed = sorted({el.symbol for el in parent.composition.elements} - {el.symbol for el in sub.composition.elements})
    proto = match_prototype(sub)
    bare = estimate_pressure(sub, proto) if estimate else None
    return make_document(
        sub, proto or "hydride", pressure_gpa,
        "hydride cell (volume as given)",
        parent_formula=parent.composition.reduced_formula,
        stripped=removed,
        bare_metal_pressure_gpa=None if bare is None else float(np.round(bare, 1)),
        bare_metal_eos=(mixture_source([el.symbol for el in sub.composition.elements], proto if proto in PROTOTYPES else "fcc")
                        if bare is not None else None),
        origin=origin,
    )
