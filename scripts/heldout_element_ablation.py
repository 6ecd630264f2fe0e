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
      python scripts/heldout_element_ablation.py --steps 8000 --compare-steps 24000 --interstitial-weight 1.5 \
          Y,Zn Sr,Ti Nb,Cs
(session 4: 17 = without the electrostatic channel; session 5: without the species channels;
session 6: do more per-voxel steps transfer;
docs/surrogate.md has the tables; ~20 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from elf_workflows.surrogate.data import dataset_path, holdout_fraction, load_cells
from elf_workflows.surrogate.evaluate import local_maxima
from elf_workflows.surrogate.features import FEATURE_NAMES, N_FEATURES
from elf_workflows.surrogate.model import PeriodicUNet, UNetConfig
from elf_workflows.surrogate.train import _point_as_mlp, pretrain_pointwise


def fit_and_score(train, val, channels: list[int], steps: int, weight: float = 0.0) -> dict:
    n_channels = len(channels)
    for cell in train + val:
        cell.features = np.ascontiguousarray(cell.all_features[channels])
    torch.manual_seed(0)
    net = PeriodicUNet(UNetConfig(in_channels=n_channels))
    pretrain_pointwise(net, train, steps, np.random.default_rng(1), interstitial_weight=weight)
    errors, at_max, voids = [], [], []
    with torch.no_grad():
        for cell in val:
            x = torch.from_numpy(cell.features.reshape(n_channels, -1).T)
            pred = torch.sigmoid(net.head.bias + _point_as_mlp(net.point, x)[:, 0]).numpy().reshape(cell.target.shape)
            errors.append(np.abs(pred - cell.target).mean())
            at_max.append(np.stack([cell.target[cell.maxima], pred[cell.maxima]], 1))
            void = cell.maxima & cell.interstitial
            voids.append(np.stack([cell.target[void], pred[void]], 1))
    v, w = np.concatenate(at_max), np.concatenate(voids)
    residual = ((v[:, 1] - v[:, 0]) ** 2).sum()
    return {"channels": n_channels, "dropped": [n for i, n in enumerate(FEATURE_NAMES) if i not in channels],
            "interstitial_weight": weight, "voxel_mae": round(float(np.mean(errors)), 4),
            "void_maxima_mae": round(float(np.abs(w[:, 1] - w[:, 0]).mean()), 4),
            "void_maxima_bias": round(float((w[:, 1] - w[:, 0]).mean()), 4),
            "maxima_mae": round(float(np.abs(v[:, 1] - v[:, 0]).mean()), 4),
            "maxima_r2": round(float(1 - residual / ((v[:, 0] - v[:, 0].mean()) ** 2).sum()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("held_out", nargs="+", help="comma-separated element sets, e.g. Y,Zn Sr,Ti")
    parser.add_argument("--data", default="data/reference")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--channels", type=int, default=N_FEATURES - 1, help="channels of the reduced model")
    parser.add_argument("--drop", default=None, help="compare all channels with all but these (comma-separated names)")
    parser.add_argument("--interstitial-weight", type=float, default=0.0,
                        help="compare plain L1 with this void weighting (all channels) instead of channel counts")
    parser.add_argument("--compare-steps", type=int, default=0,
                        help="compare --steps with this many steps instead (all channels, --interstitial-weight in both)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="processes preparing the cells")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = dataset_path(args.data)
    records = list(dataset.records(split="train")) + list(dataset.records(split="val"))
    elements = {r["id"]: set(r["elements"]) for r in records}
    start = time.perf_counter()
    cfg = UNetConfig()
    cells = load_cells(dataset, records, cfg.spacing, cfg.multiple, workers=args.workers)
    for cell in cells:
        cell.all_features, cell.maxima = cell.features, local_maxima(cell.target)
    every = list(range(N_FEATURES))
    if args.drop:
        unknown = set(args.drop.split(",")) - set(FEATURE_NAMES)
        if unknown:
            parser.error(f"unknown channels {sorted(unknown)}; known: {', '.join(FEATURE_NAMES)}")
        reduced = [i for i in every if FEATURE_NAMES[i] not in args.drop.split(",")]
    else:
        reduced = every[:args.channels]
    compared = (f"{args.steps} vs {args.compare_steps} steps" if args.compare_steps else
                f"plain L1 vs --interstitial-weight {args.interstitial_weight:g}" if args.interstitial_weight > 0
                else f"{len(reduced)} channels (without {', '.join(FEATURE_NAMES[i] for i in every if i not in reduced)})"
                     f" vs {N_FEATURES}")
    print(f"{len(cells)} cells prepared in {time.perf_counter() - start:.0f} s; comparing {compared}", flush=True)
    for held in (set(h.split(",")) for h in args.held_out):
        train = [c for c in cells if not elements[c.id] & held]
        val = sorted((c for c in cells if elements[c.id] & held), key=lambda c: holdout_fraction(c.id))[:150]
        if args.compare_steps:
            variants = [(every, args.interstitial_weight, steps) for steps in (args.steps, args.compare_steps)]
        elif args.interstitial_weight > 0:
            variants = [(every, 0.0, args.steps), (every, args.interstitial_weight, args.steps)]
        else:
            variants = [(reduced, 0.0, args.steps), (every, 0.0, args.steps)]
        for n, weight, steps in variants:
            row = {"held_out": ",".join(sorted(held)), "n_train": len(train), "n_val": len(val), "steps": steps,
                   **fit_and_score(train, val, n, steps, weight)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
