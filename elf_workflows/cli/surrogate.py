"""Commands ``predict``, ``train`` and ``evaluate``: the SAD → ELF surrogate."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from elf_workflows.errors import InputError


def write_surrogate_elfcar(structure, elf, path: Path, version: str, extra: dict | None = None) -> Path:
    """ELFCAR whose comment line names the model version, plus a sidecar ``PATH.json`` with provenance."""
    from pymatgen.io.vasp.inputs import Poscar
    from pymatgen.io.vasp.outputs import Elfcar

    path.parent.mkdir(parents=True, exist_ok=True)
    comment = f"{structure.composition.reduced_formula} ELF elf-workflows surrogate {version}"
    elfcar = Elfcar(Poscar(structure, comment=comment), {"total": elf})
    elfcar.name = comment  # VolumetricData.write_file takes its first line from ``name``
    elfcar.write_file(str(path))
    meta = {"engine": "surrogate", "model_version": version, "formula": structure.composition.reduced_formula,
            "grid": list(elf.shape), **(extra or {})}
    Path(str(path) + ".json").write_text(json.dumps(meta, indent=1))
    return path


def predict(
    structures: list[Path] = typer.Argument(..., help="Structure files (POSCAR, CIF, ...)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="ELFCAR to write (one structure)."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Directory for STEM.ELFCAR files (many)."),
    grid: Optional[tuple[int, int, int]] = typer.Option(None, "--grid", help="Output grid NX NY NZ "
                                                        "(default: the model's native grid)."),
    model_path: Optional[Path] = typer.Option(None, "--model", help="Model file (default: shipped weights)."),
    threads: int = typer.Option(2, "--threads", help="CPU threads for torch."),
) -> None:
    """Surrogate ELF of structures (SAD → periodic U-Net → symmetry pooling → grid); many per process.

    The model version is written in the ELFCAR comment line and in a sidecar ``ELFCAR.json``.
    """
    import torch

    from elf_workflows.grids import check_grid
    from elf_workflows.io import read_structure
    from elf_workflows.surrogate import load_model, predict_elf

    if (output is None) == (out_dir is None):
        raise InputError("give exactly one of -o ELFCAR (one structure) or --out-dir DIR")
    if output is not None and len(structures) > 1:
        raise InputError(f"-o takes one structure, got {len(structures)}; use --out-dir for many")
    shape = check_grid(grid) if grid is not None else None
    torch.set_num_threads(max(1, threads))
    loaded = [(p, read_structure(p)) for p in structures]  # validate all before any work
    model = load_model(model_path)
    used: set[str] = set()
    for path, structure in loaded:
        if output is not None:
            target = output
        else:
            stem = path.stem if path.suffix else path.name
            name, i = f"{stem}.ELFCAR", 1
            while name in used:
                i += 1
                name = f"{stem}-{i}.ELFCAR"
            used.add(name)
            target = out_dir / name
        start = time.perf_counter()
        elf = predict_elf(structure, shape=shape, model=model)
        seconds = time.perf_counter() - start
        write_surrogate_elfcar(structure, elf, target, model.version,
                               {"source": str(path), "seconds": round(seconds, 3)})
        typer.echo(f"{structure.composition.reduced_formula}: surrogate ELF on {'x'.join(map(str, elf.shape))} grid, "
                   f"[{elf.min():.3f}, {elf.max():.3f}], {seconds:.2f} s, model {model.version} -> {target}", err=True)


def train(
    data: Path = typer.Option(..., "--data", help="Reference dataset directory (records.jsonl + shards/)."),
    epochs: int = typer.Option(40, "--epochs", min=0, help="U-Net epochs after the per-voxel pre-training; 0: "
                               "the pre-trained per-voxel branch alone is the model (its U-Net head stays zero, "
                               "so inference skips the U-Net, as for the shipped weights)."),
    out: Path = typer.Option(Path("surrogate.pt"), "--out", help="Model file (best validation MAE)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT.ckpt."),
    patch: int = typer.Option(32, "--patch", help="Largest patch edge (voxels, multiple of 4); whole periods fit in."),
    patches_per_epoch: int = typer.Option(64, "--patches-per-epoch"),
    batch_size: int = typer.Option(8, "--batch-size"),
    lr: float = typer.Option(2e-3, "--lr"),
    pool: int = typer.Option(1, "--pool", help="Patch-frame symmetry operations pooled per patch."),
    clip: float = typer.Option(0.5, "--clip", help="Gradient-norm clip."),
    pretrain_steps: int = typer.Option(135000, "--pretrain-steps",
                                       help="Per-voxel steps fitting the pointwise branch first (0: none)."),
    base_channels: int = typer.Option(16, "--base-channels"),
    levels: int = typer.Option(3, "--levels"),
    point_channels: int = typer.Option(128, "--point-channels", min=0, help="Width of the per-voxel branch (0: none)."),
    spacing: float = typer.Option(0.2, "--spacing", help="Native voxel spacing (Å)."),
    threads: int = typer.Option(2, "--threads"),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from these weights; no pre-training. Same "
                                        "architecture: all weights; another U-Net width or depth: the pointwise "
                                        "branch only, the new U-Net's correction starting at zero."),
    fresh_unet: bool = typer.Option(False, "--fresh-unet", help="With --init: take the pointwise branch only and "
                                    "start a new U-Net, also when the architecture is the same."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Processes preparing the cells' features."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", min=0.0,
                                                help="Wall-clock budget of the whole run: after the first epoch, the "
                                                "epochs (and the cosine schedule) are cut to what fits."),
    freeze_pointwise: bool = typer.Option(True, "--freeze-pointwise/--train-pointwise",
                                          help="Keep the per-voxel branch fixed: the U-Net learns the non-local correction only."),
    val_every: int = typer.Option(5, "--val-every", min=1, help="Validate (and keep the best weights) every N epochs."),
    val_max_cells: int = typer.Option(150, "--val-max-cells", min=1, help="Validation cells used (a fixed subset)."),
    val_elements: str = typer.Option("", "--val-elements", help="Comma-separated elements whose training cells move "
                                     "to validation (e.g. Sr,Ti): validate on chemistries never trained on."),
    interstitial_weight: float = typer.Option(0.0, "--interstitial-weight", min=0.0,
                                              help="Pre-training loss weight 1 + W·ELF on voxels outside the atomic "
                                              "cores (0: plain L1); raises the void maxima that scores use."),
    cell_weight_power: float = typer.Option(0.0, "--cell-weight-power", min=0.0, max=1.0,
                                            help="Pre-training draws cells with probability ∝ voxels^P (0: every "
                                            "cell alike; 1: every voxel alike, as evaluate pools them)."),
    maxima_fraction: float = typer.Option(0.0, "--maxima-fraction", min=0.0, max=0.9,
                                          help="Fill this fraction of every pre-training batch with voxels at the "
                                          "DFT ELF's local maxima, pooled over the cells as evaluate pools them."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train the surrogate on periodic patches (origin jitter, symmetry pooling, VOX+HIST+GRAD loss)."""
    from elf_workflows.surrogate.model import UNetConfig
    from elf_workflows.surrogate.train import TrainConfig, train as run

    if patch <= 0 or epochs < 0 or batch_size <= 0 or patches_per_epoch <= 0:
        raise InputError("--patch, --batch-size and --patches-per-epoch must be positive, --epochs not negative")
    if epochs == 0 and (init or resume or pretrain_steps <= 0):
        raise InputError("--epochs 0 keeps the pre-trained per-voxel branch: it needs --pretrain-steps > 0 and "
                         "no --init or --resume")
    if not spacing > 0:
        raise InputError(f"--spacing must be positive, got {spacing}")
    cfg = TrainConfig(epochs=epochs, patch_size=patch, patches_per_epoch=patches_per_epoch, batch_size=batch_size,
                      lr=lr, pool=pool, clip=clip, pretrain_steps=pretrain_steps, seed=seed, threads=threads, device=device,
                      val_every=val_every, val_max_cells=val_max_cells, init=str(init) if init else None,
                      freeze_pointwise=freeze_pointwise,
                      val_elements=[e.strip() for e in val_elements.split(",") if e.strip()],
                      interstitial_weight=interstitial_weight, cell_weight_power=cell_weight_power,
                      maxima_fraction=maxima_fraction, workers=workers, max_minutes=max_minutes,
                      fresh_unet=fresh_unet,
                      model=UNetConfig(base_channels=base_channels, levels=levels, spacing=spacing,
                                       point_channels=point_channels).to_dict())
    metrics = run(data, out, cfg, resume=resume, progress=not quiet and sys.stderr.isatty())
    best = metrics.get("best_val_mae")
    typer.echo(f"trained {len(metrics.get('history', []))} epochs; best validation MAE "
               f"{best if best is None else round(best, 4)} -> {out}", err=True)


def evaluation_report(result: dict, split: str, out_dir: Path) -> list[str]:
    """The lines `evaluate` prints for a metrics dict (also for a stored ``metrics.json``)."""
    from elf_workflows.surrogate.evaluate import METHODS

    lines: list[str] = []
    lines.append(f"{result['n_structures']} '{split}' cells, {result['n_maxima']} DFT ELF maxima, model {result['model_version']}")
    lines.append(f"{'method':<20s} {'voxel MAE':>10s} {'voxel RMSE':>10s} {'max MAE':>9s} {'max R²':>8s}")
    for m in METHODS:
        s = result["summary"][m]
        lines.append(f"{m:<20s} {s['voxel_mae']:10.4f} {s['voxel_rmse']:10.4f} {s['maxima_mae']:9.4f} {s['maxima_r2']:8.3f}")
    if len(result.get("by_compression", {})) > 1:
        lines.append(f"{'surrogate by V/V0':<20s} {'cells':>6s} {'voxel MAE':>10s} {'max MAE':>9s} {'max R²':>8s} {'GE/ML':>6s}")
        for label, b in result["by_compression"].items():
            s, ge = b["surrogate"], b["gradient_expansion"]
            lines.append(f"{label:<20s} {b['n_structures']:6d} {s['voxel_mae']:10.4f} {s['maxima_mae']:9.4f} "
                         f"{s['maxima_r2']:8.3f} {ge['voxel_mae'] / s['voxel_mae']:6.1f}")
    sp = result["speed"]
    lines.append(f"surrogate is {result['improvement_over_gradient_expansion']:.2f}x better than the gradient expansion "
                 f"(voxel MAE); median {sp['ml_seconds_median']:.3f} s per cell"
                 + (f" vs GPAW {sp['dft_seconds_median']:.1f} s ({sp['speedup_median']:.0f}x)" if sp["speedup_median"] else ""))
    if ts := result.get("template_scores"):
        lines.append(f"template scores, surrogate ELF + partition SAD vs DFT ELF + SCF density: MAE {ts['mae']:.3f} "
                     f"e/metal atom, Spearman {ts['spearman'] if ts['spearman'] is None else round(ts['spearman'], 3)}; "
                     f"non-zero in {ts['nonzero_surrogate']} vs {ts['nonzero_dft']} of {ts['n_structures']} cells")
        if u := ts.get("uncertainty"):
            def fmt(x):
                return "n/a" if x is None else f"{x:.2f}"

            lines.append(f"score uncertainty (ELF sigma {u['elf_sigma']:g} at void maxima) vs |score error|: Spearman "
                         f"{fmt(u['spearman'])} over all cells, {fmt(u['spearman_scored'])} over the {u['n_scored']} "
                         f"scored ones; its top {u['top']} hold {u['top_hits']} of the {u['top']} largest errors")
    lines.append(f"figures and tables in {out_dir}")
    return lines


def evaluate(
    data: Path = typer.Option(..., "--data", help="Reference dataset directory."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    out_dir: Path = typer.Option(Path("surrogate_eval"), "--out-dir", help="Where figures and tables go."),
    model_path: Optional[Path] = typer.Option(None, "--model", help="Model file (default: shipped weights)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics JSON only."),
    threads: int = typer.Option(2, "--threads"),
    scores: bool = typer.Option(False, "--scores", help="Also compare template scores (surrogate ELF + partition "
                                "SAD vs DFT ELF + SCF density); adds about 0.3 s per cell."),
) -> None:
    """Held-out evaluation vs DFT: voxel MAE/RMSE, ELF at maxima (MAE, R², parity plot), B2 slices, baselines."""
    import torch

    from elf_workflows.surrogate import load_model
    from elf_workflows.surrogate.evaluate import evaluate as run

    if split not in ("train", "val", "test"):
        raise InputError(f"unknown split {split!r}; use train, val or test")
    torch.set_num_threads(max(1, threads))
    model = load_model(model_path)
    result = run(data, split, model, out_dir, log=None if as_json else (lambda m: typer.echo(m, err=True)),
                 scores=scores)
    if as_json:
        typer.echo(json.dumps({k: v for k, v in result.items() if k != "structures"}, indent=1, default=float))
        return
    for line in evaluation_report(result, split, out_dir):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.command("train")(train)
    app.command("evaluate")(evaluate)
