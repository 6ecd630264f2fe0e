"""End-to-end screening throughput: generate → SAD → ELF (surrogate) → attractors/score → store.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_screen.py [--count 60] [--threads 2] [--model PATH]

Templates are fcc/bcc/hcp/A15 cells of several metals at several volumes (``generate_sublattices`` when
it is available, else a built-in list), screened into a fresh embedded store. Prints templates per hour
(target ≥ 3600 on 2 cores) and the mean time per step. ``--untrained`` times a randomly initialised network
of the default architecture when no weights are shipped (timing only; the scores mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


ELEMENTS = ["La", "Y", "Ca", "Ce", "Sr", "Mg", "Al", "K", "Sc", "Ba"]
PROTOTYPES = ["fcc", "bcc", "hcp", "A15"]


def templates(count: int) -> tuple[list[dict], str]:
    """``count`` templates picked at random (seeded) from ELEMENTS × PROTOTYPES × 50–300 GPa."""
    entries: list[dict] = []
    source = "generate_sublattices"
    try:
        from elf_workflows.sublattices import generate_sublattices
    except ImportError as exc:
        generate_sublattices, source = None, f"built-in list ({exc})"
    for el in ELEMENTS:
        for proto in PROTOTYPES:
            if generate_sublattices is not None:
                try:
                    entries += generate_sublattices([el], [proto], [50, 100, 150, 200, 250, 300])
                    continue
                except Exception:  # noqa: BLE001 - an element/prototype without an EOS: use fixed volumes
                    pass
            from elf_workflows.templates.validation import Case, build

            for v in [14.0, 18.0, 22.0, 26.0, 30.0, 34.0]:
                s = build(Case("x", el, proto, v, None, ""))
                entries.append({"structure": s.as_dict(), "prototype": proto, "pressure_gpa": None,
                                "template_id": f"{el}-{proto}-{v:g}A3"})
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(entries))[:count]
    return [entries[i] for i in sorted(pick)], source


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None)
    parser.add_argument("--untrained", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from elf_workflows import screening
    from elf_workflows.store import TemplateStore

    if args.untrained:
        from elf_workflows.surrogate import SurrogateModel
        from elf_workflows.surrogate.model import PeriodicUNet, UNetConfig

        net = PeriodicUNet(UNetConfig()).eval()
        screening.use_surrogate_model(SurrogateModel(net=net, version="untrained-timing-only"))
    elif args.model:
        screening.use_surrogate_model(screening.surrogate_model(args.model))
    model = screening.surrogate_model()

    entries, source = templates(args.count)
    with tempfile.TemporaryDirectory() as tmp:
        store = TemplateStore.from_spec(Path(tmp) / "store").connect()
        start, cpu0 = time.perf_counter(), time.process_time()
        summary = screening.screen_sublattices(entries, store, engine="surrogate", progress=False)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        docs = [store.get(t, "surrogate") for t in summary.computed]
        steps = {k: float(np.mean([getattr(d.timings, k) or 0.0 for d in docs])) for k in ("elf", "score")}
        steps["store"] = summary.store_seconds / max(len(docs), 1)
        sizes = [int(np.prod(d.elf_source.grid_shape)) for d in docs]
        nsites = [d.nsites for d in docs]
        store.close()
    report = {
        "templates": len(summary.computed), "failed": len(summary.failed), "source": source,
        "model_version": str(model.version), "threads": args.threads, "wall_s": round(wall, 1),
        "templates_per_hour": round(3600 * len(summary.computed) / wall),
        # CPU seconds of this process (all threads): on a shared machine the wall time is inflated by
        # other jobs; 3600 / (cpu per template) is what one dedicated core would do with no parallelism
        "cpu_s": round(cpu, 1),
        "templates_per_cpu_hour": round(3600 * len(summary.computed) / cpu) if cpu > 0 else None,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "mean_step_s": {k: round(v, 3) for k, v in steps.items()},
        "mean_grid_voxels": int(np.mean(sizes)) if sizes else 0, "mean_sites": float(np.mean(nsites)) if nsites else 0,
        "cpu": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for k, v in report.items():
            print(f"{k:>18}: {v}")
    return 0 if not summary.failed else 1


if __name__ == "__main__":
    sys.exit(main())
