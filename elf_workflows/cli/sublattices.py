"""Command ``sublattices``: prototype metal sublattices at target pressures, or a hydride's metal sublattice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from elf_workflows.errors import InputError


def sublattices(
    elements: Optional[str] = typer.Option(None, "--elements", help="Comma-separated metals, e.g. La,Y,Ca."),
    prototypes: str = typer.Option("fcc,bcc,hcp", "--prototypes",
                                   help="Comma-separated: fcc,bcc,hcp,sc,A15 (unary); B2,L1_2,C15,AlB2 (binary)."),
    pressures: str = typer.Option("0", "--pressures", help="Comma-separated pressures in GPa (0..1000)."),
    binaries: bool = typer.Option(False, "--binaries", help="Also build every pair of the elements on the binary prototypes."),
    from_hydride: Optional[Path] = typer.Option(None, "--from-hydride",
                                                help="Hydride structure file: strip H, keep metal positions and cell."),
    strip: str = typer.Option("H", "--strip", help="With --from-hydride: comma-separated species to remove."),
    strip_nonmetals: bool = typer.Option(False, "--strip-nonmetals", help="With --from-hydride: remove every non-metal."),
    pressure: Optional[float] = typer.Option(None, "--pressure",
                                             help="With --from-hydride: the hydride's pressure (GPa), if known."),
    no_dedupe: bool = typer.Option(False, "--no-dedupe", help="Keep StructureMatcher duplicates."),
    output: Path = typer.Option(Path("sublattices.json"), "-o", "--output", help="JSON file to write."),
) -> None:
    """Metal sublattices as a JSON list of documents (structure, prototype, pressure_gpa, volume_per_atom,
    spacegroup, template_id, eos_source)."""
    from elf_workflows.sublattices import generate_sublattices, sublattice_from_hydride

    if from_hydride is not None:
        if elements is not None:
            raise InputError("give either --elements or --from-hydride, not both")
        docs = [sublattice_from_hydride(from_hydride, strip=[s for s in strip.split(",") if s.strip()],
                                        strip_nonmetals=strip_nonmetals, pressure_gpa=pressure)]
    else:
        if elements is None:
            raise InputError("give --elements (e.g. La,Y,Ca) or --from-hydride FILE")
        if pressure is not None:
            raise InputError("--pressure goes with --from-hydride; use --pressures with --elements")
        docs = generate_sublattices(elements, prototypes, pressures, binaries=binaries, dedupe=not no_dedupe)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(docs, indent=1) + "\n")
    for d in docs:
        p = "-" if d["pressure_gpa"] is None else f"{d['pressure_gpa']:g} GPa"
        typer.echo(f"{d['template_id']}  {d['formula']:8s} {d['prototype']:7s} {d['spacegroup']:10s} "
                   f"{p:>9s}  {d['volume_per_atom']:8.3f} Å³/atom", err=True)
    typer.echo(f"{len(docs)} sublattice(s) -> {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("sublattices")(sublattices)
