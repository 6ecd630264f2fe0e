"""Training the surrogate on periodic patches with epoch-wise origin jitter and symmetry pooling.

One epoch draws ``patches_per_epoch`` periodic patches (:mod:`.data`: cells uniformly, a fresh
random origin each, whole periods along every axis the patch edge allows, the random stream seeded by
``(seed, epoch)`` so a resumed run repeats exactly). Each patch is seen through ``pool`` random
patch-frame operations (:mod:`.symmetry_pool`), the predictions are rotated back and averaged, and
the loss Σ exp(−s_i)·L_i + s_i over VOX, HIST and GRAD (:mod:`.losses`) is taken on the pooled
prediction. Every ``val_every`` epochs (and after the last): whole-cell validation MAE (pooled over
the space group) on up to ``val_max_cells`` validation cells, the best weights so far in ``OUT``.
After every epoch: a checkpoint ``OUT.ckpt`` (resumable), ``OUT.metrics.json`` (every term and weight
per epoch) and, every 10 epochs, ``OUT.loss.png``.

The cells are prepared once (:func:`prepare_training_data`, in ``workers`` processes) and moved to
the training device, where the patches are cut. ``max_minutes`` bounds the whole run: after the
first epoch the epochs, and with them the cosine schedule, are cut to what fits. ``init`` starts from
trained weights (:func:`init_from`); a U-Net that starts fresh reads its input standardised by the
training cells' per-channel statistics (:func:`input_statistics`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from elf_workflows.errors import InputError
from elf_workflows.surrogate.data import (
    Cell,
    dataset_path,
    holdout_fraction,
    load_cells,
    sample_patches,
    split_records,
)
from elf_workflows.surrogate.losses import TERMS, UncertaintyWeighting, loss_terms
from elf_workflows.surrogate.model import PeriodicUNet, UNetConfig, pointwise_rows, predict_grid
from elf_workflows.surrogate.symmetry_pool import rotate_patch, unrotate_patch


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (all recorded in the model metadata).

    The shipped weights' command (docs/surrogate.md) sets ``epochs``, ``seed``, ``threads``,
    ``interstitial_weight``, ``cell_weight_power``, ``workers`` and the U-Net's ``base_channels`` itself;
    the other defaults are its recipe.
    """

    epochs: int = 40
    patch_size: int = 32
    patches_per_epoch: int = 64
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.0
    pool: int = 1
    clip: float = 0.5
    pretrain_steps: int = 135000
    seed: int = 0
    threads: int = 2
    device: str = "cpu"
    val_fraction: float = 0.15
    val_elements: list[str] = field(default_factory=list)
    interstitial_weight: float = 0.0
    cell_weight_power: float = 0.0
    maxima_fraction: float = 0.0
    init: str | None = None
    fresh_unet: bool = False
    freeze_pointwise: bool = True
    val_every: int = 5
    val_max_cells: int = 150
    max_cell_voxels: int = 80**3
    max_train_cells: int | None = None
    workers: int = 1
    max_minutes: float | None = None
    model: dict = field(default_factory=lambda: UNetConfig().to_dict())


def _pooled_forward(net: PeriodicUNet, patches: list, pool: int, rng: np.random.Generator,
                    device: str) -> list[torch.Tensor]:
    """Predictions on patches ``(C, p1, p2, p3)``, each pooled over ``pool`` random patch-frame operations.

    Each operation rotates the input (:func:`rotate_patch`; a permutation of unequal edges permutes
    the patch's shape), the prediction is rotated back, and a patch's copies are averaged:
    ``(1, p1, p2, p3)`` per patch. The rotated copies of all patches run as batches of equal shape
    (one network call per distinct shape, not one per copy); with no layer coupling the samples of a
    batch, that is the per-copy result to float rounding (tested).
    """
    copies: dict[tuple[int, ...], list[tuple[int, np.ndarray, torch.Tensor]]] = {}
    for i, patch in enumerate(patches):
        xt = torch.as_tensor(patch.features, device=device)
        ops = patch.patch_ops
        chosen = ops[rng.choice(len(ops), size=max(1, min(pool, len(ops))), replace=False)]
        for S in chosen:
            rotated = rotate_patch(xt, S)
            copies.setdefault(tuple(rotated.shape), []).append((i, S, rotated))
    preds: list[list[torch.Tensor]] = [[] for _ in patches]
    for members in copies.values():
        out = net(torch.stack([rotated for _, _, rotated in members]))
        for (i, S, _), pred in zip(members, out):
            preds[i].append(unrotate_patch(pred, S))
    return [torch.stack(p).mean(0) for p in preds]


def _batch_terms(net: PeriodicUNet, patches: list, pool: int, rng: np.random.Generator, device: str) -> torch.Tensor:
    """VOX, HIST, GRAD averaged over the patches of a batch, each on its loss region (:attr:`Patch.core`)."""
    terms = []
    for patch, pred in zip(patches, _pooled_forward(net, patches, pool, rng, device)):
        target = torch.as_tensor(patch.target, device=device)[None]
        core = (slice(None), *patch.core)
        terms.append(loss_terms(pred[core][None], target[core][None]))
    return torch.stack(terms).mean(0)


@torch.no_grad()
def validate(net: PeriodicUNet, cells: list[Cell], groups: dict | None = None) -> dict:
    """Whole-cell voxel MAE/RMSE on the native grid (pooled over the space group where ``groups`` has it)."""
    from elf_workflows.surrogate.symmetry_pool import pool_cell

    if not cells:
        return {}
    device = next(net.parameters()).device
    net.eval()
    errs, sq = [], []
    for cell in cells:
        if device.type == "cpu":
            pred = predict_grid(net, cell.features)
        else:
            pred = net(torch.from_numpy(cell.features)[None].to(device))[0, 0].cpu().numpy()
        if groups and cell.id in groups:
            pred = pool_cell(pred, groups[cell.id])
        d = pred - cell.target
        errs.append(float(np.abs(d).mean()))
        sq.append(float((d**2).mean()))
    net.train()
    return {"val_mae": float(np.mean(errs)), "val_rmse": float(math.sqrt(np.mean(sq)))}


def pointwise_elf(net: PeriodicUNet, x: torch.Tensor) -> torch.Tensor:
    """ELF of the per-voxel branch alone, sigmoid(head bias + point(x)), for rows ``(n, C)`` of voxel features:
    the whole model's prediction while the U-Net head is zero (pre-training)."""
    return torch.sigmoid(net.head.bias + pointwise_rows(net.point, x, net.config.point_groups)[:, 0])


def interstitial_weighted_l1(pred: torch.Tensor, target: torch.Tensor, interstitial: torch.Tensor,
                             weight: float) -> torch.Tensor:
    """Σ w |pred − target| / Σ w with w = 1 + ``weight`` · target · [interstitial]: plain L1 at 0, and
    for ``weight`` > 0 more pull on high-ELF voxels outside the atomic cores — the void maxima that
    template scores are made of, which a plain L1 fit predicts too low (docs/surrogate.md)."""
    w = 1.0 + weight * target * interstitial
    return (w * (pred - target).abs()).sum() / w.sum()


def draw_cells(rng: np.random.Generator, sizes: np.ndarray, n: int, power: float = 0.0) -> np.ndarray:
    """Indices of ``n`` cells drawn with probability ∝ ``sizes``^``power`` (voxel counts).

    Power 0 draws uniformly with ``rng.integers``, the draws of every model trained before session 8.
    """
    if power == 0:
        return rng.integers(len(sizes), size=n)
    weights = np.asarray(sizes, dtype=float) ** power
    return rng.choice(len(sizes), size=n, p=weights / weights.sum())


def draw_rows(rng: np.random.Generator, sizes: np.ndarray, batch: int, power: float = 0.0,
              maxima_rows: np.ndarray | None = None, n_maxima_rows: int = 0) -> np.ndarray:
    """Row indices of one pre-training batch into the voxels of all cells concatenated (cell sizes ``sizes``).

    ``batch − n_maxima_rows`` rows: a cell (:func:`draw_cells`, ∝ voxels^``power``), then a random voxel
    of it; ``n_maxima_rows`` rows drawn uniformly from ``maxima_rows`` (the rows at DFT ELF maxima).
    With ``n_maxima_rows`` = 0 the random stream is used exactly as before session 11.
    """
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_voxel_rows = batch - n_maxima_rows
    pick = draw_cells(rng, sizes, n_voxel_rows, power)
    rows = offsets[pick] + (rng.random(n_voxel_rows) * sizes[pick]).astype(np.int64)
    if n_maxima_rows:
        rows = np.concatenate([rows, maxima_rows[rng.integers(len(maxima_rows), size=n_maxima_rows)]])
    return rows


def pretrain_pointwise(net: PeriodicUNet, cells: list[Cell], steps: int, rng: np.random.Generator,
                       device: str = "cpu", lr: float = 3e-3, batch: int = 8192,
                       interstitial_weight: float = 0.0, cell_weight_power: float = 0.0,
                       maxima_fraction: float = 0.0) -> float:
    """Fit the pointwise branch (and the head bias) on random voxels, with the U-Net head zeroed.

    Each batch draws ``batch`` cells (less the maxima rows below), with probability ∝ (voxel count)^``cell_weight_power`` — 0:
    uniformly (small, compressed cells count as much as big ones, as in the patch epochs); 1: every
    voxel of the set equally likely — and one random voxel of each. The loss is
    :func:`interstitial_weighted_l1` (plain L1 when ``interstitial_weight`` is 0).

    ``maxima_fraction`` > 0 fills that fraction of every batch with voxels drawn uniformly from the
    local maxima of the DFT ELF of all the cells together (:attr:`Cell.maxima`), pooled as ``evaluate``
    pools them for its MAE and R² at the maxima: a cell with hundreds of shallow maxima (an
    uncompressed alkali metal) weighs as much there as in that metric. At 0 (the default) the draws
    are exactly those of the models trained before session 11.

    With the head's weights at zero the logits are ``bias + point(x)`` voxel by voxel, so this stage
    is a cheap per-voxel regression (L1, cosine-decayed learning rate) that brings the model to the
    accuracy of a local model in minutes; the U-Net then learns the non-local correction. Returns the
    last batch's (unweighted) MAE.
    """
    if net.point is None or steps <= 0:
        return float("nan")
    c = net.config.in_channels
    x_all = torch.from_numpy(np.concatenate([cell.features.reshape(c, -1).T for cell in cells]))
    y_all = torch.from_numpy(np.concatenate([cell.target.reshape(-1) for cell in cells]))
    i_all = torch.from_numpy(np.concatenate([
        (cell.interstitial if cell.interstitial is not None else np.ones(cell.target.shape, bool)).reshape(-1)
        for cell in cells]).astype(np.float32))
    sizes = np.array([cell.target.size for cell in cells])
    n_maxima_rows = int(round(batch * maxima_fraction))
    maxima_rows = None
    if n_maxima_rows:
        if any(cell.maxima is None for cell in cells):
            raise ValueError("maxima_fraction > 0 needs every cell's maxima (Cell.maxima)")
        maxima_rows = np.flatnonzero(np.concatenate([cell.maxima.reshape(-1) for cell in cells]))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.fill_(float(torch.logit(y_all.mean().clamp(0.02, 0.98))))
    params = list(net.point.parameters()) + [net.head.bias]
    was_frozen = [not q.requires_grad for q in params]  # --freeze-pointwise freezes it for the U-Net stage only
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.05 * lr)
    mae = float("nan")
    for _ in range(steps):
        idx = torch.from_numpy(draw_rows(rng, sizes, batch, cell_weight_power, maxima_rows, n_maxima_rows))
        x = x_all[idx].to(device)
        pred = pointwise_elf(net, x)
        y = y_all[idx].to(device)
        loss = interstitial_weighted_l1(pred, y, i_all[idx].to(device), interstitial_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        mae = (pred.detach() - y).abs().mean()
    for q, frozen in zip(params, was_frozen):
        q.requires_grad_(not frozen)
    return float(mae)


def input_statistics(cells: list[Cell]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the input features over every voxel of ``cells``."""
    n = sum(cell.target.size for cell in cells)
    total = sum(cell.features.reshape(cell.features.shape[0], -1).sum(1, dtype=np.float64) for cell in cells)
    mean = total / n
    sq = sum(((cell.features.reshape(cell.features.shape[0], -1) - mean[:, None]) ** 2).sum(1) for cell in cells)
    return mean, np.sqrt(sq / n)


def init_from(net: PeriodicUNet, start: PeriodicUNet, fresh_unet: bool = False) -> str:
    """Load the weights of ``start`` into ``net``; return what was taken.

    The same architecture: everything. A U-Net of other width or depth on the same inputs, spacing
    and pointwise branch: the pointwise branch and the head's bias only, with the head's weights
    zeroed, so ``net`` starts out predicting exactly what the pointwise part of ``start`` predicts and
    the new U-Net grows its non-local correction from zero. ``fresh_unet``: the latter also for the
    same architecture.
    """
    if start.config == net.config and not fresh_unet:
        net.load_state_dict(start.state_dict())
        return "all weights"
    a, b = start.config, net.config
    if ((a.in_channels, a.spacing, a.point_channels, a.point_groups) != (b.in_channels, b.spacing, b.point_channels, b.point_groups)
            or not a.point_channels):
        raise InputError(f"--init weights have architecture {a.to_dict()}: the inputs, spacing or pointwise branch "
                         f"differ from {b.to_dict()}")
    with torch.no_grad():
        net.point.load_state_dict(start.point.state_dict())
        net.head.weight.zero_()
        net.head.bias.copy_(start.head.bias)
    return f"pointwise branch and head bias (U-Net {a.base_channels}→{b.base_channels} base channels, new)"


def epochs_within(seconds_left: float, epoch_seconds: float, val_seconds: float, val_every: int, done: int,
                  most: int) -> int:
    """How many epochs in all (``done`` included, at least ``done``, at most ``most``) fit in ``seconds_left``,
    at ``epoch_seconds`` per epoch plus a validation of ``val_seconds`` every ``val_every`` epochs."""
    per_epoch = epoch_seconds + val_seconds / max(1, val_every)
    return int(min(most, done + max(0, math.floor(seconds_left / max(per_epoch, 1e-9)))))


def plot_history(history: list[dict], path: Path) -> None:
    """Loss-curve PNG: every term, the weighted total, the weights and the validation MAE per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for t in TERMS:
        axes[0].semilogy(ep, [h[f"loss_{t}"] for h in history], label=t.upper())
    if any("val_mae" in h for h in history):
        axes[0].semilogy([h["epoch"] for h in history if "val_mae" in h],
                         [h["val_mae"] for h in history if "val_mae" in h], "k--", label="val MAE")
    axes[0].set_xlabel("epoch"); axes[0].set_title("loss terms"); axes[0].legend()
    axes[1].plot(ep, [h["loss_total"] for h in history]); axes[1].set_xlabel("epoch")
    axes[1].set_title("Σ exp(−s)·L + s")
    for t in TERMS:
        axes[2].semilogy(ep, [h[f"weight_{t}"] for h in history], label=f"exp(−s) {t.upper()}")
    axes[2].set_xlabel("epoch"); axes[2].set_title("uncertainty weights"); axes[2].legend()
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.9, wspace=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _outputs(out: Path) -> dict[str, Path]:
    return {"ckpt": out.with_name(out.name + ".ckpt"), "metrics": out.with_name(out.stem + ".metrics.json"),
            "png": out.with_name(out.stem + ".loss.png")}


@dataclass
class TrainingData:
    """The prepared cells of a run: training cells, validation cells and the validation cells' space groups."""

    cells: list[Cell]
    val_cells: list[Cell]
    groups: dict


def prepare_training_data(data: str | Path, config: TrainConfig) -> TrainingData:
    """Split ``data`` (:func:`split_records`) and bring its cells to the model's native grid.

    Validation uses a fixed subset of ``val_max_cells`` cells (chosen by id hash). Reusable across
    runs of the same dataset, spacing and split (``train(..., prepared=...)``).
    """
    from elf_workflows.symmetry import get_space_group

    mcfg = UNetConfig(**config.model)
    # a per-voxel model (no U-Net epochs) is trained on the stride-free grids it predicts on (infer.model_grid)
    multiple = 1 if config.epochs == 0 else mcfg.multiple
    dataset = dataset_path(data)
    train_recs, val_recs = split_records(dataset, config.val_fraction, config.val_elements)
    train_recs = train_recs[:config.max_train_cells]  # None: all (a number: dry runs)
    cells = load_cells(dataset, train_recs, mcfg.spacing, multiple, config.max_cell_voxels, workers=config.workers)
    val_recs = sorted(val_recs, key=lambda r: holdout_fraction(r["id"]))[:max(0, config.val_max_cells)]
    val_cells = load_cells(dataset, val_recs, mcfg.spacing, multiple, config.max_cell_voxels, workers=config.workers)
    if not cells:
        raise InputError(f"no training cells under {config.max_cell_voxels} native voxels in {data}")
    kept = {c.id for c in val_cells}
    groups = {rec["id"]: get_space_group(dataset.load_structure(rec["id"])) for rec in val_recs if rec["id"] in kept}
    return TrainingData(cells, val_cells, groups)


def train(data: str | Path, out: str | Path, config: TrainConfig | None = None, resume: bool = False,
          log: Callable[[str], None] | None = None, progress: bool = True,
          prepared: TrainingData | None = None) -> dict:
    """Train a surrogate on a reference dataset; write the best weights to ``out``; return the metrics.

    Args:
        data: reference dataset directory (``train`` split used; ``val`` split or a carved part of
            ``train`` for validation; ``test`` never read).
        out: model file to write (best validation MAE); side files ``out.ckpt``, ``*.metrics.json``,
            ``*.loss.png``.
        config: hyper-parameters.
        resume: continue from ``out.ckpt``.
        prepared: cells from :func:`prepare_training_data` with the same ``config`` (skips preparing them).
    """
    from tqdm import tqdm

    from elf_workflows.surrogate.infer import save_model

    t_start = time.perf_counter()
    cfg = config or TrainConfig()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    paths = _outputs(out)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda given but no CUDA device is available")
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    mcfg = UNetConfig(**cfg.model)
    if cfg.patch_size % mcfg.multiple:
        raise InputError(f"patch size {cfg.patch_size} must be a multiple of {mcfg.multiple}")

    if prepared is None:
        t0 = time.perf_counter()
        prepared = prepare_training_data(data, cfg)
        log(f"{len(prepared.cells)} training cells, {len(prepared.val_cells)} validation cells prepared in "
            f"{time.perf_counter() - t0:.1f} s (spacing {mcfg.spacing} Å, {cfg.workers} worker(s))")
    cells, val_cells, groups = prepared.cells, prepared.val_cells, prepared.groups

    net = PeriodicUNet(mcfg)
    fresh_unet = not resume
    if cfg.init and not resume:
        from elf_workflows.surrogate.infer import load_model

        start = load_model(cfg.init)
        log(f"initialised from {cfg.init} ({start.version}): {init_from(net, start.net, cfg.fresh_unet)}; "
            "no pointwise pre-training")
        fresh_unet = cfg.fresh_unet or start.config != mcfg
    if fresh_unet:  # a new U-Net sees standardised inputs (model.py: signal propagation)
        net.set_input_statistics(*input_statistics(cells))
    net = net.to(cfg.device)
    if cfg.freeze_pointwise and net.point is not None:
        net.point.requires_grad_(False)
    weighting = UncertaintyWeighting().to(cfg.device)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad] + list(weighting.parameters()), lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    n_epochs = [cfg.epochs]  # the cosine horizon; --max-minutes may shorten it after the first epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: 0.5 * (1 + math.cos(math.pi * min(e, n_epochs[0]) / max(n_epochs[0], 1))) * 0.95 + 0.05)
    history: list[dict] = []
    start_epoch, best = 0, math.inf
    if resume:
        if not paths["ckpt"].is_file():
            raise InputError(f"--resume given but no checkpoint {paths['ckpt']}")
        ck = torch.load(paths["ckpt"], map_location=cfg.device, weights_only=False)
        net.load_state_dict(ck["net"]); weighting.load_state_dict(ck["weighting"])
        opt.load_state_dict(ck["opt"]); sched.load_state_dict(ck["sched"])
        history, start_epoch, best = ck["history"], ck["epoch"], ck["best"]
        if sorted(ck.get("val_ids", [])) != sorted(c.id for c in val_cells):
            best = math.inf  # the validation set changed (a grown dataset): old scores are not comparable
        log(f"resumed from {paths['ckpt']} at epoch {start_epoch}")
    log(f"model: {net.n_parameters()} parameters, {mcfg.levels} levels, {mcfg.base_channels} base channels")
    trained_on = {"dataset": Path(data).resolve().name, "n_train_cells": len(cells), "n_val_cells": len(val_cells),
                  "train_formulas": sorted({c.formula for c in cells}),
                  "val_formulas": sorted({c.formula for c in val_cells}),
                  "v_ratio_range": [round(min(c.v_ratio for c in cells), 4), round(max(c.v_ratio for c in cells), 4)]}

    def save_best(epoch: int, val_mae: float | None, **extra) -> str:
        """Write the current weights to ``out`` as the best so far; return their version."""
        meta = {"trained_on": trained_on, "train_config": asdict(cfg), "epoch": epoch, "val_mae": val_mae,
                **extra, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        version = save_model(net.cpu(), out, meta)
        net.to(cfg.device)
        return version

    if not resume and not cfg.init and cfg.pretrain_steps > 0:
        t_pre = time.perf_counter()
        mae = pretrain_pointwise(net, cells, cfg.pretrain_steps, np.random.default_rng([cfg.seed, 10**6]), cfg.device,
                                 interstitial_weight=cfg.interstitial_weight, cell_weight_power=cfg.cell_weight_power,
                                 maxima_fraction=cfg.maxima_fraction)
        log(f"pointwise branch pre-trained: {cfg.pretrain_steps} steps, voxel MAE {mae:.4f}, "
            f"{time.perf_counter() - t_pre:.0f} s")
    if not resume:
        t_val = time.perf_counter()
        initial = validate(net, val_cells, groups).get("val_mae")
        val_seconds = time.perf_counter() - t_val
        if initial is not None:  # the pre-trained state is the first "best": the U-Net stage must beat it
            log(f"validation MAE before training {initial:.4f}")
            best = initial
            save_best(0, initial)
    else:
        initial = ck.get("initial_val_mae")
        val_seconds = 0.0

    def write_metrics() -> None:
        metrics = {"history": history, "best_val_mae": best if math.isfinite(best) else None,
                   "initial_val_mae": initial,
                   "trained_on": trained_on, "config": asdict(cfg), "n_parameters": net.n_parameters()}
        paths["metrics"].write_text(json.dumps(metrics, indent=1))

    if cfg.epochs == 0:  # the per-voxel model alone: the pre-trained branch (U-Net head zero) is what was saved
        write_metrics()
    n_batches = max(1, cfg.patches_per_epoch // cfg.batch_size)
    # the training cells live on the training device (on CPU without a copy): patches are cut there
    cells = [replace(cell, features=torch.as_tensor(cell.features, device=cfg.device),
                     target=torch.as_tensor(cell.target, device=cfg.device)) for cell in cells]
    for epoch in range(start_epoch, cfg.epochs):
        if epoch >= n_epochs[0]:
            break
        rng = np.random.default_rng([cfg.seed, epoch])
        net.train()
        t_ep = time.perf_counter()
        sums = np.zeros(len(TERMS)); total = 0.0
        bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{n_epochs[0]}", file=sys.stderr,
                   disable=not progress, leave=False)
        for _ in bar:
            batch = sample_patches(cells, cfg.batch_size, cfg.patch_size, rng)
            terms = _batch_terms(net, batch, cfg.pool, rng, cfg.device)
            if not history and not sums.any():  # first batch of a fresh run: balanced weights
                weighting.start_at(terms)
            loss = weighting(terms)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
            opt.step()
            sums += terms.detach().cpu().numpy(); total += float(loss.detach())
            bar.set_postfix(vox=f"{terms[0].item():.4f}")
        sched.step()
        row = {"epoch": epoch + 1, "seconds": time.perf_counter() - t_ep, "lr": opt.param_groups[0]["lr"],
               "loss_total": total / n_batches,
               "unet_alive": net.unet_alive_fraction(torch.as_tensor(batch[0].features, device=cfg.device)[None])}
        for t, v, w, s in zip(TERMS, sums / n_batches, weighting.weights(), weighting.log_vars.tolist()):
            row[f"loss_{t}"], row[f"weight_{t}"], row[f"s_{t}"] = float(v), float(w), float(s)
        if (epoch + 1) % max(1, cfg.val_every) == 0 or epoch + 1 >= n_epochs[0]:
            row.update(validate(net, val_cells, groups))
        history.append(row)
        score = row.get("val_mae", row["loss_vox"] if not val_cells else math.inf)
        improved = score < best
        if improved:
            best = score
            version = save_best(epoch + 1, row.get("val_mae"), train_loss_vox=row["loss_vox"])
            row["saved_version"] = version
        log(" ".join([f"epoch {epoch + 1:3d}", f"total {row['loss_total']:.4f}"]
                     + [f"{t.upper()} {row[f'loss_{t}']:.4f} (w {row[f'weight_{t}']:.2f})" for t in TERMS]
                     + ([f"val MAE {row['val_mae']:.4f}"] if "val_mae" in row else [])
                     + [f"U-Net alive {row['unet_alive']:.2f}"]
                     + [f"{row['seconds']:.0f} s", "*" if improved else ""]))
        if row["unet_alive"] < 0.01 and not any(r.get("unet_alive", 1.0) < 0.01 for r in history[:-1]):
            log(f"warning: the U-Net stage died at epoch {epoch + 1} (only {row['unet_alive']:.1%} of its last-layer "
                "features are non-zero): from here it outputs a constant and cannot recover; train it with a lower "
                "--lr (3e-4 kept it alive, docs/surrogate.md)")
        torch.save({"net": net.state_dict(), "weighting": weighting.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "history": history, "epoch": epoch + 1, "best": best,
                    "config": asdict(cfg), "val_ids": [c.id for c in val_cells], "initial_val_mae": initial},
                   paths["ckpt"])
        write_metrics()
        if epoch == start_epoch and cfg.max_minutes:
            n_epochs[0] = epochs_within(cfg.max_minutes * 60 - (time.perf_counter() - t_start), row["seconds"],
                                        val_seconds, cfg.val_every, epoch + 1, cfg.epochs)
            if n_epochs[0] < cfg.epochs:
                log(f"--max-minutes {cfg.max_minutes:g}: {n_epochs[0]} epochs fit (the cosine schedule ends there)")
        if epoch + 1 == n_epochs[0] or (epoch + 1) % 10 == 0:
            plot_history(history, paths["png"])
    return json.loads(paths["metrics"].read_text()) if paths["metrics"].is_file() else {"history": history}
