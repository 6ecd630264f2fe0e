"""Commands ``score``, ``screen``, ``rank`` and ``show``: template strength, screening and the store."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from elf_workflows.errors import InputError

STORE_HELP = "Store: a directory (embedded, no server) or a mongodb:// URI. Default $ELF_WORKFLOWS_STORE, else ./elf_store."


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in str(v).split(",") if x.strip())
    return out


def _pressures(values: list[str] | None) -> list[float]:
    out = []
    for v in _split(values):
        try:
            out.append(float(v))
        except ValueError:
            raise InputError(f"pressure {v!r} is not a number (GPa)") from None
    return out


def score(
    structure_file: Path = typer.Argument(..., help="Structure file (POSCAR, CIF, ...)."),
    elf: Optional[Path] = typer.Option(None, "--elf", help="ELFCAR of the structure; without it the surrogate predicts the ELF."),
    density: Optional[Path] = typer.Option(None, "--density", help="CHGCAR whose valence density the ELF basins partition (default: SAD)."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result only."),
    model: Optional[Path] = typer.Option(None, "--model", help="Surrogate model file (default: the shipped weights)."),
) -> None:
    """Template strength: interstitial ELF attractors, their basin electrons and the score."""
    import numpy as np

    from elf_workflows.io import read_chgcar, read_elfcar, read_structure
    from elf_workflows.screening import score_structure

    structure = read_structure(structure_file)
    if model is not None:
        from elf_workflows.screening import surrogate_model, use_surrogate_model

        use_surrogate_model(surrogate_model(str(model)))
    grid = None
    if elf is not None:
        elf_structure, grid = read_elfcar(elf)
        _check_same_cell(structure, elf_structure, elf)
    rho, source = None, None
    if density is not None:
        chg_structure, rho = read_chgcar(density)
        _check_same_cell(structure, chg_structure, density)
        source = "chgcar"
    result, grid, _, info = score_structure(structure, "surrogate", elf=grid, density=rho, density_source=source)
    report = {
        "formula": structure.composition.reduced_formula,
        "score": result.score,
        "score_formula": result.metrics.get("formula"),
        "elf_source": "file" if elf is not None else "surrogate",
        "model_version": info.get("model_version"),
        "density_source": result.density_source,
        "grid": list(np.shape(grid)),
        "metrics": result.metrics,
        "attractors": [a.as_dict() for a in result.attractors],
        "seconds": result.seconds,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    m = result.metrics
    typer.echo(f"{report['formula']}: score {result.score:.4f} e/metal atom "
               f"({m['n_interstitial']} interstitial, {m['n_atomic']} atomic attractors; "
               f"electrons from {result.density_source})")
    typer.echo(f"{'kind':<13}{'wyckoff':>8}{'mult':>5}{'ELF':>8}{'e':>8}{'V(Å³)':>8}{'∇²ρ(e/Å⁵)':>11}  frac_coords")
    for a in result.attractors:
        coords = " ".join(f"{c:.4f}" for c in a.frac_coords)
        typer.echo(f"{a.kind:<13}{a.wyckoff:>8}{a.multiplicity:>5}{a.elf:>8.3f}{a.electrons:>8.3f}{a.volume:>8.2f}"
                   f"{a.laplacian:>11.4f}  {coords}{'  electride site' if a.electride_site else ''}")


def _check_same_cell(structure, other, path: Path) -> None:
    import numpy as np

    if len(structure) != len(other) or not np.allclose(structure.lattice.matrix, other.lattice.matrix, atol=1e-3):
        raise InputError(f"{path} belongs to another cell than the structure given "
                         f"({other.composition.reduced_formula}, {other.lattice.abc})")


def screen(
    elements: list[str] = typer.Option(..., "--elements", help="Elements, comma-separated (e.g. La,Y,Ca)."),
    prototypes: list[str] = typer.Option(..., "--prototypes", help="Prototypes, comma-separated (fcc,bcc,hcp,A15,...)."),
    pressures: list[str] = typer.Option(..., "--pressures", help="Pressures in GPa, comma-separated."),
    engine: str = typer.Option("surrogate", "--engine", help="ELF engine: surrogate or gpaw."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    binaries: bool = typer.Option(False, "--binaries", help="Also screen binary sublattices of the elements."),
    no_grids: bool = typer.Option(False, "--no-grids", help="Store documents only, not the ELF grids."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on standard error."),
    model: Optional[Path] = typer.Option(None, "--model", help="Surrogate model file (default: the shipped weights)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1,
                                help="Processes computing templates (one thread each); this one stores them."),
) -> None:
    """Generate → SAD → ELF → score → store; skips templates already stored (rerunning never duplicates)."""
    from elf_workflows.errors import EngineError
    from elf_workflows.screening import screen as run_screen
    from elf_workflows.store import TemplateStore

    els, protos, press = _split(elements), _split(prototypes), _pressures(pressures)
    if not els or not protos or not press:
        raise InputError("give at least one element, prototype and pressure")
    if model is not None:
        from elf_workflows.screening import surrogate_model, use_surrogate_model

        use_surrogate_model(surrogate_model(str(model)))
    target = TemplateStore.from_spec(store)
    summary = run_screen(els, protos, press, engine=engine, store=target, binaries=binaries,
                         save_grids=not no_grids, progress=progress, workers=workers)
    typer.echo(f"screened {summary.total} templates with {engine}: {summary.counts()} -> {target.description}",
               err=True)
    from elf_workflows.screening import extrapolation_warning

    if warning := extrapolation_warning(summary):
        typer.echo(warning, err=True)
    target.close()
    if summary.failed:
        tid, reason = next(iter(summary.failed.items()))
        raise EngineError(f"{len(summary.failed)} of {summary.total} templates failed (first: {tid}: {reason}); "
                          "the others are stored, rerun to retry")


def rank(
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    top: Optional[int] = typer.Option(None, "--top", min=1, help="Show the best N."),
    elements: Optional[list[str]] = typer.Option(None, "--elements", help="Only templates containing all these elements."),
    min_pressure: Optional[float] = typer.Option(None, "--min-pressure", help="Lowest pressure (GPa)."),
    max_pressure: Optional[float] = typer.Option(None, "--max-pressure", help="Highest pressure (GPa)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="Only documents of this ELF engine."),
    as_json: bool = typer.Option(False, "--json", help="JSON list on standard output."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV on standard output."),
) -> None:
    """Stored templates by descending score."""
    from elf_workflows.store import TemplateStore

    if as_json and as_csv:
        raise InputError("give either --json or --csv, not both")
    spec = _require_existing(store)
    with TemplateStore.from_spec(spec) as target:
        rows = target.rank(top=top, elements=_split(elements), min_pressure=min_pressure,
                           max_pressure=max_pressure, engine=engine)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if as_csv:
        fields = ["template_id", "formula", "prototype", "pressure_gpa", "score", "engine", "spacegroup",
                  "volume_per_atom", "max_interstitial_elf", "interstitial_electrons"]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    if not rows:
        typer.echo("no templates match", err=True)
        return
    typer.echo(f"{'#':>3}  {'template_id':<34}{'formula':<9}{'proto':<7}{'P(GPa)':>7}{'score':>9}"
               f"{'ELFmax':>8}{'e_int/cell':>11}  engine")
    for i, r in enumerate(rows, 1):
        elf_max = r.get("max_interstitial_elf")
        e_int = r.get("interstitial_electrons")
        typer.echo(f"{i:>3}  {r['template_id']:<34}{r['formula'] or '':<9}{r['prototype'] or '':<7}"
                   f"{_num(r['pressure_gpa'], 7, 0)}{_num(r['score'], 9, 4)}{_num(elf_max, 8, 3)}"
                   f"{_num(e_int, 11, 2)}  {r.get('engine')}")


def _require_existing(store: str | None) -> str:
    """The store spec; an embedded store that does not exist is an error (reading must not create one)."""
    from elf_workflows.errors import StoreError
    from elf_workflows.store import default_store_spec, is_mongo_uri

    spec = store or default_store_spec()
    if not is_mongo_uri(spec) and not Path(spec).is_dir():
        raise StoreError(f"no store at {spec} (run 'elf-workflows screen' first, or give --store)")
    return spec


def _num(x, width: int, digits: int) -> str:
    return f"{x:>{width}.{digits}f}" if isinstance(x, (int, float)) else f"{'-':>{width}}"


def show(
    template_id: str = typer.Argument(..., help="Template id (see 'rank')."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    engine: Optional[str] = typer.Option(None, "--engine", help="ELF engine of the document (default: best score)."),
    elfcar: Optional[Path] = typer.Option(None, "--elfcar", help="Also write the stored ELF grid as an ELFCAR here."),
    chgcar: Optional[Path] = typer.Option(None, "--chgcar", help="Also write the stored SCF density as a CHGCAR here."),
) -> None:
    """One stored template document as JSON (grids are written to files on request, not printed)."""
    from elf_workflows.io import write_chgcar, write_elfcar
    from elf_workflows.store import TemplateStore

    _require_existing(store)
    with TemplateStore.from_spec(store) as target:
        doc = target.get(template_id, engine)
        if elfcar is not None:
            write_elfcar(doc.to_structure(), target.load_grid(doc, "elf"), elfcar)
            typer.echo(f"ELF of {template_id} -> {elfcar}", err=True)
        if chgcar is not None:
            write_chgcar(doc.to_structure(), target.load_grid(doc, "density"), chgcar)
            typer.echo(f"density of {template_id} -> {chgcar}", err=True)
    typer.echo(doc.model_dump_json(indent=2))


def register(app: typer.Typer) -> None:
    app.command("score")(score)
    app.command("screen")(screen)
    app.command("rank")(rank)
    app.command("show")(show)
