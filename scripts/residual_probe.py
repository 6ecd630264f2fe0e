"""How much of the per-voxel branch's error could a smooth non-local correction remove? A linear bound.

The residual ELF − (per-voxel branch of the shipped model) on each voxel is fitted by linear least
squares to: a constant, the branch's prediction, and the 21 input channels and the prediction each
Gaussian-smoothed (periodic, isotropic) at 0.4, 0.8 and 1.6 Å. Fitted on the first 400 training
cells by record-id hash, scored on the first 150 validation cells. The test split is never read.

Run:  python scripts/residual_probe.py      (session 6: R² 0.082 train, 0.022 validation; ~4 min on 2 cores)
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from elf_workflows.grids import gaussian_smooth
from elf_workflows.surrogate.data import dataset_path, holdout_fraction, load_cells, split_records
from elf_workflows.surrogate.infer import load_model

SIGMAS = (0.4, 0.8, 1.6)  # Å


def design(dataset, records, net) -> tuple[np.ndarray, np.ndarray]:
    """Rows of regressors (one per voxel) and the residual target."""
    x_rows, y_rows = [], []
    for cell in load_cells(dataset, records, net.config.spacing, net.config.multiple):
        lattice = dataset.load_structure(cell.id).lattice
        with torch.no_grad():
            pointwise = torch.sigmoid(net.pointwise(torch.from_numpy(cell.features)[None]) + net.head.bias)[0, 0].numpy()
        cols = [np.ones(pointwise.size), pointwise.ravel()]
        for sigma in SIGMAS:
            cols += [gaussian_smooth(f.astype(float), lattice, sigma).ravel() for f in cell.features]
            cols.append(gaussian_smooth(pointwise.astype(float), lattice, sigma).ravel())
        x_rows.append(np.stack(cols, 1))
        y_rows.append((cell.target - pointwise).ravel())
    return np.concatenate(x_rows), np.concatenate(y_rows)


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    dataset = dataset_path("data/reference")
    train, val = split_records(dataset)
    train = sorted(train, key=lambda r: holdout_fraction(r["id"]))[:400]
    val = sorted(val, key=lambda r: holdout_fraction(r["id"]))[:150]
    net = load_model().net
    x_train, y_train = design(dataset, train, net)
    x_val, y_val = design(dataset, val, net)
    coef, *_ = np.linalg.lstsq(x_train, y_train, rcond=None)
    for name, x, y in (("train", x_train, y_train), ("val", x_val, y_val)):
        fit = x @ coef
        r2 = 1 - ((y - fit) ** 2).sum() / ((y - y.mean()) ** 2).sum()
        print(f"{name}: residual MAE {np.abs(y).mean():.4f} -> {np.abs(y - fit).mean():.4f}; R2 {r2:.3f}")


if __name__ == "__main__":
    main()
