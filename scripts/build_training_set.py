#!/usr/bin/env python
"""Build (or grow) the shipped GPAW training set in data/reference/.

Generates the cells with ``scripts/make_training_structures.py`` and runs the resumable builder with the
``training`` preset. Stop it at any time (Ctrl-C or kill); rerunning skips every finished cell, so
growing the set is rerunning with a larger ``--count`` (same ``--seed``) or another seed. The
high-pressure part of the shipped set::

    python scripts/build_training_set.py --count 1500 --seed 1 --pressures 30 350

Usage (the machine-friendly way)::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/build_training_set.py --count 3000 --workers 1 \\
        > build.log 2>&1 &
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_training_structures import generate  # noqa: E402

from elf_workflows.dataset.build import build_dataset, settings_from_options  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="cells to generate (finished ones are skipped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pressures", type=float, nargs=2, metavar=("PMIN", "PMAX"),
                        help="compress by equation of state to a pressure in [PMIN, PMAX] GPa (the high-pressure set)")
    parser.add_argument("--max-ratio", type=float, default=0.5, help="with --pressures: keep cells with V/V0 below this")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preset", default="training")
    parser.add_argument("-o", "--output", default="data/reference")
    args = parser.parse_args()
    docs = generate(args.count, args.seed, pressures=args.pressures, max_ratio=args.max_ratio)
    settings = settings_from_options(args.preset)

    def log(rec: dict) -> None:
        print(f"{rec['status']:6s} {rec['id']} {rec.get('source', '')} {rec.get('seconds', 0):.1f} s "
              f"{rec.get('reason', '')}", flush=True)

    counts = build_dataset(docs, args.output, settings, workers=args.workers, on_record=log)
    print(counts, flush=True)


if __name__ == "__main__":
    main()
