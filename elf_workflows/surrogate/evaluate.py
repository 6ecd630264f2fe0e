"""Held-out evaluation of the surrogate against DFT, with the gradient-expansion and constant baselines.

Metrics, on the reference grid of each cell: voxel MAE and RMSE; the ELF at the reference's local
maxima (periodic 3×3×3 neighbourhood, ELF > 0.05), predicted vs DFT, MAE and R²; per-structure rows;
the surrogate's wall time against the GPAW time stored with each record; the same metrics per V/V0
bin (:data:`COMPRESSION_BINS`). Figures: a parity plot at the maxima, and DFT vs ML isosurfaces
(marching cubes, scikit-image) and slices of B2 CaBa and B2 FePb.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np

from elf_workflows.errors import InputError
from elf_workflows.sad import sad_density
from elf_workflows.surrogate.data import dataset_path, local_maxima
from elf_workflows.surrogate.domain import compression_ratio
from elf_workflows.surrogate.features import gradient_expansion_elf
from elf_workflows.surrogate.infer import SurrogateModel, load_model, predict_elf

METHODS = ("surrogate", "gradient_expansion", "constant")
FIGURE_PAIRS = (("Ba", "Ca"), ("Fe", "Pb"))
#: V/V0 bins of the per-compression summary: the screening domain (100–300 GPa) lies mostly below 0.45
COMPRESSION_BINS = {"V/V0 < 0.3": (0.0, 0.3), "0.3 <= V/V0 < 0.45": (0.3, 0.45), "V/V0 >= 0.45": (0.45, 9.0)}


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination 1 − SS_res/SS_tot."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    ss_tot = float(((y_true - y_true.mean()) ** 2).sum())
    return 1.0 - float(((y_true - y_pred) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")


def train_mean_elf(dataset, limit: int = 50) -> float:
    """Mean ELF over (up to ``limit``) training cells: the constant baseline; 0.5 for a dataset with
    no ``train`` split (``evaluate`` records which in ``constant_from``)."""
    values = []
    for i, rec in enumerate(dataset.records(split="train")):
        if i >= limit:
            break
        values.append(float(dataset.load(rec["id"])[1].mean()))
    return float(np.mean(values)) if values else 0.5


def _is_b2(structure, pair) -> bool:
    return (len(structure) == 2 and sorted(el.symbol for el in structure.composition.elements) == list(pair)
            and abs(structure.lattice.a - structure.lattice.b) < 1e-3 and abs(structure.lattice.a - structure.lattice.c) < 1e-3)


def evaluate(data: str | Path, split: str = "test", model: SurrogateModel | None = None,
             out_dir: str | Path | None = None, limit: int | None = None, log=None, scores: bool = False) -> dict:
    """Evaluate the surrogate and both baselines on the ``split`` cells of a reference dataset.

    Returns a dict with ``summary`` (per method: voxel MAE/RMSE, maxima MAE/R²), ``structures`` (rows),
    ``speed`` and ``figures``; writes ``metrics.json``, ``per_structure.csv``, ``parity.png`` and
    ``b2_slices.png`` under ``out_dir`` when given. ``scores``: also the template score of every cell
    as screening computes it (surrogate ELF, basins in the partition SAD) against the DFT score (DFT ELF,
    basins in the stored SCF density), summarised in ``template_scores`` (MAE, Spearman ρ).
    """
    model = model or load_model()
    dataset = dataset_path(data)
    records = list(dataset.records(split=split))
    if not records:
        raise InputError(f"no '{split}' records in {data}")
    if limit:
        records = records[:limit]
    const = train_mean_elf(dataset)
    rows, at_max = [], {m: [] for m in ("dft", *METHODS)}
    vox = {m: [0.0, 0.0, 0] for m in METHODS}  # sum |d|, sum d², count
    cell_vox = []  # the same sums per cell
    if scores:
        from elf_workflows.templates import score_template
        from elf_workflows.templates.score import SURROGATE_VOID_SIGMA, score_uncertainty
    fields = {}
    t_ml, t_dft = [], []
    for rec in records:
        structure, ref, dft_density = dataset.load(rec["id"])
        ref = ref.astype(float)
        start = time.perf_counter()
        ml = predict_elf(structure, shape=ref.shape, model=model)
        sec = time.perf_counter() - start
        ge = gradient_expansion_elf(sad_density(structure, ref.shape), structure.lattice)
        preds = {"surrogate": ml, "gradient_expansion": ge, "constant": np.full_like(ref, const)}
        mask = local_maxima(ref)
        row = {"id": rec["id"], "formula": rec.get("formula", structure.composition.reduced_formula),
               "source": rec.get("source", ""), "grid": "x".join(map(str, ref.shape)), "n_maxima": int(mask.sum()),
               "v_ratio": round(compression_ratio(structure), 4),
               "ml_seconds": round(sec, 3), "dft_seconds": rec.get("seconds")}
        at_max["dft"].append(ref[mask])
        cell_vox.append({})
        for m, p in preds.items():
            d = p - ref
            sums = (float(np.abs(d).sum()), float((d**2).sum()), d.size)
            cell_vox[-1][m] = sums
            vox[m] = [a + b for a, b in zip(vox[m], sums)]
            row[f"{m}_mae"] = round(float(np.abs(d).mean()), 5)
            row[f"{m}_max_mae"] = round(float(np.abs(d[mask]).mean()), 5) if mask.any() else None
            at_max[m].append(p[mask])
        if scores:
            row["dft_score"] = score_template(structure, ref, dft_density.astype(float), density_source="scf").score
            predicted = score_template(structure, ml)
            row["surrogate_score"] = predicted.score
            # what the surrogate-uncertainty engine stores for this template (docs/flows.md)
            row["surrogate_score_uncertainty"] = score_uncertainty(structure, predicted.attractors, SURROGATE_VOID_SIGMA)
        rows.append(row)
        t_ml.append(sec)
        if rec.get("seconds"):
            t_dft.append(float(rec["seconds"]))
        for pair in FIGURE_PAIRS:
            if pair not in fields and _is_b2(structure, pair):
                fields[pair] = (row["formula"], ref, ml, structure)
        if log:
            log(f"{row['formula']:>12s} {row['grid']:>10s}  MAE ML {row['surrogate_mae']:.4f}  "
                f"GE {row['gradient_expansion_mae']:.4f}  const {row['constant_mae']:.4f}  ({sec:.2f} s)")
    dft_max = np.concatenate(at_max["dft"])
    summary = _summarize(vox, at_max)
    by_compression = {}
    for label, (lo, hi) in COMPRESSION_BINS.items():
        picked = [i for i, r in enumerate(rows) if lo <= r["v_ratio"] < hi]
        if picked:
            by_compression[label] = {"n_structures": len(picked), **_summarize(
                {m: [sum(cell_vox[i][m][k] for i in picked) for k in range(3)] for m in METHODS},
                {m: [at_max[m][i] for i in picked] for m in at_max})}
    ge_ratio = summary["gradient_expansion"]["voxel_mae"] / max(summary["surrogate"]["voxel_mae"], 1e-12)
    speed = {"ml_seconds_median": float(np.median(t_ml)),
             "dft_seconds_median": float(np.median(t_dft)) if t_dft else None,
             "speedup_median": float(np.median(t_dft) / np.median(t_ml)) if t_dft else None}
    result = {"split": split, "n_structures": len(rows), "n_maxima": int(len(dft_max)), "model_version": model.version,
              "constant": const,
              "constant_from": "train split" if next(dataset.records(split="train"), None) else "0.5 (no train split)",
              "summary": summary, "by_compression": by_compression,
              "improvement_over_gradient_expansion": ge_ratio,
              "speed": speed, "structures": rows, "figures": {}}
    if scores:
        dft_scores, ml_scores = [r["dft_score"] for r in rows], [r["surrogate_score"] for r in rows]
        result["template_scores"] = {
            **score_agreement(dft_scores, ml_scores),
            "uncertainty": {"elf_sigma": SURROGATE_VOID_SIGMA, **uncertainty_agreement(
                dft_scores, ml_scores, [r["surrogate_score_uncertainty"] for r in rows])}}
    # B2 figures: look beyond the split if the pair is not in it
    for pair in FIGURE_PAIRS:
        if pair in fields:
            continue
        for rec in dataset.records():
            if sorted(rec.get("elements", [])) == list(pair):
                structure, ref, _ = dataset.load(rec["id"])
                if _is_b2(structure, pair):
                    fields[pair] = (rec.get("formula", ""), ref.astype(float),
                                    predict_elf(structure, shape=ref.shape, model=model), structure)
                    break
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "per_structure.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader(); writer.writerows(rows)
        parity_plot(dft_max, {m: np.concatenate(at_max[m]) for m in METHODS[:2]}, summary, out_dir / "parity.png")
        result["figures"]["parity"] = str(out_dir / "parity.png")
        if fields:
            slice_figure(fields, out_dir / "b2_slices.png", model.version)
            result["figures"]["b2_slices"] = str(out_dir / "b2_slices.png")
            isosurface_figure(fields, out_dir / "b2_isosurfaces.png", model.version)
            result["figures"]["b2_isosurfaces"] = str(out_dir / "b2_isosurfaces.png")
        result["figures"]["b2_pairs_found"] = ["".join(p) for p in fields]
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def score_agreement(dft: list[float], predicted: list[float]) -> dict:
    """MAE (e per metal atom) and Spearman ρ of predicted vs DFT template scores, plus how many are non-zero."""
    from scipy.stats import spearmanr

    dft, predicted = np.asarray(dft, float), np.asarray(predicted, float)
    rho = spearmanr(dft, predicted).statistic if len(dft) > 2 and np.ptp(dft) > 0 and np.ptp(predicted) > 0 else None
    return {"n_structures": int(len(dft)), "mae": float(np.abs(predicted - dft).mean()) if len(dft) else None,
            "spearman": None if rho is None else float(rho),
            "nonzero_dft": int((dft > 0).sum()), "nonzero_surrogate": int((predicted > 0).sum())}


def uncertainty_agreement(dft: list[float], predicted: list[float], uncertainty: list[float], top: int = 20) -> dict:
    """How well a score uncertainty flags the scores that are off: Spearman ρ of ``uncertainty`` against
    |predicted − DFT| over all cells and over the cells that either method scores (> 0), and how many of
    the ``top`` largest uncertainties are among the ``top`` largest errors (ties broken by cell order)."""
    from scipy.stats import spearmanr

    dft, predicted, uncertainty = (np.asarray(a, float) for a in (dft, predicted, uncertainty))
    error = np.abs(predicted - dft)

    def rho(mask) -> float | None:
        if mask.sum() < 3 or np.ptp(error[mask]) == 0 or np.ptp(uncertainty[mask]) == 0:
            return None
        return float(spearmanr(uncertainty[mask], error[mask]).statistic)

    k = min(top, len(error))
    flagged = set(np.argsort(-uncertainty, kind="stable")[:k].tolist())
    worst = set(np.argsort(-error, kind="stable")[:k].tolist())
    scored = (dft > 0) | (predicted > 0)
    return {"spearman": rho(np.ones(len(error), bool)), "spearman_scored": rho(scored),
            "n_scored": int(scored.sum()), "top": k, "top_hits": len(flagged & worst)}


def _summarize(vox: dict, at_max: dict) -> dict:
    """Per method: voxel MAE/RMSE from (sum |d|, sum d², count) and MAE/R² at the reference maxima."""
    dft_max = np.concatenate(at_max["dft"])
    summary = {}
    for m in METHODS:
        s_abs, s_sq, n = vox[m]
        pm = np.concatenate(at_max[m])
        summary[m] = {"voxel_mae": s_abs / n, "voxel_rmse": math.sqrt(s_sq / n),
                      "maxima_mae": float(np.abs(pm - dft_max).mean()) if len(pm) else None,
                      "maxima_r2": r2_score(dft_max, pm) if len(pm) > 1 else None}
    return summary


def parity_plot(dft: np.ndarray, preds: dict, summary: dict, path: Path) -> None:
    """Predicted vs DFT ELF at the DFT local maxima."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    styles = {"gradient_expansion": ("tab:gray", "gradient expansion"), "surrogate": ("tab:blue", "U-Net surrogate")}
    for m in ("gradient_expansion", "surrogate"):
        color, label = styles[m]
        s = summary[m]
        ax.scatter(dft, preds[m], s=8, alpha=0.6, color=color,
                   label=f"{label}: MAE {s['maxima_mae']:.3f}, R² {s['maxima_r2']:.2f}")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlim(0, 1); ax.set_ylim(0, 1)
    ax.set_xlabel("DFT ELF at maxima"); ax.set_ylabel("predicted ELF")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def slice_figure(fields: dict, path: Path, version: str) -> None:
    """DFT vs ML ELF side by side for each B2 cell: the (001) plane z=0, z=½ and the (1-10) diagonal plane."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(fields)
    fig, axes = plt.subplots(n, 6, figsize=(15, 2.7 * n), squeeze=False)
    for row, (pair, (formula, ref, ml, _)) in enumerate(fields.items()):
        nz = ref.shape[2]
        diag = lambda f: f[np.arange(f.shape[0]), np.arange(f.shape[0]) % f.shape[1], :]  # noqa: E731
        planes = [("z=0", lambda f: f[:, :, 0]), ("z=½", lambda f: f[:, :, nz // 2]), ("(1-10)", diag)]
        col = 0
        for name, cut in planes:
            for label, f in (("DFT", ref), ("ML", ml)):
                ax = axes[row, col]
                im = ax.imshow(cut(f).T, origin="lower", vmin=0, vmax=1, cmap="viridis")
                ax.set_title(f"{formula} {label} {name}", fontsize=8)
                ax.set_xticks([]); ax.set_yticks([])
                col += 1
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="ELF")
    fig.suptitle(f"DFT (GPAW) vs surrogate {version}", fontsize=9)
    fig.savefig(path, dpi=100); plt.close(fig)


def periodic_isosurface(field: np.ndarray, level: float, lattice) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes isosurface of a periodic grid field over one whole cell.

    The grid is wrapped by one voxel along each axis so surfaces close across the cell faces.
    Returns (vertices in Cartesian Å, triangle indices); empty arrays where ``level`` is not crossed.
    """
    from skimage.measure import marching_cubes

    padded = np.pad(field, [(0, 1)] * 3, mode="wrap")
    if not padded.min() < level < padded.max():
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=int)
    verts, faces, _, _ = marching_cubes(padded, level, spacing=tuple(1.0 / n for n in field.shape))
    return verts @ np.asarray(lattice.matrix), faces


def isosurface_figure(fields: dict, path: Path, version: str, quantile: float = 0.9) -> None:
    """DFT vs ML ELF isosurfaces side by side for each B2 cell: one unit cell with its edges, atoms as dots.

    The level of each row is the DFT field's ``quantile`` (the same level for DFT and ML), so the
    surfaces enclose the top 10 % of the reference ELF whatever its scale.
    """
    import itertools

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(fields)
    fig = plt.figure(figsize=(8, 3.8 * n))
    colours = ("tab:blue", "tab:red")
    for row, (formula, ref, ml, structure) in enumerate(fields.values()):
        level = float(np.quantile(ref, quantile))
        matrix = structure.lattice.matrix
        for col, (label, f) in enumerate((("DFT (GPAW)", ref), ("surrogate", ml))):
            ax = fig.add_subplot(n, 2, 2 * row + col + 1, projection="3d")
            verts, faces = periodic_isosurface(f, level, structure.lattice)
            if len(faces):
                ax.plot_trisurf(verts[:, 0], verts[:, 1], faces, verts[:, 2], color="goldenrod", alpha=0.6,
                                linewidth=0)
            for a, b in itertools.combinations(itertools.product((0, 1), repeat=3), 2):
                if sum(x != y for x, y in zip(a, b)) == 1:  # the 12 cell edges
                    ax.plot(*np.array([a, b], float).dot(matrix).T, color="0.6", lw=0.6)
            for i, el in enumerate(structure.composition.elements):
                xyz = np.array([site.coords for site in structure if site.specie == el])
                ax.scatter(*xyz.T, s=90, color=colours[i % 2], label=el.symbol, depthshade=False)
            ax.set_title(f"{formula} {label}, ELF = {level:.2f}", fontsize=9)
            ax.set_axis_off()
            ax.set_box_aspect((1, 1, 1))
        ax.legend(loc="upper right", fontsize=7)
    fig.suptitle(f"DFT vs surrogate {version}: isosurfaces at the DFT 90th percentile", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90); plt.close(fig)
