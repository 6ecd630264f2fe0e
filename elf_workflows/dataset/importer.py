"""Import VASP ELF runs (as brought home from a cluster) into a reference dataset.

A run folder holds POSCAR or CONTCAR, ELFCAR and optionally CHGCAR, INCAR, KPOINTS, vasprun.xml or
OUTCAR (plain or ``.gz``/``.bz2``, atomate2 style suffixes like ``ELFCAR.relax1.gz`` also found).
VASP writes the ELFCAR on the coarse FFT grid and the CHGCAR on the fine grid: the density is
Fourier-interpolated onto the ELF grid. Without a CHGCAR the SAD density is stored instead and the
record says so (``density_source: "sad"``). A folder that cannot be read becomes a ``failed`` record.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from elf_workflows.dataset.format import SPLITS, DatasetWriter, record_id
from elf_workflows.errors import InputError


def find_file(directory: Path, name: str) -> Path | None:
    """``name`` in ``directory``, or a compressed / suffixed variant (``ELFCAR.gz``, ``ELFCAR.relax1.gz``)."""
    exact = directory / name
    if exact.is_file():
        return exact
    matches = sorted(p for p in directory.glob(f"{name}*") if p.is_file())
    return matches[0] if matches else None


def read_vasp_dir(directory: str | Path) -> dict:
    """Structure, ELF, density (e/Å³), energy and settings of one VASP run folder.

    Raises:
        InputError: no structure or no ELFCAR, or unreadable files.
    """
    from pymatgen.core import Structure

    from elf_workflows.grids import fourier_interpolate
    from elf_workflows.io import read_chgcar, read_elfcar, validate_structure

    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory} is not a directory")
    elfcar = find_file(directory, "ELFCAR")
    if elfcar is None:
        raise InputError(f"{directory}: no ELFCAR (run VASP with LELF = .TRUE.)")
    structure, elf = read_elfcar(elfcar)
    for name in ("CONTCAR", "POSCAR"):
        path = find_file(directory, name)
        if path is not None and path.stat().st_size > 0:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    structure = Structure.from_file(path)
                break
            except Exception:  # noqa: BLE001 - fall back to the ELFCAR's structure
                continue
    structure = validate_structure(structure, name=str(directory))
    chgcar = find_file(directory, "CHGCAR")
    if chgcar is not None:
        _, density = read_chgcar(chgcar)
        if density.shape != elf.shape:
            density = fourier_interpolate(density, elf.shape)
        density_source = f"CHGCAR {chgcar.name}"
    else:
        from elf_workflows.sad import sad_density

        density = sad_density(structure, elf.shape)
        density_source = "sad"
    settings, energy = _vasp_settings(directory)
    return {"structure": structure, "elf": np.asarray(elf, float), "density": np.asarray(density, float),
            "energy_ev": energy, "settings": settings, "density_source": density_source}


def _vasp_settings(directory: Path) -> tuple[dict, float | None]:
    settings: dict = {}
    incar = find_file(directory, "INCAR")
    if incar is not None:
        try:
            from pymatgen.io.vasp.inputs import Incar

            inc = Incar.from_file(incar)
            keys = ("ENCUT", "ISMEAR", "SIGMA", "GGA", "METAGGA", "PREC", "LELF", "ISPIN", "NPAR", "NCORE", "KPAR")
            settings["incar"] = {k: inc[k] for k in keys if k in inc}
        except Exception:  # noqa: BLE001
            pass
    kpoints = find_file(directory, "KPOINTS")
    if kpoints is not None:
        try:
            from pymatgen.io.vasp.inputs import Kpoints

            settings["kpoints"] = [int(x) for x in Kpoints.from_file(kpoints).kpts[0]]
        except Exception:  # noqa: BLE001
            pass
    energy = None
    vasprun = find_file(directory, "vasprun.xml")
    if vasprun is not None:
        try:
            from pymatgen.io.vasp.outputs import Vasprun

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                energy = float(Vasprun(str(vasprun), parse_dos=False, parse_eigen=False,
                                       parse_potcar_file=False).final_energy)
        except Exception:  # noqa: BLE001
            energy = None
    if energy is None:
        outcar = find_file(directory, "OUTCAR")
        if outcar is not None:
            try:
                from pymatgen.io.vasp.outputs import Outcar

                energy = Outcar(str(outcar)).final_energy
                energy = float(energy) if energy is not None else None
            except Exception:  # noqa: BLE001
                energy = None
    return settings, energy


def import_vasp_dirs(dirs: Iterable[str | Path], path: str | Path, split: str = "train",
                     source: str | None = None) -> dict[str, int]:
    """Import VASP run folders into the dataset at ``path``; return ``{"ok", "failed", "skipped"}``.

    Ids hash structure + VASP settings, so importing a folder twice adds nothing. A folder that cannot
    be read is recorded as ``failed`` with the reason (its id hashes the folder path).
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise InputError("no VASP run folders given")
    writer = DatasetWriter(path)
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    for directory in dirs:
        try:
            run = read_vasp_dir(directory)
        except Exception as exc:  # noqa: BLE001 - recorded, not raised
            rid = "dir-" + hashlib.sha1(str(directory.resolve()).encode()).hexdigest()[:12]
            if rid in writer:
                counts["skipped"] += 1
                continue
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            writer.add_failed({"id": rid, "engine": "vasp", "split": split, "source": str(directory),
                               "settings": {}}, text)
            counts["failed"] += 1
            continue
        rid = record_id(run["structure"], "vasp", run["settings"])
        if rid in writer.done_ids(include_failed=False):
            counts["skipped"] += 1
            continue
        from elf_workflows.sad import valence_count

        writer.add({"id": rid, "structure": run["structure"], "engine": "vasp", "settings": run["settings"],
                    "energy_ev": run["energy_ev"], "seconds": None, "split": split,
                    "source": source or str(directory), "density_source": run["density_source"],
                    "electrons": float(run["density"].mean() * run["structure"].volume),
                    "sad": {"module": "elf_workflows.sad", "valence_electrons": valence_count(run["structure"])}},
                   run["elf"], run["density"])
        counts["ok"] += 1
    return counts
