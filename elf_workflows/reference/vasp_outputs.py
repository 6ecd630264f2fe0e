"""Minimal vasprun.xml, OUTCAR and custodian.json of a GPAW result, for mock-VASP fixtures.

:func:`write_vasprun_outcar` writes the two files that atomate2's ``get_vasp_task_document``
(emmet ``TaskDoc.from_directory`` → pymatgen ``Vasprun``/``Outcar``) needs, from a
:class:`~elf_workflows.reference.ReferenceResult` and the INCAR/KPOINTS/POTCAR.spec the Maker wrote.
They hold only what the GPAW result knows: the cell (initial = final, one ionic step, zero forces
and stress), the INCAR and k-point mesh, the final energy (GPAW's σ→0 extrapolated energy, written
to ``e_0_energy``, ``e_fr_energy`` and ``e_wo_entrp`` alike: the entropy term is not kept), the
valence electron count and the wall/CPU time. No eigenvalues, Fermi level or DOS (the GPAW result
does not carry them), so emmet reports no band gap. The ``generator`` block names GPAW, not VASP.

:func:`write_custodian_record` writes the ``custodian.json`` a clean custodian run of atomate2's
``run_vasp`` leaves (one ``VaspJob``, no corrections).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from pymatgen.core import Element, Structure

from elf_workflows.errors import InputError

#: Values VASP writes into vasprun.xml's ``parameters`` for an ELF static when the INCAR does not
#: set them (VASP defaults for NSW = 0, no spin-orbit, no DFT+U)
_PARAMETER_DEFAULTS: dict[str, Any] = {
    "IBRION": -1, "NSW": 0, "ISIF": 2, "ISPIN": 1, "LSORBIT": False, "LNONCOLLINEAR": False,
    "LDAU": False, "LHFCALC": False, "METAGGA": "--", "LORBIT": -1, "NELM": 60, "LEPSILON": False,
    "LOPTICS": False, "LCHIMAG": False,
}

#: POTCAR titles written to ``atominfo`` (PBE_54 set, as atomate2 picks)
_POTCAR_TITLES: dict[str, str] = {"Al": "PAW_PBE Al 04Jan2001"}


def default_nbands(nelect: float, nions: int) -> int:
    """VASP's default NBANDS without spin: ``max(NINT(NELECT+2)/2 + max(NIONS/2, 3), INT(0.6 NELECT))``.

    (Fortran integer division; the GPAW result does not keep its band count.)
    """
    return max(int(round(nelect + 2)) // 2 + max(nions // 2, 3), int(0.6 * nelect))


def _xml_value(name: str, value: Any) -> str:
    """One ``<i>`` (scalar) or ``<v>`` (list) element of an incar/parameters block."""
    if isinstance(value, bool):
        return f'  <i type="logical" name="{name}"> {"T" if value else "F"}  </i>'
    if isinstance(value, int):
        return f'  <i type="int" name="{name}">{value:8d}</i>'
    if isinstance(value, float):
        return f'  <i name="{name}">{value:16.8f}</i>'
    if isinstance(value, (list, tuple)):
        kind = ' type="int"' if all(isinstance(v, int) and not isinstance(v, bool) for v in value) else ""
        return f'  <v{kind} name="{name}">' + " ".join(f"{v}" for v in value) + " </v>"
    return f'  <i type="string" name="{name}">{escape(str(value))}</i>'


def _varray(name: str, rows: np.ndarray) -> str:
    body = "\n".join("   <v>" + " ".join(f"{x:18.12f}" for x in row) + " </v>" for row in np.atleast_2d(rows))
    return f'  <varray name="{name}" >\n{body}\n  </varray>'


def _structure_xml(structure: Structure, name: str | None) -> str:
    attr = f' name="{name}"' if name else ""
    lat = structure.lattice
    return "\n".join([
        f" <structure{attr} >", "  <crystal>", _varray("basis", lat.matrix),
        f'   <i name="volume">{lat.volume:18.12f} </i>',
        _varray("rec_basis", lat.reciprocal_lattice_crystallographic.matrix), "  </crystal>",
        _varray("positions", structure.frac_coords), " </structure>"])


def _energy_xml(energy_ev: float, indent: str) -> str:
    return "\n".join([f"{indent}<energy>", *(f'{indent} <i name="{k}">{energy_ev:18.8f} </i>'
                                             for k in ("e_fr_energy", "e_wo_entrp", "e_0_energy")),
                      f"{indent}</energy>"])


def _atominfo_xml(structure: Structure, potcar_symbols: list[str], valences: dict[str, float]) -> str:
    species = [s.specie.symbol for s in structure]
    types = list(dict.fromkeys(species))
    atoms = "\n".join(f"    <rc><c>{el:2s}</c><c>{types.index(el) + 1:4d}</c></rc>" for el in species)
    rows = []
    for el, sym in zip(types, potcar_symbols, strict=True):
        mass = float(Element(el).atomic_mass)
        title = _POTCAR_TITLES.get(sym, f"PAW_PBE {sym}")
        rows.append(f"    <rc><c>{species.count(el):4d}</c><c>{el:2s}</c><c>{mass:16.8f}</c>"
                    f"<c>{valences[el]:16.8f}</c><c>  {title}</c></rc>")
    return "\n".join([
        " <atominfo>", f"  <atoms>{len(species):8d} </atoms>", f"  <types>{len(types):8d} </types>",
        '  <array name="atoms" >', '   <dimension dim="1">ion</dimension>',
        '   <field type="string">element</field>', '   <field type="int">atomtype</field>',
        "   <set>", atoms, "   </set>", "  </array>",
        '  <array name="atomtypes" >', '   <dimension dim="1">type</dimension>',
        '   <field type="int">atomspertype</field>', '   <field type="string">element</field>',
        "   <field>mass</field>", "   <field>valence</field>",
        '   <field type="string">pseudopotential</field>', "   <set>", *rows, "   </set>", "  </array>",
        " </atominfo>"])


def irreducible_kpoints(structure: Structure, kpoints) -> tuple[np.ndarray, np.ndarray]:
    """Irreducible k-points (fractional) and weights (sum 1) of the automatic mesh of ``kpoints`` (spglib)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    mesh = [int(x) for x in kpoints.kpts[0]]
    shifted = not kpoints.style.name.lower().startswith("gamma") and all(n % 2 == 0 for n in mesh)
    ir = SpacegroupAnalyzer(structure).get_ir_reciprocal_mesh(mesh, is_shift=(shifted,) * 3)
    weights = np.array([w for _, w in ir], float)
    return np.array([k for k, _ in ir], float), weights / weights.sum()


def _kpoints_xml(kpoints, kpts: np.ndarray, weights: np.ndarray) -> str:
    """``kpoints`` block: the automatic mesh and its irreducible k-points with weights."""
    style = "Gamma" if kpoints.style.name.lower().startswith("gamma") else "Monkhorst-Pack"
    mesh = [int(x) for x in kpoints.kpts[0]]
    shift = [float(x) for x in (kpoints.kpts_shift or (0, 0, 0))]
    return "\n".join([
        " <kpoints>", f'  <generation param="{style}">',
        '   <v type="int" name="divisions">' + " ".join(f"{n:8d}" for n in mesh) + " </v>",
        '   <v name="usershift">' + " ".join(f"{x:16.8f}" for x in shift) + " </v>",
        "  </generation>", _varray("kpointlist", kpts), _varray("weights", weights[:, None]), " </kpoints>"])


def vasprun_xml(result, incar: dict[str, Any], kpoints, potcar_symbols: list[str],
                irreducible: tuple[np.ndarray, np.ndarray] | None = None) -> str:
    """Text of a minimal vasprun.xml of ``result`` (a :class:`~elf_workflows.reference.ReferenceResult`).

    Args:
        result: GPAW result (structure, ``energy_ev`` in eV, ``density`` in e/Å³).
        incar: INCAR the Maker wrote (written verbatim to ``incar``; with VASP defaults to ``parameters``).
        kpoints: pymatgen ``Kpoints`` the Maker wrote (automatic mesh).
        potcar_symbols: POTCAR.spec symbols, one per species in order of appearance.
        irreducible: (k-points, weights) of :func:`irreducible_kpoints` when already computed.
    """
    s = result.structure
    nelect = float(round(result.electrons))
    elements = sorted({site.specie.symbol for site in s})
    if len(elements) != 1:  # the valence of each POTCAR is not in the GPAW result
        raise InputError(f"vasprun.xml of {s.composition.reduced_formula}: only one-element cells are supported")
    valences = {elements[0]: nelect / len(s)}
    params = {**_PARAMETER_DEFAULTS, **{k: v for k, v in incar.items() if v is not None}, "NELECT": nelect,
              "NBANDS": incar.get("NBANDS") or default_nbands(nelect, len(s))}
    version = str(result.settings.get("gpaw_version", "unknown"))
    # the INCAR as written, plus IBRION: without eigenvalues emmet's band-structure step fails and
    # its fallback reads vasprun.incar["IBRION"] (KeyError when the INCAR leaves IBRION unset)
    incar_block = {**incar, "IBRION": incar.get("IBRION", _PARAMETER_DEFAULTS["IBRION"])}
    header = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>', "<modeling>", " <generator>",
        _xml_value("program", "gpaw (written as VASP output by elf_workflows.reference.vasp_outputs)"),
        _xml_value("version", version), _xml_value("subversion", "not VASP"),
        _xml_value("platform", "elf_workflows"), _xml_value("date", "2000 01 01"),
        _xml_value("time", "00:00:00"), " </generator>",
        " <incar>", *(_xml_value(k, v) for k, v in incar_block.items()), " </incar>",
        _kpoints_xml(kpoints, *(irreducible or irreducible_kpoints(s, kpoints))),
        " <parameters>", ' <separator name="elf_workflows" >', *(_xml_value(k, v) for k, v in params.items()),
        " </separator>", " </parameters>",
        _atominfo_xml(s, potcar_symbols, valences),
        _structure_xml(s, "initialpos"),
    ]
    zeros = np.zeros((len(s), 3))
    calculation = [
        " <calculation>", "  <scstep>", _energy_xml(result.energy_ev, "   "), "  </scstep>",
        _structure_xml(s, None), _varray("forces", zeros), _varray("stress", np.zeros((3, 3))),
        _energy_xml(result.energy_ev, "  "),
        f'  <time name="totalsc">{result.seconds:8.2f}{result.seconds:8.2f}</time>', " </calculation>",
    ]
    return "\n".join([*header, *calculation, _structure_xml(s, "finalpos"), "</modeling>", ""])


def outcar_text(result, kpts: np.ndarray) -> str:
    """Text of a minimal OUTCAR: NELECT, band count, final energies (eV) and the timing block (s).

    Plane-wave counts of the irreducible k-points ``kpts`` (fractional; VASP's per-k-point table)
    are written as ``******`` (unknown), which pymatgen reads as ``None``.
    """
    nelect = float(round(result.electrons))
    e = result.energy_ev
    cpu = float(result.convergence.get("cpu_seconds", result.seconds))
    return "\n".join([
        f" gpaw {result.settings.get('gpaw_version', 'unknown')} (written as a VASP OUTCAR by "
        "elf_workflows.reference.vasp_outputs; not a VASP run)",
        " running on    1 total cores",
        f"   NELECT = {nelect:12.4f}    total number of electrons",
        f"   NIONS = {len(result.structure):6d}",
        "   IBRION =     -1    ionic relax: 0-MD 1-quasi-New 2-CG",
        "   ISPIN  =      1    spin polarized calculation?",
        f"   number of bands    NBANDS= {default_nbands(nelect, len(result.structure)):6d}",
        "   total plane-waves  NPLWV = ******",
        "", "", "", "-" * 104, "", "", "",
        *(f" k-point {i + 1:3d} :   {k[0]:.4f}{k[1]:7.4f}{k[2]:7.4f}  plane waves: ******"
          for i, k in enumerate(kpts)),
        "",
        " maximum and minimum number of plane-waves per node :    ******   ******",
        "",
        "  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)",
        "  ---------------------------------------------------",
        f"  free  energy   TOTEN  = {e:18.8f} eV",
        "",
        f"  energy  without entropy= {e:18.8f}  energy(sigma->0) = {e:18.8f}",
        "",
        " General timing and accounting informations for this job:",
        " ========================================================",
        "",
        f"                  Total CPU time used (sec):  {cpu:12.3f}",
        f"                            User time (sec):  {cpu:12.3f}",
        f"                          System time (sec):  {0.0:12.3f}",
        f"                         Elapsed time (sec):  {result.seconds:12.3f}",
        "",
        "                   Maximum memory used (kb):          0.",
        "                   Average memory used (kb):          N/A",
        "",
    ])


def write_vasprun_outcar(result, directory: str | Path, inputs: str | Path) -> list[Path]:
    """Write ``vasprun.xml.gz`` and ``OUTCAR.gz`` of ``result`` into ``directory``.

    Args:
        result: GPAW :class:`~elf_workflows.reference.ReferenceResult`.
        directory: output folder (exists).
        inputs: folder with the INCAR, KPOINTS and POTCAR.spec (or POTCAR) of the run.

    Returns:
        The two files written.
    """
    import gzip

    from pymatgen.io.vasp import Incar, Kpoints, Potcar

    inputs, directory = Path(inputs), Path(directory)
    incar = dict(Incar.from_file(inputs / "INCAR"))
    kpoints = Kpoints.from_file(inputs / "KPOINTS")
    if (inputs / "POTCAR.spec").exists():
        symbols = (inputs / "POTCAR.spec").read_text().split()
    else:
        symbols = Potcar.from_file(inputs / "POTCAR").symbols
    irreducible = irreducible_kpoints(result.structure, kpoints)
    files = {"vasprun.xml.gz": vasprun_xml(result, incar, kpoints, symbols, irreducible),
             "OUTCAR.gz": outcar_text(result, irreducible[0])}
    for name, text in files.items():
        with gzip.open(directory / name, "wt", encoding="ascii") as fh:
            fh.write(text)
    return [directory / name for name in files]


def write_custodian_record(directory: str | Path, vasp_cmd: str = "vasp_std") -> Path:
    """Write the ``custodian.json.gz`` of a clean custodian run of one ``VaspJob`` (no corrections).

    Its layout is custodian's run log (``Custodian.run_log``), as atomate2's ``run_vasp`` leaves it.
    """
    import gzip
    import shlex

    from custodian.vasp.jobs import VaspJob
    from monty.json import jsanitize

    record = [{"job": VaspJob(shlex.split(vasp_cmd)).as_dict(), "corrections": [], "handler": None,
               "validator": None, "max_errors": False, "max_errors_per_job": False,
               "max_errors_per_handler": False, "nonzero_return_code": False}]
    path = Path(directory) / "custodian.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(jsanitize(record, strict=True), fh, indent=1)
    return path
