"""Compressed metal sublattices: prototypes, EOS pressure → volume, hydride stripping, identity.

Public API::

    generate_sublattices(elements, prototypes, pressures, binaries=False) -> list[dict]
    sublattice_from_hydride(structure_or_path, strip=("H",)) -> dict
    template_id(structure, pressure_gpa) -> str
    volume_at_pressure(element, prototype, pressure_gpa) -> float   # Å³/atom; GPAW (PBE) EOS where
                                                                    # fitted, else the CHGNet table
    PROTOTYPES                                                      # name -> Prototype

Documents carry ``structure`` (pymatgen dict), ``prototype``, ``pressure_gpa`` (GPa),
``volume_per_atom`` (Å³), ``spacegroup``, ``template_id``, ``eos_source`` and extras
(``formula``, ``elements``, ``spacegroup_number``, ``stoichiometry``, ...).
"""

from elf_workflows.sublattices.eos import pressure_at_volume, vegard_volume, volume_at_pressure
from elf_workflows.sublattices.generate import DOCUMENT_KEYS, generate_sublattices, make_document
from elf_workflows.sublattices.hydride import strip_structure, sublattice_from_hydride
from elf_workflows.sublattices.identity import deduplicate, template_id
from elf_workflows.sublattices.prototypes import (
    BINARY_PROTOTYPES,
    PROTOTYPES,
    UNARY_PROTOTYPES,
    Prototype,
    build_prototype,
    get_prototype,
)

__all__ = [
    "PROTOTYPES", "UNARY_PROTOTYPES", "BINARY_PROTOTYPES", "DOCUMENT_KEYS", "Prototype", "build_prototype",
    "get_prototype", "generate_sublattices", "make_document", "sublattice_from_hydride", "strip_structure",
    "template_id", "deduplicate", "volume_at_pressure", "pressure_at_volume", "vegard_volume",
]
