"""How converged is the shipped training reference, and how far is the surrogate from a converged one?

The shipped dataset (``data/reference``) was computed with GPAW's ``training`` preset (300 eV, k-point
density 2 Å, 0.2 Å grid, loose SCF criteria; docs/reference.md). This script recomputes a uniform,
seeded sample of one split's cells with a tighter preset (default: ``default``, 400 eV, k-density 4 Å,
0.18 Å, tight SCF) on each record's own grid, and scores, pooled over the sample as ``elf-workflows
evaluate`` pools them (voxel MAE; MAE and R² at the local maxima of the field taken as truth):

- ``reference_vs_converged``: the stored reference against the recomputed one (truth), i.e. the
  error the training preset itself carries;
- ``surrogate_vs_reference``: the shipped surrogate against the stored reference (what ``evaluate``
  reports), on the same cells;
- ``surrogate_vs_converged``: the surrogate against the recomputed reference.

The sample is drawn before anything is computed (``--seed``), never chosen by the surrogate's error;
``--ids`` audits given records instead (a diagnostic, not a metric). ``--set NAME=VALUE`` overrides one
field of the preset's :class:`~elf_workflows.reference.gpaw.GpawSettings` (repeatable), to tell which
setting matters. One JSON line per cell, then the summary.

Run:  python scripts/reference_convergence_audit.py --split val --sample 16 --seed 0
      python scripts/reference_convergence_audit.py --ids cd6a42a6a2659cf1 --preset training --set kpoint_density=4
(session 12: docs/surrogate.md, "How converged is the reference at its maxima")
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from elf_workflows.errors import InputError
from elf_workflows.reference.gpaw import PRESETS, compute_gpaw_elf
from elf_workflows.surrogate.data import dataset_path, local_maxima
from elf_workflows.surrogate.domain import compression_ratio
from elf_workflows.surrogate.evaluate import r2_score
from elf_workflows.surrogate.infer import load_model, predict_elf

COMPARISONS = {"reference_vs_converged": ("converged", "reference"),
               "surrogate_vs_reference": ("reference", "surrogate"),
               "surrogate_vs_converged": ("converged", "surrogate")}


def compare(fields: dict[str, np.ndarray]) -> dict:
    """Per comparison (truth, other): sum |d| and count over voxels, and the (truth, other) pairs at
    the truth's local maxima (:func:`elf_workflows.surrogate.data.local_maxima`)."""
    out = {}
    for name, (truth, other) in COMPARISONS.items():
        t, o = fields[truth], fields[other]
        mask = local_maxima(t)
        out[name] = {"abs_sum": float(np.abs(o - t).sum()), "n": t.size, "at_maxima": np.stack([t[mask], o[mask]], 1)}
    return out


def summarise(parts: list[dict]) -> dict:
    """Pooled voxel MAE, MAE and R² at the maxima, per comparison, over the audited cells (one cell: its
    own row). No maxima: MAE and R² are ``None``; one maximum: R² is ``None``."""
    summary = {}
    for name in COMPARISONS:
        pairs = np.concatenate([p[name]["at_maxima"] for p in parts])
        summary[name] = {"voxel_mae": round(sum(p[name]["abs_sum"] for p in parts) / sum(p[name]["n"] for p in parts), 4),
                         "maxima_mae": round(float(np.abs(pairs[:, 1] - pairs[:, 0]).mean()), 4) if len(pairs) else None,
                         "maxima_r2": round(r2_score(pairs[:, 0], pairs[:, 1]), 3) if len(pairs) > 1 else None,
                         "n_maxima": len(pairs)}
    return summary


def parse_setting(value: str, annotation: str):
    """A ``--set`` value as the type its :class:`GpawSettings` field is annotated with (a string here)."""
    kind = annotation.split("|")[0].strip()
    if kind == "str":
        return value
    if kind == "bool":
        return value.lower() in ("1", "true", "yes")
    return int(value) if kind == "int" else float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/reference")
    parser.add_argument("--split", default="val", help="split to sample (the test split only for a shipped model)")
    parser.add_argument("--sample", type=int, default=16, help="cells drawn uniformly from the split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ids", default=None, help="comma-separated record ids instead of a sample (a diagnostic)")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS), help="settings of the recomputation")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override one setting of the preset, e.g. kpoint_density=4 (repeatable)")
    parser.add_argument("--timeout", type=float, default=900.0, help="wall-time cap per GPAW run (s)")
    parser.add_argument("--save", default=None, metavar="DIR", help="write each recomputed ELF to DIR/ID.npy")
    parser.add_argument("--model", default=None, help="surrogate model file (default: the shipped weights)")
    args = parser.parse_args()
    settings = dataclasses.replace(PRESETS[args.preset], timeout_s=args.timeout)
    if any("=" not in item for item in args.set):
        parser.error("--set takes NAME=VALUE, e.g. --set ecut_ev=600")
    overrides = dict(item.split("=", 1) for item in args.set)
    annotations = {f.name: f.type for f in dataclasses.fields(settings)}
    unknown = set(overrides) - set(annotations)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; known: {', '.join(annotations)}")
    settings = dataclasses.replace(settings, **{k: parse_setting(v, annotations[k]) for k, v in overrides.items()})
    try:
        dataset = dataset_path(args.data)
        if args.ids:
            records = [dataset.record(i) for i in args.ids.split(",")]
        else:
            records = sorted(dataset.records(split=args.split), key=lambda r: r["id"])
            pick = np.random.default_rng(args.seed).choice(len(records), min(args.sample, len(records)), replace=False)
            records = [records[i] for i in sorted(pick)]
    except InputError as exc:
        parser.error(str(exc))
    model = load_model(args.model)
    parts = []
    for rec in records:
        structure, reference, _ = dataset.load(rec["id"])
        start = time.perf_counter()
        try:
            result = compute_gpaw_elf(structure, settings, grid=reference.shape)
        except Exception as exc:  # noqa: BLE001 - report and go on: one failed cell should not lose the sample
            print(json.dumps({"id": rec["id"], "formula": rec.get("formula"), "error": str(exc)}), flush=True)
            continue
        fields = {"reference": reference.astype(float), "converged": np.clip(result.elf, 0.0, 1.0),
                  "surrogate": predict_elf(structure, shape=reference.shape, model=model)}
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            np.save(Path(args.save) / f"{rec['id']}.npy", fields["converged"])
        part = compare(fields)
        parts.append(part)
        row = {"id": rec["id"], "formula": rec.get("formula"), "v_ratio": round(compression_ratio(structure), 3),
               "kpoints": [rec["settings"]["kpoints"], result.settings["kpoints"]],
               "seconds": round(time.perf_counter() - start, 1)}
        for name, cell in summarise([part]).items():
            row[name] = [cell["voxel_mae"], cell["maxima_mae"]]
        print(json.dumps(row), flush=True)
    if parts:
        print(json.dumps({"cells": len(parts), "preset": args.preset, "overrides": overrides,
                          "model": model.version, **summarise(parts)}), flush=True)


if __name__ == "__main__":
    main()
