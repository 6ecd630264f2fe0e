"""Prototype metal sublattices that superhydrides grow on.

Each :class:`Prototype` builds a conventional cell of unit volume per atom from its space group and
Wyckoff positions (``Structure.from_spacegroup``); :func:`build_prototype` scales it to the volume per
atom asked for (Å³/atom). Site labels ``"A"``/``"B"`` are the roles of the elements in the formula
written by ``stoichiometry``: ``AB3`` puts A on the minority site, ``A3B`` on the majority sites.

Sources of the structure types: Strukturbericht/Pearson designations as in the AFLOW prototype
encyclopedia (Mehl et al., Comput. Mater. Sci. 136, S1 (2017)): A1 Cu (fcc), A2 W (bcc), A3 Mg (hcp),
A_h α-Po (sc), A15 Cr3Si, B2 CsCl, L1_2 Cu3Au, C15 MgCu2, C32 AlB2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from pymatgen.core import Lattice, Structure

from elf_workflows.errors import InputError

#: ideal hcp axial ratio √(8/3)
IDEAL_C_OVER_A = math.sqrt(8.0 / 3.0)
#: c/a of AlB2 itself (a = 3.009 Å, c = 3.262 Å; ICSD/AFLOW C32 prototype), used for AlB2-type cells
ALB2_C_OVER_A = 3.262 / 3.009


@dataclass(frozen=True)
class Prototype:
    """A structure type as space group + Wyckoff positions.

    Attributes:
        name: registry key (``fcc``, ``bcc``, ``hcp``, ``sc``, ``A15``, ``B2``, ``L1_2``, ``C15``, ``AlB2``).
        spacegroup: Hermann–Mauguin symbol given to ``Structure.from_spacegroup``.
        number: International Tables number (what spglib finds for the unary/ordered cell).
        lattice: ``"cubic"`` or ``"hexagonal"``.
        c_over_a: axial ratio of hexagonal cells.
        sites: (role, fractional coordinates) of the Wyckoff representatives; roles ``"A"``/``"B"``.
        stoichiometries: formulas the prototype builds: ``"A"`` unary, ``"AB"``, ``"AB3"``/``"A3B"``,
            ``"AB2"``/``"A2B"`` binaries (``A``/``B`` the elements in the order given).
        unary_number: space-group number of the cell with all sites of one element (None when the
            prototype is binary-only and its unary form is a different structure type).
        vegard_reference: unary prototype whose element volumes are mixed (Vegard) for binaries.
        description: one line for documentation.
    """

    name: str
    spacegroup: str
    number: int
    lattice: str
    sites: tuple[tuple[str, tuple[float, float, float]], ...]
    stoichiometries: tuple[str, ...]
    vegard_reference: str
    description: str
    c_over_a: float = 1.0
    unary_number: int | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def is_unary(self) -> bool:
        return "A" in self.stoichiometries

    @property
    def binary_stoichiometries(self) -> tuple[str, ...]:
        return tuple(s for s in self.stoichiometries if s != "A")

    def unit_cell(self, a_species: str, b_species: str | None = None) -> Structure:
        """Conventional cell with lattice parameter a = 1 (Å); roles A/B filled with the species."""
        b_species = a_species if b_species is None else b_species
        matrix, roles, frac = _cell_template(self)
        species = [a_species if role == "A" else b_species for role in roles]
        return Structure(Lattice(matrix), species, frac)

    def site_counts(self) -> dict[str, int]:
        """Atoms per conventional cell on the A and B sites."""
        cell = self.unit_cell("Li", "Na")
        comp = cell.composition
        return {"A": int(comp["Li"]), "B": int(comp["Na"])}


@lru_cache(maxsize=None)
def _cell_template(proto: Prototype) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """(lattice matrix, role of each site, fractional coordinates) of the a = 1 conventional cell.

    Built once per prototype with ``Structure.from_spacegroup`` (slow) using stand-in species for the
    roles, so that the Wyckoff orbits of A and B never merge.
    """
    lattice = Lattice.cubic(1.0) if proto.lattice == "cubic" else Lattice.hexagonal(1.0, proto.c_over_a)
    stand_in = {"A": "Li", "B": "Na"}
    species = [stand_in[role] for role, _ in proto.sites]
    coords = [list(xyz) for _, xyz in proto.sites]
    cell = Structure.from_spacegroup(proto.spacegroup, lattice, species, coords)
    cell.merge_sites(tol=1e-3, mode="delete")
    roles = tuple("A" if site.specie.symbol == "Li" else "B" for site in cell)
    return cell.lattice.matrix.copy(), roles, np.mod(np.round(cell.frac_coords, 12), 1.0)


_P = Prototype
PROTOTYPES: dict[str, Prototype] = {
    p.name: p
    for p in [
        _P("fcc", "Fm-3m", 225, "cubic", (("A", (0.0, 0.0, 0.0)),), ("A",), "fcc",
           "A1 (Cu): metal sublattice of LaH10, CeH10, ThH10 (Fm-3m)", unary_number=225),
        _P("bcc", "Im-3m", 229, "cubic", (("A", (0.0, 0.0, 0.0)),), ("A",), "bcc",
           "A2 (W): metal sublattice of CaH6, YH6 (Im-3m)", unary_number=229),
        _P("hcp", "P6_3/mmc", 194, "hexagonal", (("A", (1 / 3, 2 / 3, 0.25)),), ("A",), "hcp",
           "A3 (Mg), ideal c/a = √(8/3): metal sublattice of YH9, CeH9, ThH9 (P6_3/mmc)",
           c_over_a=IDEAL_C_OVER_A, unary_number=194),
        _P("sc", "Pm-3m", 221, "cubic", (("A", (0.0, 0.0, 0.0)),), ("A",), "sc",
           "A_h (α-Po) simple cubic", unary_number=221),
        _P("A15", "Pm-3n", 223, "cubic", (("B", (0.0, 0.0, 0.0)), ("A", (0.25, 0.0, 0.5))), ("A", "A3B"), "A15",
           "A15 (Cr3Si): 2a + 6c, the metal sublattice of La4H23 (Pm-3n); binary A3B with A on 6c",
           unary_number=223),
        _P("B2", "Pm-3m", 221, "cubic", (("A", (0.0, 0.0, 0.0)), ("B", (0.5, 0.5, 0.5))), ("AB",), "bcc",
           "B2 (CsCl) AB; its unary form is bcc", unary_number=229),
        _P("L1_2", "Pm-3m", 221, "cubic", (("B", (0.0, 0.0, 0.0)), ("A", (0.0, 0.5, 0.5))), ("A3B", "AB3"), "fcc",
           "L1_2 (Cu3Au) A3B/AB3; its unary form is fcc", unary_number=225, aliases=("L12",)),
        _P("C15", "Fd-3m", 227, "cubic", (("B", (0.0, 0.0, 0.0)), ("A", (0.625, 0.625, 0.625))), ("A2B", "AB2"), "fcc",
           "C15 cubic Laves (MgCu2) AB2/A2B, origin choice 1: B on 8a, A on 16d", unary_number=227),
        _P("AlB2", "P6/mmm", 191, "hexagonal", (("B", (0.0, 0.0, 0.0)), ("A", (1 / 3, 2 / 3, 0.5))), ("A2B", "AB2"), "hcp",
           "C32 (AlB2) hexagonal AB2/A2B, c/a = 1.084 of AlB2: B on 1a, A on 2d", c_over_a=ALB2_C_OVER_A,
           unary_number=191),
    ]
}
#: prototypes whose equation of state is fitted per element (unary forms)
UNARY_PROTOTYPES: tuple[str, ...] = tuple(n for n, p in PROTOTYPES.items() if p.is_unary)
#: prototypes that take two elements
BINARY_PROTOTYPES: tuple[str, ...] = tuple(n for n, p in PROTOTYPES.items() if p.binary_stoichiometries)


def get_prototype(name: str) -> Prototype:
    """The registry entry for ``name`` (case-insensitive, ``L12`` = ``L1_2``); :class:`InputError` if unknown."""
    key = str(name).strip()
    for proto in PROTOTYPES.values():
        if key.lower() == proto.name.lower() or key.lower() in (a.lower() for a in proto.aliases):
            return proto
    raise InputError(f"unknown prototype {name!r} (known: {', '.join(PROTOTYPES)})")


def roles_for(stoichiometry: str, element_a: str, element_b: str | None) -> tuple[str, str | None]:
    """Species on the prototype's A and B roles for a formula written with ``element_a`` first.

    ``AB3`` means one ``element_a`` per three ``element_b``; the prototype's role ``A`` is its majority
    site, so the roles swap for ``AB3`` and ``AB2`` (the minority element goes on role ``B``).
    """
    if stoichiometry == "A":
        return element_a, None
    if stoichiometry in ("AB", "A3B", "A2B"):
        return element_a, element_b
    if stoichiometry in ("AB3", "AB2"):
        return element_b, element_a
    raise InputError(f"unknown stoichiometry {stoichiometry!r}")


def build_prototype(name: str, element_a: str, element_b: str | None = None, volume_per_atom: float = 1.0,
                    stoichiometry: str | None = None) -> Structure:
    """The conventional cell of prototype ``name`` at ``volume_per_atom`` (Å³/atom).

    Args:
        name: prototype key.
        element_a: first element of the formula.
        element_b: second element (binaries).
        volume_per_atom: target volume per atom (Å³).
        stoichiometry: one of the prototype's stoichiometries; default its first (``A`` for unary ones).
    """
    proto = get_prototype(name)
    if stoichiometry is None:
        stoichiometry = "A" if element_b is None else proto.binary_stoichiometries[0] if proto.binary_stoichiometries else "A"
    if stoichiometry not in proto.stoichiometries:
        raise InputError(f"prototype {proto.name} has no {stoichiometry} form (it builds {', '.join(proto.stoichiometries)})")
    if stoichiometry != "A" and element_b is None:
        raise InputError(f"prototype {proto.name} {stoichiometry} needs two elements")
    if stoichiometry != "A" and element_b == element_a:
        raise InputError(f"prototype {proto.name} {stoichiometry} needs two different elements")
    if not volume_per_atom > 0:
        raise InputError(f"volume per atom must be positive, got {volume_per_atom}")
    a_sp, b_sp = roles_for(stoichiometry, element_a, element_b)
    cell = proto.unit_cell(a_sp, b_sp)
    cell.scale_lattice(volume_per_atom * len(cell))
    return cell


def wyckoff_fractions(structure: Structure) -> np.ndarray:
    """Fractional coordinates wrapped to [0, 1) (small helper for tests and fingerprints)."""
    return np.mod(np.round(structure.frac_coords, 10), 1.0)
