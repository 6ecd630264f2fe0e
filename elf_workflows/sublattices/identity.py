"""Identity of sublattices: a deterministic ``template_id`` and deduplication with ``StructureMatcher``.

The id is the SHA-1 of a canonical, setting-independent fingerprint: spglib's standardized primitive
cell, Niggli-reduced, described by its space-group number, reduced formula, the sorted multiset of
site environments (Z and the 14 nearest neighbours' Z and distances to 0.01 Å), the Niggli lattice
parameters (Å to 1e-3, degrees to 1e-2), the volume per atom and the pressure (GPa to 0.1, or
``none``). Origin shifts, other settings and supercells of the
same crystal give the same fingerprint; a different volume, species or pressure gives another.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable, Sequence

import numpy as np
import spglib
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from elf_workflows.errors import InputError

#: spglib tolerance (Å) for fingerprints
SYMPREC = 1e-3


def _spglib_cell(structure: Structure):
    return (structure.lattice.matrix, structure.frac_coords, [site.specie.Z for site in structure])


def canonical_structure(structure: Structure, symprec: float = SYMPREC) -> Structure:
    """spglib's standardized primitive cell, Niggli-reduced (the same for every setting and supercell)."""
    cell = spglib.standardize_cell(_spglib_cell(structure), to_primitive=True, no_idealize=False, symprec=symprec)
    if cell is None:
        raise InputError(f"spglib could not standardize {structure.composition.reduced_formula}")
    lattice, frac, numbers = cell
    prim = Structure(Lattice(lattice), [int(z) for z in numbers], frac)
    return prim.get_reduced_structure("niggli")


def symmetry_dataset(structure: Structure, symprec: float = SYMPREC):
    """spglib's symmetry dataset of ``structure``; :class:`InputError` when spglib finds none."""
    dataset = spglib.get_symmetry_dataset(_spglib_cell(structure), symprec=symprec)
    if dataset is None:
        raise InputError(f"spglib found no symmetry for {structure.composition.reduced_formula}")
    return dataset


def fingerprint(structure: Structure, pressure_gpa: float | None, symprec: float = SYMPREC, dataset=None) -> dict:
    """The setting-independent description the id is hashed from (``dataset``: spglib's symmetry
    dataset of ``structure`` at ``symprec`` when the caller already has it)."""
    if dataset is None:
        dataset = spglib.get_symmetry_dataset(_spglib_cell(structure), symprec=symprec)
    if dataset is None:
        raise InputError(f"spglib found no symmetry for {structure.composition.reduced_formula}")
    canon = canonical_structure(structure, symprec)
    lat = canon.lattice
    abc = sorted(np.round(lat.abc, 3).tolist())
    angles = sorted(np.round(lat.angles, 2).tolist())
    comp = canon.composition.reduced_composition
    return {
        "spacegroup": int(dataset.number),
        "formula": comp.alphabetical_formula.replace(" ", ""),
        "natoms_primitive": len(canon),
        "sites": _site_environments(canon),
        "abc": [f"{x:.3f}" for x in abc],
        "angles": [f"{x:.2f}" for x in angles],
        "volume_per_atom": f"{canon.volume / len(canon):.3f}",
        "pressure_gpa": "none" if pressure_gpa is None else f"{float(pressure_gpa):.1f}",
    }


def _site_environments(canon: Structure, n_neighbours: int = 14) -> list[str]:
    """Per site: its Z and the (Z, distance to 0.01 Å) of its nearest neighbours, sorted; invariant
    under origin shifts and settings (unlike Wyckoff letters, which the Euclidean normalizer permutes)."""
    scale = (canon.volume / len(canon)) ** (1.0 / 3.0)
    out = []
    for site in canon:
        r = 1.8 * scale
        while True:
            neigh = canon.get_neighbors(site, r)
            if len(neigh) >= n_neighbours:
                break
            r *= 1.3
        shell = sorted((round(float(n.nn_distance), 2), int(n.specie.Z)) for n in neigh)[:n_neighbours]
        out.append(f"{site.specie.Z}|" + ",".join(f"{z}:{d:.2f}" for d, z in shell))
    return sorted(out)


def template_id(structure: Structure, pressure_gpa: float | None, dataset=None) -> str:
    """Deterministic id of a sublattice at a pressure: ``"tpl-"`` + 16 hex digits of a SHA-1.

    The same sublattice (any setting, origin or supercell) at the same pressure always gets the same
    id; the pressure is rounded to 0.1 GPa (``None`` for a sublattice without one). ``dataset``:
    spglib's symmetry dataset of ``structure`` (at :data:`SYMPREC`) if already computed.
    """
    blob = json.dumps(fingerprint(structure, pressure_gpa, dataset=dataset), sort_keys=True, separators=(",", ":"))
    return "tpl-" + hashlib.sha1(blob.encode()).hexdigest()[:16]


def default_matcher() -> StructureMatcher:
    """StructureMatcher for sublattices: no volume scaling (a compressed cell is a different template)."""
    return StructureMatcher(ltol=0.05, stol=0.1, angle_tol=2.0, primitive_cell=True, scale=False,
                            attempt_supercell=True)


def deduplicate(documents: Sequence[dict], matcher: StructureMatcher | None = None) -> list[dict]:
    """Drop documents whose structure matches an earlier one at the same pressure (first one kept).

    Candidates are compared with ``StructureMatcher`` only within the same pressure, reduced formula
    and space group.

    Documents need ``structure`` (a :class:`Structure` or its dict) and ``pressure_gpa``; documents
    with the same ``template_id`` are duplicates without calling the matcher.
    """
    matcher = matcher or default_matcher()
    kept: list[dict] = []
    seen_ids: set[str] = set()
    by_key: dict[tuple, list[Structure]] = {}
    for doc in documents:
        tid = doc.get("template_id")
        if tid is not None and tid in seen_ids:
            continue
        s = doc["structure"]
        s = s if isinstance(s, Structure) else Structure.from_dict(s)
        p = doc.get("pressure_gpa")
        # only structures with the same pressure, formula and space group are compared (the matcher is slow)
        sg = doc.get("spacegroup_number") or spglib.get_symmetry_dataset(_spglib_cell(s), symprec=SYMPREC).number
        key = (None if p is None else round(float(p), 1), s.composition.reduced_formula, int(sg))
        if any(matcher.fit(s, other) for other in by_key.get(key, [])):
            continue
        by_key.setdefault(key, []).append(s)
        if tid is not None:
            seen_ids.add(tid)
        kept.append(doc)
    return kept


def group_equivalent(structures: Iterable[Structure], matcher: StructureMatcher | None = None) -> list[list[Structure]]:
    """Group structures that ``StructureMatcher`` finds equivalent (no volume scaling)."""
    return (matcher or default_matcher()).group_structures(list(structures))
