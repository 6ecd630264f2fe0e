"""Benchmark: SAD time and peak memory for 1, 16 and 128 atoms at 0.1 Å spacing.

Target (issue #3): a 128-atom cell on a 128³ grid in under 1 s and 0.5 GB on 2 cores.
Run:  .venv/bin/python benchmarks/bench_sad.py   (prints a Markdown table for docs/benchmarks.md)
"""

from __future__ import annotations

import platform
import time
import tracemalloc

import numpy as np
from pymatgen.core import Lattice, Structure

from elf_workflows.grids import grid_for_spacing
from elf_workflows.sad import form_factor, integrate, sad_density, valence_count


def cells() -> list[tuple[str, Structure]]:
    bcc = Structure.from_spacegroup("Im-3m", Lattice.cubic(3.2), ["Ca"], [[0, 0, 0]])  # 2 atoms, compressed Ca
    one = Structure(Lattice.cubic(3.2), ["Ca"], [[0, 0, 0]])
    sixteen = bcc * (2, 2, 2)
    binary = bcc * (4, 4, 4)
    binary.replace_species({"Ca": "Ca"})
    for i in range(0, len(binary), 2):  # a 64:64 Ca–Y ordering on the 128-atom cell
        binary.replace(i, "Y")
    return [("1 atom (sc Ca, a=3.2 Å)", one), ("16 atoms (bcc Ca 2x2x2)", sixteen),
            ("128 atoms (bcc CaY 4x4x4)", binary)]


def measure(structure: Structure, spacing: float = 0.1, repeats: int = 3) -> dict:
    shape = grid_for_spacing(structure, spacing)
    for el in structure.composition.elements:  # form-factor tables are built once per process
        form_factor(el.symbol, np.array([0.0]))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        rho = sad_density(structure, shape)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    sad_density(structure, shape)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"shape": shape, "seconds": min(times), "peak_mb": peak / 1e6,
            "error": abs(integrate(rho, structure) - valence_count(structure))}


def main() -> None:
    print(f"SAD benchmark on {platform.processor() or platform.machine()}, numpy {np.__version__}\n")
    print("| cell | grid | time (s) | peak memory (MB) | |∫ρ − N_val| |")
    print("| --- | --- | --- | --- | --- |")
    for name, structure in cells():
        r = measure(structure)
        print(f"| {name} | {'×'.join(map(str, r['shape']))} | {r['seconds']:.3f} | {r['peak_mb']:.0f} | {r['error']:.1e} |")


if __name__ == "__main__":
    main()
