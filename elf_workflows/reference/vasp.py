"""VASP reference ELF through atomate2: an ELF static Maker, its grid document, and input writing.

:class:`VaspElfMaker` is atomate2's :class:`~atomate2.vasp.jobs.core.StaticMaker` configured for
ELF: ``LELF = True`` with the parallel layout VASP's ELF routine needs (``NPAR = 1``, ``KPAR = 1``;
``NCORE`` removed), ``LCHARG = True`` so the CHGCAR is kept beside the ELFCAR, smeared occupations
for metals and no spin polarisation (like the GPAW engine). VASP runs under custodian with the
error handlers atomate2 uses (``run_vasp_kwargs`` as in any atomate2 Maker). After the run the
ELFCAR and CHGCAR are parsed with pymatgen into an :class:`ElfGridDocument`; its ``elf`` and
``density`` arrays go to the JobStore's additional store ``data``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from atomate2.vasp.jobs.core import StaticMaker
from jobflow import Response, job
from pydantic import BaseModel, Field
from pymatgen.core import Structure

from elf_workflows.errors import EngineError, InputError

#: INCAR settings of an ELF static (on top of atomate2's static set)
ELF_INCAR: dict[str, Any] = {
    "LELF": True,       # write ELFCAR
    "LCHARG": True,     # keep CHGCAR (SCF pseudo valence density + compensation, ρ·V)
    "LAECHG": False,
    "LWAVE": False,
    "NPAR": 1,          # VASP's ELF routine does not support band-group (NCORE) parallelisation
    "NCORE": None,      # removed: NPAR = 1 is the whole band layout
    "KPAR": 1,          # nor k-point parallelisation
    "ISPIN": 1,         # non-magnetic, as the GPAW engine
    "MAGMOM": None,
    "ISMEAR": 1,        # Methfessel-Paxton for metals
    "SIGMA": 0.2,
    "PREC": "Accurate",  # fine FFT grids avoid wrap-around in the ELF (VASP manual)
    "ENCUT": 520,
    "GGA": "PE",        # PBE, as the GPAW engine (atomate2's base set defaults to PBEsol)
    "LVTOT": False,
    "EDIFF": 1e-6,
    "LREAL": False,
    "LORBIT": None,
}

#: k-point density of the ELF static (k-points per reciprocal atom)
KPOINTS_SETTINGS: dict[str, Any] = {"reciprocal_density": 200}


class ElfGridDocument(BaseModel):
    """ELF and SCF density grids of one DFT run (big arrays routed to the ``data`` store).

    Grids follow VASP: ``elf[i][j][k]`` at fractional ``(i/nx, j/ny, k/nz)``; ``density`` in e/Å³ on
    the ELF grid (Fourier-interpolated from the CHGCAR's fine grid when they differ).
    """

    structure: Structure = Field(description="Cell of the run (CONTCAR/ELFCAR)")
    formula: str = Field(description="Reduced formula")
    engine: str = Field("vasp", description="vasp or gpaw")
    shape: list[int] = Field(description="[nx, ny, nz] of elf and density")
    elf: list = Field(description="ELF grid, nested lists (dimensionless)")
    density: list | None = Field(None, description="SCF pseudo valence density (e/Å³) on the ELF grid")
    electrons: float | None = Field(None, description="Integral of density over the cell")
    elf_max: float = Field(description="Largest ELF value")
    energy_ev: float | None = Field(None, description="Final energy (eV)")
    dir_name: str | None = Field(None, description="Run directory")
    task_label: str | None = Field(None, description="Job name")
    settings: dict = Field(default_factory=dict, description="INCAR and k-points of the run")
    task_id: str | None = Field(None, description="Task document id when parsed")

    model_config = {"arbitrary_types_allowed": True}

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(elf, density)`` as numpy arrays."""
        return np.asarray(self.elf, float), None if self.density is None else np.asarray(self.density, float)


def grid_document_from_directory(directory: str | Path, task_label: str | None = None,
                                 energy_ev: float | None = None) -> ElfGridDocument:
    """Parse a finished VASP ELF run folder (ELFCAR [+ CHGCAR], gz allowed) into an :class:`ElfGridDocument`."""
    from elf_workflows.dataset.importer import read_vasp_dir

    try:
        run = read_vasp_dir(directory)
    except InputError as exc:
        raise EngineError(f"VASP ELF run in {directory} has no usable output: {exc}") from exc
    elf, density = run["elf"], run["density"]
    structure = run["structure"]
    has_density = run["density_source"] != "sad"
    return ElfGridDocument(
        structure=structure, formula=structure.composition.reduced_formula, engine="vasp",
        shape=list(elf.shape), elf=elf.tolist(), density=density.tolist() if has_density else None,
        electrons=float(density.mean() * structure.volume) if has_density else None,
        elf_max=float(elf.max()), energy_ev=energy_ev if energy_ev is not None else run["energy_ev"],
        dir_name=str(Path(directory).resolve()), task_label=task_label, settings=run["settings"])


def _elf_static_generator():
    from atomate2.vasp.sets.core import StaticSetGenerator

    return StaticSetGenerator(user_incar_settings=dict(ELF_INCAR), user_kpoints_settings=dict(KPOINTS_SETTINGS))


@dataclass
class VaspElfMaker(StaticMaker):
    """atomate2 Maker of a VASP ELF static (LELF) whose output is an :class:`ElfGridDocument`.

    All :class:`~atomate2.vasp.jobs.core.StaticMaker` fields apply (``run_vasp_kwargs`` for the
    VASP command and custodian handlers, ``input_set_generator`` for INCAR/KPOINTS changes).

    Args:
        name: job name.
        input_set_generator: atomate2 static set with :data:`ELF_INCAR` and :data:`KPOINTS_SETTINGS`.
        parse_task_document: also build atomate2's ``TaskDoc`` (needs vasprun.xml and OUTCAR); its
            energy is used and the TaskDoc's custodian record is stored.
    """

    name: str = "elf static"
    input_set_generator: Any = field(default_factory=_elf_static_generator)
    parse_task_document: bool = True

    @job(data=["elf", "density"], output_schema=ElfGridDocument)
    def make(self, structure: Structure, prev_dir: str | Path | None = None) -> Response:
        """Write inputs, run VASP (custodian), parse ELFCAR/CHGCAR into an :class:`ElfGridDocument`."""
        from atomate2.vasp.files import copy_vasp_outputs, write_vasp_input_set
        from atomate2.vasp.jobs.base import get_vasp_task_document
        from atomate2.vasp.run import run_vasp

        if prev_dir is not None:
            copy_vasp_outputs(prev_dir, **self.copy_vasp_kwargs)
        self.write_input_set_kwargs.setdefault("from_prev", prev_dir is not None)
        write_vasp_input_set(structure, self.input_set_generator, **self.write_input_set_kwargs)
        _run_vasp(run_vasp, self.run_vasp_kwargs)
        energy = None
        stored: dict = {}
        if self.parse_task_document:
            kwargs = dict(self.task_document_kwargs)
            kwargs.setdefault("store_volumetric_data", ())
            task_doc = get_vasp_task_document(Path.cwd(), **kwargs)
            energy = task_doc.output.energy if task_doc.output else None
            stored = {"custodian": task_doc.custodian}
        doc = grid_document_from_directory(Path.cwd(), task_label=self.name, energy_ev=energy)
        return Response(output=doc, stored_data=stored or None)


def _run_vasp(run_vasp, kwargs: dict) -> None:
    """Call atomate2's ``run_vasp`` (custodian). Looked up at call time so atomate2's mock can patch it."""
    import atomate2.vasp.jobs.base as base

    (getattr(base, "run_vasp", None) or run_vasp)(**kwargs)


def potcars_configured() -> bool:
    """True when pymatgen knows a POTCAR directory (``PMG_VASP_PSP_DIR`` in env or ~/.config/.pmgrc.yaml)."""
    import os

    from pymatgen.core import SETTINGS

    path = os.environ.get("PMG_VASP_PSP_DIR") or SETTINGS.get("PMG_VASP_PSP_DIR")
    return bool(path) and Path(path).is_dir()


def write_vasp_inputs(structure: Structure, directory: str | Path, maker: VaspElfMaker | None = None) -> list[Path]:
    """Write INCAR, KPOINTS, POSCAR and POTCAR (or ``POTCAR.spec`` without configured POTCARs); no run.

    Returns:
        The files written.
    """
    from atomate2.vasp.files import write_vasp_input_set

    maker = maker or VaspElfMaker()
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    spec = not potcars_configured()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            write_vasp_input_set(structure, maker.input_set_generator, directory=directory, potcar_spec=spec)
        except Exception as exc:  # noqa: BLE001 - pymatgen/atomate2 raise many kinds
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"cannot write VASP inputs for {structure.composition.reduced_formula}: {msg}") from exc
    names = ["INCAR", "KPOINTS", "POSCAR", "POTCAR.spec" if spec else "POTCAR"]
    return [directory / n for n in names if (directory / n).exists()]


def write_vasp_outputs(result, directory: str | Path, inputs: str | Path | None = None) -> Path:
    """Write a :class:`~elf_workflows.reference.ReferenceResult` as the outputs of a VASP ELF run.

    Writes ELFCAR, CHGCAR (ρ·V) and CONTCAR (gzipped, as atomate2 leaves them). With ``inputs`` (the
    folder holding the INCAR, KPOINTS and POTCAR.spec of the run) also a minimal vasprun.xml.gz and
    OUTCAR.gz and a clean custodian.json.gz (:mod:`elf_workflows.reference.vasp_outputs`), so
    atomate2's TaskDoc parsing runs on the folder. Used to build mock-VASP fixtures from a GPAW
    result; the files are what pymatgen's Elfcar/Chgcar/Vasprun/Outcar read.
    """
    import gzip
    import shutil

    from pymatgen.io.vasp import Poscar

    from elf_workflows.io import write_chgcar, write_elfcar
    from elf_workflows.reference.vasp_outputs import write_custodian_record, write_vasprun_outcar

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_elfcar(result.structure, result.elf, directory / "ELFCAR")
    write_chgcar(result.structure, result.density, directory / "CHGCAR")
    Poscar(result.structure).write_file(directory / "CONTCAR")
    for name in ("ELFCAR", "CHGCAR", "CONTCAR"):
        with open(directory / name, "rb") as src, gzip.open(directory / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        (directory / name).unlink()
    if inputs is not None:
        write_vasprun_outcar(result, directory, inputs)
        write_custodian_record(directory)
    return directory
