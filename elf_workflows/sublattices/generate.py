"""Build sublattice documents: elements × prototypes × pressures, at the EOS volume of each pressure."""

from __future__ import annotations

import itertools
from typing import Iterable, Sequence

from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from elf_workflows.errors import InputError
from elf_workflows.sublattices.eos import (
    check_element,
    check_pressure,
    eos_source,
    mixture_source,
    vegard_volume,
    volume_at_pressure,
)
from elf_workflows.sublattices.identity import SYMPREC, deduplicate, symmetry_dataset, template_id
from elf_workflows.sublattices.prototypes import BINARY_PROTOTYPES, PROTOTYPES, build_prototype, get_prototype, roles_for

#: keys every sublattice document carries (the contract), besides extras such as ``formula``
DOCUMENT_KEYS = ("structure", "prototype", "pressure_gpa", "volume_per_atom", "spacegroup", "template_id", "eos_source")


def spacegroup_of(structure: Structure, symprec: float = SYMPREC) -> tuple[str, int]:
    """(Hermann–Mauguin symbol, number) from spglib via pymatgen."""
    sga = SpacegroupAnalyzer(structure, symprec=symprec)
    return sga.get_space_group_symbol(), int(sga.get_space_group_number())


def _spacegroup_and_id(structure: Structure, pressure_gpa: float | None) -> tuple[str, int, str]:
    """(H–M symbol, number, template_id) from a single spglib symmetry dataset (spglib is the
    dominant cost of a document once the prototype cells are cached)."""
    dataset = symmetry_dataset(structure)
    return str(dataset.international), int(dataset.number), template_id(structure, pressure_gpa, dataset=dataset)


def make_document(structure: Structure, prototype: str, pressure_gpa: float | None, source: str,
                  **extra) -> dict:
    """A sublattice document: the contract keys plus ``formula``, ``elements``, ``spacegroup_number``, ``nsites``.

    Args:
        structure: the sublattice (Å).
        prototype: registry name, or a free label for sublattices taken from hydrides.
        pressure_gpa: target (or estimated) pressure, GPa; None when unknown.
        source: where the volume came from (``eos_source``).
        extra: more keys (e.g. ``stoichiometry``, ``parent_formula``).
    """
    symbol, number, tid = _spacegroup_and_id(structure, pressure_gpa)
    doc = {
        "structure": structure.as_dict(),
        "prototype": prototype,
        "pressure_gpa": None if pressure_gpa is None else float(pressure_gpa),
        "volume_per_atom": round(float(structure.volume / len(structure)), 6),
        "spacegroup": symbol,
        "template_id": tid,
        "eos_source": source,
        "spacegroup_number": number,
        "formula": structure.composition.reduced_formula,
        "elements": sorted(el.symbol for el in structure.composition.elements),
        "nsites": len(structure),
    }
    doc.update(extra)
    return doc


def _unique(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def _parse_list(values: Sequence | str, what: str) -> list:
    if isinstance(values, str):
        values = [v for v in values.split(",")]
    values = [v.strip() if isinstance(v, str) else v for v in values]
    values = [v for v in values if v != ""]
    if not values:
        raise InputError(f"no {what} given")
    return list(values)


def generate_sublattices(elements: Sequence[str] | str, prototypes: Sequence[str] | str,
                         pressures: Sequence[float] | str, binaries: bool = False,
                         dedupe: bool = True) -> list[dict]:
    """Sublattice documents for ``elements`` × ``prototypes`` × ``pressures`` (GPa).

    Unary prototypes (fcc, bcc, hcp, sc, A15) are built for each element at the element's EOS volume.
    Binary prototypes (B2 AB; L1_2 A3B and AB3; C15 and AlB2 AB2 and A2B; A15 A3B) are built for each
    pair of the elements, at the Vegard volume of the element volumes at that pressure. A binary-only
    prototype named in ``prototypes`` is always built on pairs; ``binaries=True`` adds every binary
    prototype (when none is named) and A15's A3B form.

    Returns:
        documents in order element/pair → prototype → stoichiometry → pressure, deduplicated with
        StructureMatcher (``dedupe``).

    Raises:
        InputError: unknown prototype, unknown or non-metal element, pressure outside 0..1000 GPa, a
            binary prototype with fewer than two elements.
    """
    symbols = _unique(check_element(e) for e in _parse_list(elements, "elements"))
    protos = _unique(get_prototype(p).name for p in _parse_list(prototypes, "prototypes"))
    press = [check_pressure(p) for p in _parse_list(pressures, "pressures")]
    press = list(dict.fromkeys(press))
    unary = [p for p in protos if PROTOTYPES[p].is_unary]
    binary = [p for p in protos if not PROTOTYPES[p].is_unary]
    if binaries:
        if not binary:
            binary = list(BINARY_PROTOTYPES)
        binary = _unique(binary + [p for p in unary if PROTOTYPES[p].binary_stoichiometries])
    if binary and len(symbols) < 2:
        names = ", ".join(p for p in binary if not PROTOTYPES[p].is_unary) or ", ".join(binary)
        raise InputError(f"binary prototypes ({names}) need at least two elements; got {', '.join(symbols)}")
    docs: list[dict] = []
    for el in symbols:
        for proto in unary:
            source = eos_source(el, proto)
            for p in press:
                v = volume_at_pressure(el, proto, p)
                s = build_prototype(proto, el, volume_per_atom=v)
                docs.append(make_document(s, proto, p, source, stoichiometry="A"))
    for a, b in itertools.combinations(symbols, 2):
        for proto in binary:
            ref = PROTOTYPES[proto].vegard_reference
            source = mixture_source((a, b), proto)
            for stoich in PROTOTYPES[proto].binary_stoichiometries:
                a_sp, b_sp = roles_for(stoich, a, b)
                for p in press:
                    probe = build_prototype(proto, a, b, 1.0, stoich)
                    comp = {el.symbol: amt for el, amt in probe.composition.items()}
                    v = vegard_volume(comp, proto, p)
                    s = build_prototype(proto, a, b, v, stoich)
                    docs.append(make_document(
                        s, proto, p, f"{source}; Vegard mix of {ref} element volumes", stoichiometry=stoich))
    return deduplicate(docs) if dedupe else docs
