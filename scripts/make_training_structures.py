#!/usr/bin/env python
"""Generate the metal-only cells of the shipped reference training set (JSON list for ``dataset build``).

Unary fcc/bcc/sc/hcp and binary B2/B1/L1_0/L1_2 cells (1–4 atoms) of metals with a GPAW PAW dataset,
at ambient volume (pymatgen ``Element.molar_volume``; Vegard average for binaries) and compressions
V/V0 drawn uniformly in [0.45, 1.0] (≈ 0 to ~300 GPa for the stiff transition metals, but only ≈ 0 to
40-100 GPa for soft ones such as Ca, Mg, Sc, K: screening at higher pressures extrapolates); a share is strained
(diagonal strain up to 4 %) and some multi-atom cells also rattled, to break symmetry.

Split by chemistry: every cell containing one of TEST_ELEMENTS, and every cell of a TEST_PAIRS binary,
is ``test``; cells of VAL_PAIRS binaries and a random 6 % of the rest are ``val``; the rest ``train``. B2 CaBa and B2 FePb are
always present (and first). The order is a fixed-seed shuffle, so a build stopped at any point holds
a diverse subset; the builder skips finished ids on rerun, so growing the set is re-running with a
larger ``--count`` or another ``--seed``.

Usage::

    python scripts/make_training_structures.py --count 3000 -o structures.json
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
from pymatgen.core import Lattice, Structure

from elf_workflows.surrogate.domain import ambient_volume_per_atom as ambient_volume

#: metals with GPAW PBE datasets and robust non-spin-polarised SCF (no 4f lanthanides beyond La, Ce)
METALS = [
    "Li", "Na", "K", "Rb", "Cs", "Be", "Mg", "Ca", "Sr", "Ba", "Sc", "Y", "La", "Ce", "Ti", "Zr", "Hf",
    "V", "Nb", "Ta", "Cr", "Mo", "W", "Mn", "Re", "Fe", "Ru", "Os", "Co", "Rh", "Ir", "Ni", "Pd", "Pt",
    "Cu", "Ag", "Au", "Zn", "Cd", "Al", "Ga", "In", "Tl", "Sn", "Pb", "Bi",
]
TEST_ELEMENTS = {"Ba", "Fe", "Pb"}
TEST_PAIRS = {frozenset(p) for p in [("Ca", "Ba"), ("Fe", "Pb"), ("K", "Ag"), ("Y", "Mg"), ("Sr", "Ti")]}
VAL_PAIRS = {frozenset(p) for p in [("Li", "Al"), ("Na", "Zn"), ("Sc", "Cu"), ("La", "Ni"), ("Zr", "Pd")]}

UNARY = ["fcc", "bcc", "sc", "hcp"]
BINARY = ["B2", "B1", "L1_0", "L1_2"]
#: atoms per cell of each prototype (primitive cells)
ATOMS = {"fcc": 1, "bcc": 1, "sc": 1, "hcp": 2, "B2": 2, "B1": 2, "L1_0": 2, "L1_2": 4}


def prototype(name: str, species: list[str], volume_per_atom: float) -> Structure:
    """Primitive cell of ``name`` with the given species (A, B) and volume per atom (Å³)."""
    a_sp = species[0]
    b_sp = species[-1]
    if name == "fcc":
        s = Structure(Lattice([[0, .5, .5], [.5, 0, .5], [.5, .5, 0]]), [a_sp], [[0, 0, 0]])
    elif name == "bcc":
        s = Structure(Lattice([[-.5, .5, .5], [.5, -.5, .5], [.5, .5, -.5]]), [a_sp], [[0, 0, 0]])
    elif name == "sc":
        s = Structure(Lattice.cubic(1.0), [a_sp], [[0, 0, 0]])
    elif name == "hcp":
        s = Structure(Lattice.hexagonal(1.0, np.sqrt(8 / 3)), [a_sp, a_sp], [[1 / 3, 2 / 3, .25], [2 / 3, 1 / 3, .75]])
    elif name == "B2":
        s = Structure(Lattice.cubic(1.0), [a_sp, b_sp], [[0, 0, 0], [.5, .5, .5]])
    elif name == "B1":
        s = Structure(Lattice([[0, .5, .5], [.5, 0, .5], [.5, .5, 0]]), [a_sp, b_sp], [[0, 0, 0], [.5, .5, .5]])
    elif name == "L1_0":
        s = Structure(Lattice.tetragonal(np.sqrt(0.5), 1.0), [a_sp, b_sp], [[0, 0, 0], [.5, .5, .5]])
    elif name == "L1_2":
        s = Structure(Lattice.cubic(1.0), [b_sp, a_sp, a_sp, a_sp],
                      [[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
    else:
        raise ValueError(name)
    s.scale_lattice(volume_per_atom * len(s))
    return s


def distort(s: Structure, rng: np.random.Generator, strain: float = 0.04, rattle: float = 0.08,
            rattle_share: float = 0.15) -> tuple[Structure, str]:
    """Break the symmetry: a random diagonal (orthorhombic) strain |ε_ii| ≤ ``strain`` and, for a share of
    the multi-atom cells, a rattle of the atoms (Å).

    A diagonal strain keeps inversion and mirror planes, so GPAW still reduces the k-points (a general
    strain or a rattle leaves P1 and costs 10-40x more); rattled cells are the expensive minority.
    """
    eps = np.diag(rng.uniform(-strain, strain, 3))
    s = Structure(Lattice(s.lattice.matrix @ (np.eye(3) + eps)), s.species, s.frac_coords)
    note = f"strain {np.abs(eps).max():.3f}"
    if len(s) > 1 and rng.random() < rattle_share:
        disp = rng.normal(0, rattle / np.sqrt(3), (len(s), 3))
        disp -= disp.mean(axis=0)
        s = Structure(s.lattice, s.species, s.cart_coords + disp, coords_are_cartesian=True)
        note += f", rattle {rattle:g} Å"
    return s, note


def split_of(elements: list[str]) -> str:
    """``test`` for held-out elements and pairs, ``val`` for validation pairs, else ``train``."""
    if TEST_ELEMENTS & set(elements) or frozenset(elements) in TEST_PAIRS:
        return "test"
    if frozenset(elements) in VAL_PAIRS:
        return "val"
    return "train"


def generate(count: int, seed: int = 0, distorted_share: float = 0.15, vmin: float = 0.45,
             val_share: float = 0.06) -> list[dict]:
    """``count`` cell documents: first the fixed ones (B2 CaBa, B2 FePb), then a seeded random mix."""
    rng = np.random.default_rng(seed)
    docs: list[dict] = []

    def add(proto: str, species: list[str], ratio: float, distorted: bool) -> None:
        v0 = float(np.mean([ambient_volume(x) for x in (species if proto != "L1_2" else
                                                          [species[0]] * 3 + [species[1]])]))
        s = prototype(proto, species, v0 * ratio)
        source = f"{proto} {'-'.join(species)} V/V0={ratio:.3f}"
        if distorted:
            s, note = distort(s, rng)
            source += f", {note}"
        elements = sorted(set(species))
        split = split_of(elements)
        if split == "train" and rng.random() < val_share:
            split = "val"
        docs.append({"structure": s.as_dict(), "prototype": proto, "v_ratio": round(ratio, 4),
                     "volume_per_atom": round(s.volume / len(s), 4), "source": source,
                     "split": split, "distorted": distorted})

    for species in (["Ca", "Ba"], ["Fe", "Pb"]):
        for ratio in (1.0, 0.7, 0.5):
            add("B2", species, ratio, False)
    pairs = [list(p) for p in itertools.combinations(METALS, 2)]
    while len(docs) < count:
        binary = rng.random() < 0.45
        if binary:
            proto = BINARY[rng.choice(len(BINARY), p=[0.4, 0.3, 0.25, 0.05])]
            species = list(pairs[rng.integers(len(pairs))])
            rng.shuffle(species)
        else:
            proto = UNARY[rng.integers(len(UNARY))]
            species = [METALS[rng.integers(len(METALS))]]
        ratio = float(rng.uniform(vmin, 1.0))
        add(proto, species, ratio, bool(rng.random() < distorted_share))
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distorted-share", type=float, default=0.15)
    parser.add_argument("-o", "--output", default="structures.json")
    args = parser.parse_args()
    docs = generate(args.count, args.seed, args.distorted_share)
    with open(args.output, "w") as handle:
        json.dump(docs, handle)
    splits = {k: sum(d["split"] == k for d in docs) for k in ("train", "val", "test")}
    print(f"{len(docs)} cells -> {args.output}; splits {splits}")


if __name__ == "__main__":
    main()
