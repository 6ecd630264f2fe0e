"""Commands ``dataset build | import | export | info``: reference ELF datasets for training and evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from elf_workflows.errors import InputError

dataset_app = typer.Typer(help="Reference ELF datasets: build with GPAW, import VASP runs, inspect.",
                          no_args_is_help=True)


@dataset_app.command("build")
def build(
    inputs: list[Path] = typer.Argument(..., help="Structure files and/or JSON lists of structure documents."),
    output: Path = typer.Option(Path("reference_dataset"), "-o", "--output", help="Dataset directory."),
    workers: int = typer.Option(2, "--workers", "-j", help="Worker processes (GPAW single-threaded each)."),
    preset: str = typer.Option("default", "--preset", help="GPAW settings: default, training or loose."),
    ecut: Optional[float] = typer.Option(None, "--ecut", help="Plane-wave cutoff (eV)."),
    kpoint_density: Optional[float] = typer.Option(None, "--kpoint-density", help="k-points per Å⁻¹ (incl. 2π)."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Native grid spacing (Å)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per cell before it fails."),
    maxiter: Optional[int] = typer.Option(None, "--maxiter", help="SCF iterations before a cell fails (the presets: "
                                          "60–80). Not part of a cell's id: with --retry-failed it retries cells "
                                          "whose SCF did not converge."),
    grid: Optional[tuple[int, int, int]] = typer.Option(None, "--grid", help="One output grid for every cell."),
    split: Optional[str] = typer.Option(None, "--split", help="Split for inputs that carry none (default train)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Recompute cells recorded as failed."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Stop after this many new cells."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Compute GPAW ELF + SCF density for each structure; resumable (finished cells are skipped)."""
    from elf_workflows.dataset.build import build_dataset, load_inputs, settings_from_options
    from elf_workflows.dataset.format import SPLITS

    if workers < 0:
        raise InputError(f"--workers must be ≥ 0, got {workers}")
    if split is not None and split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    docs = load_inputs(inputs)
    if split is not None:
        for doc in docs:
            doc.setdefault("split", split)
    settings = settings_from_options(preset, ecut_ev=ecut, kpoint_density=kpoint_density, grid_spacing=spacing,
                                     timeout_s=timeout, maxiter=maxiter)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    counts = build_dataset(docs, output, settings, workers=workers, grid=grid, retry_failed=retry_failed,
                           progress=not no_progress, limit=limit)
    typer.echo(f"{output}: {counts['ok']} new ok, {counts['failed']} new failed, {counts['skipped']} already done "
               f"(of {counts['total']} inputs)", err=True)


@dataset_app.command("import")
def import_(
    dirs: list[Path] = typer.Argument(..., help="VASP run folders: POSCAR/CONTCAR + ELFCAR [+ CHGCAR] (.gz ok)."),
    output: Path = typer.Option(Path("reference_dataset"), "-o", "--output", help="Dataset directory."),
    split: str = typer.Option("train", "--split", help="Split of the imported records."),
) -> None:
    """Import VASP ELF runs brought home from a cluster; unreadable folders become failed records."""
    from elf_workflows.dataset.importer import import_vasp_dirs

    counts = import_vasp_dirs(dirs, output, split=split)
    typer.echo(f"{output}: {counts['ok']} imported, {counts['failed']} failed, {counts['skipped']} already there",
               err=True)


@dataset_app.command("export")
def export(
    path: Path = typer.Argument(..., help="Dataset directory."),
    output: Path = typer.Option(..., "-o", "--output", help="JSON file of input documents for `dataset build`."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split (train, val or test)."),
    elements: Optional[str] = typer.Option(None, "--elements", help="Only cells holding any of these, e.g. Cs,K."),
) -> None:
    """Write a dataset's cells as `dataset build` inputs (split, provenance, parent id): a rebuild with other settings."""
    from elf_workflows.dataset.build import input_documents
    from elf_workflows.dataset.format import ReferenceDataset

    docs = input_documents(ReferenceDataset(path), split, set(elements.split(",")) if elements else None)
    if not docs:
        raise InputError(f"no cells in {path} match (split {split or 'any'}, elements {elements or 'any'})")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(docs))
    typer.echo(f"{output}: {len(docs)} cells of {path}", err=True)


@dataset_app.command("info")
def info(
    path: Path = typer.Argument(..., help="Dataset directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Counts per split, element coverage, grid sizes, timings, failures and size on disk."""
    from elf_workflows.dataset.format import ReferenceDataset

    summary = ReferenceDataset(path).summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    s = summary
    typer.echo(f"{s['path']}: {s['ok']} ok, {s['failed']} failed; splits "
               + ", ".join(f"{k} {v}" for k, v in s["splits"].items())
               + f"; engines {', '.join(s['engines']) or '-'}; {s['shards']} shards, {s['bytes'] / 1e6:.2f} MB")
    typer.echo(f"elements ({s['n_elements']}): " + " ".join(f"{k}:{v}" for k, v in s["elements"].items()))
    typer.echo("atoms per cell: " + ", ".join(f"{k}: {v}" for k, v in s["atoms_per_cell"].items()))
    if s["voxels"]:
        typer.echo(f"voxels per grid: min {s['voxels']['min']}, median {s['voxels']['median']}, "
                   f"max {s['voxels']['max']}")
        typer.echo(f"compute time: {s['seconds']['total'] / 3600:.2f} h total, median {s['seconds']['median']:.1f} s, "
                   f"max {s['seconds']['max']:.1f} s per cell")
    for reason, n in s["failure_reasons"].items():
        typer.echo(f"failed ({n}): {reason}")


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
