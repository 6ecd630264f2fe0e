#!/usr/bin/env python
"""GPAW ELF cost: seconds per cell against atoms per cell and k-point density (one core).

Cells: fcc Al as the 1-atom primitive, 2-atom (tetragonal) and 4-atom (conventional cubic) cells of
the same crystal, so the physics is identical and only the cell size changes. Wall and CPU seconds are
both reported: GPAW runs single-threaded, so CPU seconds are what a cell costs on an idle core. Settings: the
``training`` preset with the k-point density varied. Prints a markdown table; ``--json`` for JSON.

    OMP_NUM_THREADS=1 python benchmarks/bench_gpaw.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from pymatgen.core import Lattice, Structure  # noqa: E402

from elf_workflows.reference.gpaw import TRAINING, compute_gpaw_elf  # noqa: E402

A = 4.05  # Å, fcc Al


def al_cells() -> dict[int, Structure]:
    """fcc Al with 1, 2 and 4 atoms per cell."""
    prim = Structure(Lattice([[0, A / 2, A / 2], [A / 2, 0, A / 2], [A / 2, A / 2, 0]]), ["Al"], [[0, 0, 0]])
    tet = Structure(Lattice.tetragonal(A / np.sqrt(2), A), ["Al", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    conv = Structure(Lattice.cubic(A), ["Al"] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    return {1: prim, 2: tet, 4: conv}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kdensities", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for natoms, s in al_cells().items():
        for kd in args.kdensities:
            settings = replace(TRAINING, kpoint_density=kd)
            start = time.perf_counter()
            r = compute_gpaw_elf(s, settings)
            wall = time.perf_counter() - start
            rows.append({"atoms": natoms, "kpoint_density": kd, "kpoints": r.settings["kpoints"],
                         "grid": list(r.shape), "iterations": r.iterations, "seconds": round(wall, 2),
                         "cpu_seconds": r.convergence["cpu_seconds"],
                         "elf_max": round(float(r.elf.max()), 4)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| atoms | k-density (Å) | k-points | grid | SCF iter | wall s | CPU s | ELF max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['atoms']} | {r['kpoint_density']:g} | {'x'.join(map(str, r['kpoints']))} | "
              f"{'x'.join(map(str, r['grid']))} | {r['iterations']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['elf_max']:.4f} |")


if __name__ == "__main__":
    main()
