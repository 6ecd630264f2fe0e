"""Do the surrogate's input channels (or a loss weighting) transfer to elements never trained on?

For each set of held-out elements, every ``train``/``val`` cell that contains one of them becomes
validation (the first 150 by record-id hash), the rest training; the per-voxel branch alone is fitted
(:func:`elf_workflows.surrogate.train.pretrain_pointwise`, same seed) once on the first
``--channels`` input channels (or all but the ``--drop`` ones) and once on all of them, and scored on the held-out cells: voxel MAE,
MAE and R² at the DFT ELF maxima, and the MAE and bias at the interstitial maxima (outside every
atomic core). With ``--interstitial-weight W`` the comparison is instead plain L1 against the
void-weighted loss (:func:`elf_workflows.surrogate.train.interstitial_weighted_l1`), all channels.
The ``test`` split is never read.

Run:  python scripts/heldout_element_ablation.py --steps 8000 --channels 17 Y,Zn Sr,Ti Nb,Cs
      python scripts/heldout_element_ablation.py --steps 8000 --interstitial-weight 1.5 Y,Zn Sr,Ti Nb,Cs
      python scripts/heldout_element_ablation.py --steps 8000 --drop group,row,electronegativity Y,Zn Sr,Ti Nb,Cs
      python scripts/heldout_element_ablation.py --steps 8000 --extra log_participation --interstitial-weight 1.5 \
          Y,Zn Sr,Ti Nb,Cs
      python scripts/heldout_element_ablation.py --steps 8000 --compare-width 256 --interstitial-weight 1.5 Y,Zn Sr,Ti Nb,Cs
      python scripts/heldout_element_ablation.py --steps 8000 --ensemble 2 --interstitial-weight 1.5 Y,Zn Sr,Ti Nb,Cs
      python scripts/heldout_element_ablation.py --steps 8000 --compare-cell-weight 0.5,1 --interstitial-weight 1.5 \
          Y,Zn Sr,Ti Nb,Cs
      python scripts/heldout_element_ablation.py --steps 8000 --channels 21 --interstitial-weight 1.5 Y,Zn Sr,Ti Nb,Cs
      python scripts/heldout_element_ablation.py --steps 8000 --compare-maxima-fraction 0,0.25,0.5 --interstitial-weight 1.5 \
          --multiple 1 Y,Zn Sr,Ti Nb,Cs
      python scripts/heldout_element_ablation.py --steps 8000 --compare-steps 24000 --interstitial-weight 1.5 \
          Y,Zn Sr,Ti Nb,Cs
(session 4: 17 = without the electrostatic channel; session 5: without the species channels;
session 6: do more per-voxel steps transfer;
session 7: ``--compare-width 256``, is the per-voxel branch short of capacity;
``--ensemble 2``, does the mean of two seeds transfer better than one (and does their disagreement
flag the cells and voxels where it is wrong: the Spearman of spread against error); ``--extra
log_participation``, a candidate channel computed here, compared at ``--interstitial-weight``;
session 8: ``--compare-cell-weight``, do voxels drawn as ``evaluate`` pools them transfer better;
``--channels 21``, the compression channel ln(V/V0) (run as a candidate ``--extra``, now channel 22);
session 11: ``--compare-maxima-fraction``, batches that oversample the DFT maxima, on the stride-free
grids of inference (``--multiple 1``);
docs/surrogate.md has the tables; ~20 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from elf_workflows.surrogate.data import dataset_path, holdout_fraction, load_cells
from elf_workflows.surrogate.features import FEATURE_NAMES, N_FEATURES, log_participation
from elf_workflows.surrogate.model import PeriodicUNet, UNetConfig
from elf_workflows.surrogate.train import pointwise_elf, pretrain_pointwise

#: candidate channels not (yet) in the model, by name: structure, native grid shape → (nx, ny, nz)
EXTRA_CHANNELS = {"log_participation": log_participation}


def fit(train, channels: list[int], steps: int, weight: float = 0.0, seed: int = 0,
        width: int | None = None, cell_power: float = 0.0, maxima_fraction: float = 0.0) -> PeriodicUNet:
    """The per-voxel branch fitted on ``train`` with the given channels (seed 0: the historical runs)."""
    for cell in train:
        cell.features = np.ascontiguousarray(cell.all_features[channels])
    torch.manual_seed(seed)
    net = PeriodicUNet(UNetConfig(in_channels=len(channels), point_channels=width or UNetConfig().point_channels))
    pretrain_pointwise(net, train, steps, np.random.default_rng(1 + seed), interstitial_weight=weight,
                       cell_weight_power=cell_power, maxima_fraction=maxima_fraction)
    return net


def predict(net: PeriodicUNet, cells, channels: list[int]) -> list[np.ndarray]:
    """Per-voxel ELF of each cell (the branch alone: sigmoid(head bias + point(x)))."""
    out = []
    with torch.no_grad():
        for cell in cells:
            x = torch.from_numpy(np.ascontiguousarray(cell.all_features[channels]).reshape(len(channels), -1).T)
            out.append(pointwise_elf(net, x).numpy().reshape(cell.target.shape))
    return out


def score(predictions: list[np.ndarray], val) -> dict:
    """Voxel MAE (mean over cells; pooled over voxels as ``evaluate`` does; mean over the cells below
    V/V0 = 0.45), MAE/R² at the DFT maxima, MAE and bias at the interstitial maxima."""
    errors, sums, at_max, voids = [], [], [], []
    for pred, cell in zip(predictions, val):
        error = np.abs(pred - cell.target)
        errors.append(error.mean())
        sums.append(error.sum())
        at_max.append(np.stack([cell.target[cell.maxima], pred[cell.maxima]], 1))
        void = cell.maxima & cell.interstitial
        voids.append(np.stack([cell.target[void], pred[void]], 1))
    v, w = np.concatenate(at_max), np.concatenate(voids)
    residual = ((v[:, 1] - v[:, 0]) ** 2).sum()
    compressed = [e for e, cell in zip(errors, val) if cell.v_ratio < 0.45]
    return {"voxel_mae": round(float(np.mean(errors)), 4),
            "voxel_mae_pooled": round(float(np.sum(sums) / sum(cell.target.size for cell in val)), 4),
            "voxel_mae_compressed": round(float(np.mean(compressed)), 4) if compressed else None,
            "void_maxima_mae": round(float(np.abs(w[:, 1] - w[:, 0]).mean()), 4),
            "void_maxima_bias": round(float((w[:, 1] - w[:, 0]).mean()), 4),
            "maxima_mae": round(float(np.abs(v[:, 1] - v[:, 0]).mean()), 4),
            "maxima_r2": round(float(1 - residual / ((v[:, 0] - v[:, 0].mean()) ** 2).sum()), 3)}


def fit_and_score(train, val, channels: list[int], steps: int, weight: float = 0.0,
                  names: list[str] | None = None, width: int | None = None, cell_power: float = 0.0,
                  maxima_fraction: float = 0.0) -> dict:
    net = fit(train, channels, steps, weight, width=width, cell_power=cell_power, maxima_fraction=maxima_fraction)
    names = names or list(FEATURE_NAMES)
    return {"channels": len(channels), "dropped": [n for i, n in enumerate(names) if i not in channels],
            "point_channels": net.config.point_channels, "cell_weight_power": cell_power,
            "maxima_fraction": maxima_fraction,
            "interstitial_weight": weight, **score(predict(net, val, channels), val)}


def ensemble_rows(train, val, steps: int, weight: float, members: int) -> list[dict]:
    """Each of ``members`` seeds alone, then their mean ELF: what averaging independent fits buys."""
    every = list(range(N_FEATURES))
    preds, rows = [], []
    for seed in range(members):
        preds.append(predict(fit(train, every, steps, weight, seed), val, every))
        rows.append({"member": seed, **score(preds[-1], val)})
    mean = [np.mean([p[i] for p in preds], axis=0) for i in range(len(val))]
    rows.append({"member": f"mean of {members}", **score(mean, val), **disagreement_vs_error(preds, mean, val)})
    return rows


def disagreement_vs_error(preds: list[list[np.ndarray]], mean: list[np.ndarray], val) -> dict:
    """Whether the members' disagreement flags the cells where the mean is wrong (an uncertainty proxy):
    Spearman over cells of the mean |member − mean| against the mean's voxel MAE, and over all
    voxels of the same two quantities voxel by voxel."""
    from scipy.stats import spearmanr

    spread = [np.mean([np.abs(p[i] - mean[i]) for p in preds], axis=0) for i in range(len(val))]
    error = [np.abs(mean[i] - cell.target) for i, cell in enumerate(val)]
    per_cell = spearmanr([s.mean() for s in spread], [e.mean() for e in error])[0]
    per_voxel = spearmanr(np.concatenate([s.ravel() for s in spread]), np.concatenate([e.ravel() for e in error]))[0]
    return {"spread_vs_error_spearman_cells": round(float(per_cell), 3),
            "spread_vs_error_spearman_voxels": round(float(per_voxel), 3),
            "mean_spread": round(float(np.mean([s.mean() for s in spread])), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("held_out", nargs="+", help="comma-separated element sets, e.g. Y,Zn Sr,Ti")
    parser.add_argument("--data", default="data/reference")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--channels", type=int, default=None,
                        help="channels of the reduced model (default: all but the last); with --interstitial-weight, "
                             "a channel comparison at that weighting")
    parser.add_argument("--drop", default=None, help="compare all channels with all but these (comma-separated names)")
    parser.add_argument("--interstitial-weight", type=float, default=0.0,
                        help="compare plain L1 with this void weighting (all channels) instead of channel counts")
    parser.add_argument("--compare-steps", type=int, default=0,
                        help="compare --steps with this many steps instead (all channels, --interstitial-weight in both)")
    parser.add_argument("--ensemble", type=int, default=0,
                        help="instead: fit this many seeds (all channels, --interstitial-weight) and score their mean ELF")
    parser.add_argument("--compare-width", type=int, default=0,
                        help="instead: the per-voxel branch at its default width vs this width (all channels, "
                             "--interstitial-weight in both)")
    parser.add_argument("--compare-cell-weight", default=None,
                        help="instead: cells drawn uniformly vs with probability ∝ voxels^POWER, for each "
                             "comma-separated POWER (all channels, --interstitial-weight in all)")
    parser.add_argument("--compare-maxima-fraction", default=None,
                        help="instead: batches with each of these comma-separated fractions of DFT-maxima voxels, "
                             "e.g. 0,0.25 (all channels, --interstitial-weight in all)")
    parser.add_argument("--width", type=int, default=None,
                        help="per-voxel branch width in the --compare-maxima-fraction runs (default: the model's, 128)")
    parser.add_argument("--multiple", type=int, default=None,
                        help="native grid sizes are multiples of this (default: the U-Net's stride, 4, as every run "
                             "before session 11; 1: the stride-free grids that shipped per-voxel models use since session 10)")
    parser.add_argument("--extra", default=None, choices=sorted(EXTRA_CHANNELS),
                        help="append this candidate channel (computed here) and compare all channels without and with it")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="processes preparing the cells")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = dataset_path(args.data)
    records = list(dataset.records(split="train")) + list(dataset.records(split="val"))
    elements = {r["id"]: set(r["elements"]) for r in records}
    start = time.perf_counter()
    cfg = UNetConfig()
    cells = load_cells(dataset, records, cfg.spacing, args.multiple or cfg.multiple, workers=args.workers)
    for cell in cells:
        cell.all_features = cell.features
    names = list(FEATURE_NAMES)
    if args.extra:
        for cell in cells:
            extra = EXTRA_CHANNELS[args.extra](dataset.load_structure(cell.id), cell.target.shape)
            cell.all_features = np.concatenate([cell.all_features, extra[None]])
        names.append(args.extra)
        args.channels = N_FEATURES
    every = list(range(len(names)))
    if args.drop:
        unknown = set(args.drop.split(",")) - set(FEATURE_NAMES)
        if unknown:
            parser.error(f"unknown channels {sorted(unknown)}; known: {', '.join(FEATURE_NAMES)}")
        reduced = [i for i in every if FEATURE_NAMES[i] not in args.drop.split(",")]
    else:
        reduced = every[:args.channels if args.channels is not None else -1]
    channel_run = bool(args.extra or args.drop or args.channels is not None)
    compared = (f"{args.ensemble} seeds and their mean" if args.ensemble else
                f"maxima fractions {args.compare_maxima_fraction}" if args.compare_maxima_fraction else
                f"cell weight power 0 vs {args.compare_cell_weight}" if args.compare_cell_weight else
                f"per-voxel width {UNetConfig().point_channels} vs {args.compare_width}" if args.compare_width else
                f"{args.steps} vs {args.compare_steps} steps" if args.compare_steps else
                f"plain L1 vs --interstitial-weight {args.interstitial_weight:g}" if args.interstitial_weight > 0 and not channel_run
                else f"{len(reduced)} channels (without {', '.join(names[i] for i in every if i not in reduced)})"
                     f" vs {len(every)}")
    print(f"{len(cells)} cells prepared in {time.perf_counter() - start:.0f} s; comparing {compared}", flush=True)
    for held in (set(h.split(",")) for h in args.held_out):
        train = [c for c in cells if not elements[c.id] & held]
        val = sorted((c for c in cells if elements[c.id] & held), key=lambda c: holdout_fraction(c.id))[:150]

        def emit(row: dict, steps: int = args.steps) -> None:
            print(json.dumps({"held_out": ",".join(sorted(held)), "n_train": len(train), "n_val": len(val),
                              "steps": steps, **row}), flush=True)

        if args.ensemble:
            for row in ensemble_rows(train, val, args.steps, args.interstitial_weight, args.ensemble):
                emit(row)
            continue
        if args.compare_width:
            for width in (None, args.compare_width):
                emit(fit_and_score(train, val, every, args.steps, args.interstitial_weight, names, width))
            continue
        if args.compare_cell_weight:
            for power in [0.0, *map(float, args.compare_cell_weight.split(","))]:
                emit(fit_and_score(train, val, every, args.steps, args.interstitial_weight, names, cell_power=power))
            continue
        if args.compare_maxima_fraction:
            for fraction in map(float, args.compare_maxima_fraction.split(",")):
                emit(fit_and_score(train, val, every, args.steps, args.interstitial_weight, names,
                                   width=args.width, maxima_fraction=fraction))
            continue
        if args.compare_steps:
            variants = [(every, args.interstitial_weight, steps) for steps in (args.steps, args.compare_steps)]
        elif args.interstitial_weight > 0 and not channel_run:
            variants = [(every, 0.0, args.steps), (every, args.interstitial_weight, args.steps)]
        else:
            weight = args.interstitial_weight  # channel runs before session 7: plain L1 (no weight given)
            variants = [(reduced, weight, args.steps), (every, weight, args.steps)]
        for n, weight, steps in variants:
            emit(fit_and_score(train, val, n, steps, weight, names), steps)


if __name__ == "__main__":
    main()
