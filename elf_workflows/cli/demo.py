"""Command ``demo``: the main job of ``make demo``.

Screens a small, realistic set of metal sublattices with the shipped surrogate into the embedded
store (the pipeline of ``elf-workflows screen``), prints the ranked templates, checks a few of
them against GPAW, and writes the report (ranked table, ranking and parity plots, ELF slices of the
top templates) as PNG + markdown + HTML.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from elf_workflows.errors import EngineError, InputError

DEMO_ELEMENTS = "La,Y,Ca,Ce,Mg,Sc,Sr,Ba,K,Al"
DEMO_PROTOTYPES = "fcc,bcc,hcp,A15"
DEMO_PRESSURES = "100,200,300"


def _split(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _requirements() -> None:
    """A clear one-line error when a part the demo needs is not installed."""
    import importlib

    needed = {
        "elf_workflows.sublattices": "generate_sublattices",
        "elf_workflows.screening": "screen_sublattices",
        "elf_workflows.surrogate": "predict_elf",
        "elf_workflows.store": "TemplateStore",
    }
    for module, attr in needed.items():
        try:
            ok = hasattr(importlib.import_module(module), attr)
        except ImportError:
            ok = False
        if not ok:
            raise EngineError(f"the demo needs {module}.{attr}, which this installation does not have yet")
    from importlib import resources

    if not resources.files("elf_workflows.data").joinpath("surrogate.pt").is_file():
        raise EngineError("the demo needs the shipped surrogate (elf_workflows/data/surrogate.pt), which is missing")


def demo(
    store: Optional[str] = typer.Option(None, "--store", help="Store directory or mongodb:// URI "
                                        "(default: $ELF_WORKFLOWS_STORE, else ./elf_store)."),
    out_dir: Path = typer.Option(Path("demo_report"), "--out-dir", help="Folder of the report (PNG, markdown, HTML)."),
    elements: str = typer.Option(DEMO_ELEMENTS, "--elements", help="Elements, comma-separated."),
    prototypes: str = typer.Option(DEMO_PROTOTYPES, "--prototypes", help="Prototypes, comma-separated."),
    pressures: str = typer.Option(DEMO_PRESSURES, "--pressures", help="Pressures in GPa, comma-separated."),
    top: int = typer.Option(15, "--top", min=1, help="Rows of the ranked table printed and reported."),
    dft_check: int = typer.Option(1, "--dft-check", min=0,
                                  help="Check the best N templates with GPAW (loose settings, primitive cells) "
                                       "for the parity plot; 0 skips it."),
    gpaw_settings: str = typer.Option("loose", "--gpaw-settings", help="GPAW preset of the check."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on standard error."),
    workers: int = typer.Option(min(4, os.cpu_count() or 1), "--workers", "-j", min=1,
                                help="Processes computing templates (one thread each); this one stores them. "
                                     "Default: the cores, at most 4."),
) -> None:
    """The main job: screen a realistic set with the shipped surrogate, print the ranking, write the report."""
    from elf_workflows.report import dft_check as run_dft_check
    from elf_workflows.report import format_table, order_rows, write_report

    start = time.perf_counter()
    els, protos = _split(elements), _split(prototypes)
    try:
        press = [float(p) for p in _split(pressures)]
    except ValueError as exc:
        raise InputError(f"--pressures must be numbers in GPa, got {pressures!r}") from exc
    if not els or not protos or not press:
        raise InputError("give at least one element, prototype and pressure")
    _requirements()
    if dft_check:
        from elf_workflows.jobs import gpaw_settings as check_preset

        check_preset(gpaw_settings)  # an unknown preset fails before any work
    from elf_workflows.screening import screen_sublattices
    from elf_workflows.store import TemplateStore

    target = TemplateStore.from_spec(store)
    target.connect()  # an unreachable store fails before any work
    typer.echo(f"demo: {len(els)} elements x {len(protos)} prototypes x {len(press)} pressures with the shipped "
               f"surrogate -> {target.description}", err=True)
    entries = _sublattices(els, protos, press)
    summary = screen_sublattices(entries, target, engine="surrogate", progress=progress and sys.stderr.isatty(),
                                 workers=workers)
    t_screen = time.perf_counter() - start
    typer.echo(f"screened {summary.total} templates: {summary.counts()}", err=True)
    from elf_workflows.screening import extrapolation_warning

    if warning := extrapolation_warning(summary):
        typer.echo(warning, err=True)
    for tid, reason in list(summary.failed.items())[:5]:
        typer.echo(f"warning: {tid}: {reason}", err=True)

    wanted = set(els)
    rows = [r for r in order_rows(target.rank(engine="surrogate"))
            if r.get("prototype") in protos and r.get("pressure_gpa") in press
            and set(_elements_of(r["formula"])) <= wanted]
    if not rows:
        raise EngineError("no template was scored; see the warnings above")
    typer.echo(format_table(rows[:top]))

    checks: list[dict] = []
    if dft_check:
        ids = _check_candidates(rows, dft_check)
        typer.echo(f"GPAW check ({gpaw_settings}) of {', '.join(ids)} ...", err=True)
        t0 = time.perf_counter()
        try:
            checks = run_dft_check(target, ids, settings=gpaw_settings)
        except ImportError as exc:
            typer.echo(f"warning: GPAW check skipped: {exc}", err=True)
        for c in checks:
            if "reason" in c:
                typer.echo(f"warning: GPAW check of {c['template_id']} failed: {c['reason']}", err=True)
            else:
                typer.echo(f"  {c['template_id']}: score GPAW {c['score_dft']:.3f} vs surrogate {c['score_pred']:.3f} "
                           f"(surrogate ELF with the GPAW density: {c['score_pred_dft_density']:.3f}), "
                           f"ELF voxel MAE {c['elf_voxel_mae']:.3f}", err=True)
        typer.echo(f"GPAW check: {time.perf_counter() - t0:.1f} s", err=True)

    from elf_workflows.surrogate import load_model

    info = {"elements": ",".join(els), "prototypes": ",".join(protos), "pressures (GPa)": ",".join(f"{p:g}" for p in press),
            "templates": summary.total, "computed": len(summary.computed), "failed": len(summary.failed),
            "surrogate": load_model().version, "screening wall time (s)": round(t_screen, 1),
            "store": target.description}
    paths = write_report(target, out_dir, engine="surrogate", top=top, checks=checks, info=info)
    target.close()
    typer.echo(f"report: {paths['markdown']} and {paths['html']} "
               f"({', '.join(p.name for k, p in paths.items() if p.suffix == '.png')}); "
               f"total {time.perf_counter() - start:.1f} s", err=True)


def _sublattices(elements: list[str], prototypes: list[str], pressures: list[float]) -> list[dict]:
    """Sublattice documents of every element x prototype; a combination the sublattice generator
    cannot build (e.g. no equation of state tabulated) is skipped with a warning, not fatal."""
    from elf_workflows.sublattices import generate_sublattices

    entries, skipped = [], []
    for element in elements:
        for prototype in prototypes:
            try:
                entries += generate_sublattices([element], [prototype], pressures)
            except InputError as exc:
                skipped.append((f"{element} {prototype}", str(exc)))
    if skipped:
        typer.echo(f"warning: skipped {len(skipped)} element/prototype pairs the sublattice generator cannot build "
                   f"({', '.join(name for name, _ in skipped)}); first reason: {skipped[0][1]}", err=True)
    if not entries:
        raise InputError("no sublattice could be built from these elements and prototypes")
    return entries


def _elements_of(formula: str) -> list[str]:
    from pymatgen.core import Composition

    return [el.symbol for el in Composition(formula).elements]


def _check_candidates(rows: list[dict], n: int) -> list[str]:
    """The best ``n`` templates, preferring ones whose primitive cell is small (fcc/bcc: one atom)."""
    small = [r for r in rows if r.get("prototype") in ("fcc", "bcc")]
    return [r["template_id"] for r in (small or rows)[:n]]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
