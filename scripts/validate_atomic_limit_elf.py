"""Check the surrogate's atomic-limit ELF channel against GPAW's own pseudo ELF of free atoms.

One atom in a cubic box (Γ point, non-spin-polarised, the GPAW defaults of the reference engine
otherwise): GPAW's self-consistent pseudo ELF (``gpaw.elf``) against
:func:`elf_workflows.surrogate.features.atomic_limit_elf` of the same cell on GPAW's grid, which is
built from the radial tables alone (``scripts/build_atomic_densities.py``). Compared within
``--radius`` Å of the nucleus: farther out the tails of the periodic images overlap, and there the
superposition of two single-orbital tails (ELF → 0 midway, where the gradients cancel) is *meant*
to differ from the self-consistent ELF (one orbital, ELF → 1). Prints one JSON line per element.

Run:  python scripts/validate_atomic_limit_elf.py Li Ca   (about a minute per atom on one core)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
from pymatgen.core import Lattice, Structure

from elf_workflows.grids import fractional_grid
from elf_workflows.reference.gpaw import GpawSettings, compute_gpaw_elf
from elf_workflows.surrogate.features import atomic_limit_elf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("elements", nargs="+")
    parser.add_argument("--box", type=float, default=10.0, help="cubic box edge (Å)")
    parser.add_argument("--radius", type=float, default=2.5, help="compare within this distance of the nucleus (Å)")
    args = parser.parse_args()
    settings = replace(GpawSettings(), kpoint_density=0.1, smearing="fermi-dirac", smearing_width_ev=0.05,
                       maxiter=200)
    for symbol in args.elements:
        cell = Structure(Lattice.cubic(args.box), [symbol], [[0.5, 0.5, 0.5]])
        start = time.perf_counter()
        ref = compute_gpaw_elf(cell, settings)
        ours = atomic_limit_elf(cell, ref.elf.shape)
        frac = fractional_grid(ref.elf.shape) - 0.5
        mask = np.linalg.norm(frac @ cell.lattice.matrix, axis=-1) <= args.radius
        diff = np.abs(ours - ref.elf)[mask]
        print(json.dumps({"element": symbol, "grid": list(ref.elf.shape), "voxels_compared": int(mask.sum()),
                          "mae": round(float(diff.mean()), 4), "max": round(float(diff.max()), 4),
                          "gpaw_elf_range": [round(float(ref.elf[mask].min()), 3), round(float(ref.elf[mask].max()), 3)],
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
