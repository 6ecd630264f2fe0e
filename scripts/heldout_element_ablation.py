"""Do the surrogate's input channels transfer to elements never trained on? A per-voxel ablation.

For each set of held-out elements, every ``train``/``val`` cell that contains one of them becomes
validation (the first 150 by record-id hash), the rest training; the per-voxel branch alone is fitted
(:func:`elf_workflows.surrogate.train.pretrain_pointwise`, same seed) once on the first
``--channels`` input channels and once on all of them, and scored on the held-out cells: voxel MAE,
MAE and R² at the DFT ELF maxima. The ``test`` split is never read.

Run:  python scripts/heldout_element_ablation.py --steps 8000 --channels 17 Y,Zn Sr,Ti Nb,Cs
(session 4: 17 = without the electrostatic channel; docs/surrogate.md has the table; ~20 min on 2 cores)
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


def fit_and_score(train, val, n_channels: int, steps: int) -> dict:
    for cell in train + val:
        cell.features = cell.all_features[:n_channels]
    torch.manual_seed(0)
    net = PeriodicUNet(UNetConfig(in_channels=n_channels))
    pretrain_pointwise(net, train, steps, np.random.default_rng(1))
    errors, at_max = [], []
    with torch.no_grad():
        for cell in val:
            x = torch.from_numpy(cell.features.reshape(n_channels, -1).T)
            pred = torch.sigmoid(net.head.bias + _point_as_mlp(net.point, x)[:, 0]).numpy().reshape(cell.target.shape)
            errors.append(np.abs(pred - cell.target).mean())
            at_max.append(np.stack([cell.target[cell.maxima], pred[cell.maxima]], 1))
    v = np.concatenate(at_max)
    residual = ((v[:, 1] - v[:, 0]) ** 2).sum()
    return {"channels": n_channels, "voxel_mae": round(float(np.mean(errors)), 4),
            "maxima_mae": round(float(np.abs(v[:, 1] - v[:, 0]).mean()), 4),
            "maxima_r2": round(float(1 - residual / ((v[:, 0] - v[:, 0].mean()) ** 2).sum()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("held_out", nargs="+", help="comma-separated element sets, e.g. Y,Zn Sr,Ti")
    parser.add_argument("--data", default="data/reference")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--channels", type=int, default=N_FEATURES - 1, help="channels of the reduced model")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = dataset_path(args.data)
    records = list(dataset.records(split="train")) + list(dataset.records(split="val"))
    elements = {r["id"]: set(r["elements"]) for r in records}
    start = time.perf_counter()
    cfg = UNetConfig()
    cells = load_cells(dataset, records, cfg.spacing, cfg.multiple)
    for cell in cells:
        cell.all_features, cell.maxima = cell.features, local_maxima(cell.target)
    print(f"{len(cells)} cells prepared in {time.perf_counter() - start:.0f} s; reduced model: "
          f"{FEATURE_NAMES[:args.channels][-1]} is its last channel", flush=True)
    for held in (set(h.split(",")) for h in args.held_out):
        train = [c for c in cells if not elements[c.id] & held]
        val = sorted((c for c in cells if elements[c.id] & held), key=lambda c: holdout_fraction(c.id))[:150]
        for n in (args.channels, N_FEATURES):
            row = {"held_out": ",".join(sorted(held)), "n_train": len(train), "n_val": len(val),
                   **fit_and_score(train, val, n, args.steps)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
