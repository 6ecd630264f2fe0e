"""Command ``reference``: DFT ELF of one structure, computed here with GPAW or prepared for VASP."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from elf_workflows.errors import InputError


def reference(
    structure_file: Path = typer.Argument(..., help="Structure file (POSCAR, CIF, ... anything pymatgen reads)."),
    engine: str = typer.Option("gpaw", "--engine", help="gpaw (computed here) or vasp (inputs only)."),
    output: Path = typer.Option(Path("ELFCAR"), "-o", "--output", help="ELFCAR to write (GPAW)."),
    density_out: Optional[Path] = typer.Option(None, "--density-out",
                                               help="Also write the SCF pseudo valence density as a CHGCAR (ρ·V)."),
    grid: Optional[tuple[int, int, int]] = typer.Option(
        None, "--grid", help="Output grid NX NY NZ (Fourier-interpolated from GPAW's native grid)."),
    preset: str = typer.Option("default", "--preset", help="GPAW settings: default, training or loose."),
    ecut: Optional[float] = typer.Option(None, "--ecut", help="Plane-wave cutoff (eV)."),
    kpoint_density: Optional[float] = typer.Option(None, "--kpoint-density",
                                                   help="k-points per Å⁻¹ of reciprocal length (incl. 2π)."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Native grid spacing (Å)."),
    smearing_width: Optional[float] = typer.Option(None, "--smearing-width", help="Smearing width (eV)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Give up after this many seconds."),
    txt: Optional[Path] = typer.Option(None, "--log", help="GPAW text log file."),
    write_inputs: Optional[Path] = typer.Option(
        None, "--write-inputs", help="VASP: write INCAR, KPOINTS, POSCAR (+POTCAR or POTCAR.spec) here, no run."),
    as_json: bool = typer.Option(False, "--json", help="Print the result's metadata as JSON on stdout."),
) -> None:
    """DFT ELF: GPAW here (PW, PBE; ELFCAR + optional CHGCAR), or the VASP inputs of an LELF static."""
    from elf_workflows.io import read_structure

    engine = engine.lower()
    if engine == "gpaw":
        _check_paw_first(structure_file)
    structure = read_structure(structure_file)
    if engine == "vasp":
        if write_inputs is None:
            raise InputError("VASP does not run here: give --write-inputs DIR to write the inputs of an ELF static")
        from elf_workflows.reference.vasp import write_vasp_inputs

        written = write_vasp_inputs(structure, write_inputs)
        names = ", ".join(p.name for p in written)
        if as_json:
            typer.echo(json.dumps({"engine": "vasp", "directory": str(write_inputs), "files": [p.name for p in written]}))
        typer.echo(f"{structure.composition.reduced_formula}: VASP ELF static inputs -> {write_inputs}/ ({names})",
                   err=True)
        return
    if engine != "gpaw":
        raise InputError(f"unknown engine {engine!r}; use gpaw or vasp")
    if write_inputs is not None:
        raise InputError("--write-inputs is for --engine vasp")
    from elf_workflows.dataset.build import settings_from_options
    from elf_workflows.reference.gpaw import compute_gpaw_elf, result_to_files

    settings = settings_from_options(preset, ecut_ev=ecut, kpoint_density=kpoint_density, grid_spacing=spacing,
                                     smearing_width_ev=smearing_width, timeout_s=timeout)
    start = time.perf_counter()
    result = compute_gpaw_elf(structure, settings, grid, txt=txt)
    result_to_files(result, output, density_out)
    meta = result.metadata()
    if as_json:
        typer.echo(json.dumps(meta, indent=2))
    shape = "x".join(map(str, result.shape))
    k = "x".join(map(str, result.settings["kpoints"]))
    extra = f", density -> {density_out}" if density_out else ""
    typer.echo(
        f"{structure.composition.reduced_formula}: GPAW PW {settings.ecut_ev:g} eV, k {k}, {result.iterations} SCF "
        f"iterations, E = {result.energy_ev:.4f} eV, ELF in [{result.elf.min():.3f}, {result.elf.max():.3f}] on "
        f"{shape}, {result.electrons:.4f} e, {time.perf_counter() - start:.1f} s -> {output}{extra}", err=True)


def _check_paw_first(path: Path) -> None:
    """A missing GPAW PAW dataset (Th, U...) is the error to report, before any other element check."""
    import warnings

    from pymatgen.core import Structure

    from elf_workflows.reference.gpaw import check_paw_datasets

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_file(path)
    except Exception:  # noqa: BLE001 - read_structure reports unreadable files
        return
    check_paw_datasets(structure)


def register(app: typer.Typer) -> None:
    app.command("reference")(reference)
