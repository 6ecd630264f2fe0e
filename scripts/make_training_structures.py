#!/usr/bin/env python
"""Generate the metal-only cells of the shipped reference training set (JSON list for ``dataset build``).

Unary fcc/bcc/sc/hcp and binary B2/B1/L1_0/L1_2 cells (1–4 atoms) of metals with a GPAW PAW dataset,
at ambient volume (pymatgen ``Element.molar_volume``; Vegard average for binaries) and compressions
V/V0 drawn uniformly in [0.45, 1.0] (≈ 0 to ~300 GPa for the stiff transition metals, but only ≈ 0 to
40-100 GPa for soft ones such as Ca, Mg, Sc, K); a share is strained
(diagonal strain up to 4 %) and some multi-atom cells also rattled, to break symmetry.

With ``--pressures PMIN PMAX`` the cells are instead compressed to a pressure drawn uniformly in
[PMIN, PMAX] GPa with the package's equations of state (``vegard_volume``: GPAW-PBE where fitted, else
CHGNet; the prototype's unary Vegard reference), exactly as screening compresses them, and only cells
with V/V0 below ``--max-ratio`` are kept: this is the high-pressure set (V/V0 ≈ 0.1–0.5 for the soft
metals at 30–350 GPa) that screening at 100–300 GPa needs.

Split by chemistry: every cell containing one of TEST_ELEMENTS, and every cell of a TEST_PAIRS binary,
is ``test``; cells of VAL_PAIRS binaries and a random 6 % of the rest are ``val``; the rest ``train``. B2 CaBa and B2 FePb are
always present (and first). The order is a fixed-seed shuffle, so a build stopped at any point holds
a diverse subset; the builder skips finished ids on rerun, so growing the set is re-running with a
larger ``--count`` or another ``--seed``.

Usage::

    python scripts/make_training_structures.py --count 3000 -o structures.json
    python scripts/make_training_structures.py --count 1500 --seed 1 --pressures 30 350 -o compressed.json
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
from pymatgen.core import Lattice, Structure

from elf_workflows.sublattices.eos import vegard_volume
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
#: unary structure whose equation of state compresses each prototype (Vegard mixing for binaries)
EOS_REFERENCE = {"fcc": "fcc", "bcc": "bcc", "sc": "fcc", "hcp": "hcp", "B2": "bcc", "B1": "fcc",
                 "L1_0": "fcc", "L1_2": "fcc"}


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
             val_share: float = 0.06, pressures: tuple[float, float] | None = None,
             max_ratio: float = 0.5) -> list[dict]:
    """``count`` cell documents: first the fixed ones (B2 CaBa, B2 FePb), then a seeded random mix.

    Volumes: V/V0 uniform in [``vmin``, 1], or, with ``pressures`` = (PMIN, PMAX) in GPa, the equation-of-state
    volume at a pressure uniform in that range, keeping only cells with V/V0 < ``max_ratio``.
    """
    rng = np.random.default_rng(seed)
    docs: list[dict] = []

    def add(proto: str, species: list[str], ratio: float | None, distorted: bool,
            pressure: float | None = None) -> None:
        sites = species if proto != "L1_2" else [species[0]] * 3 + [species[1]]
        v0 = float(np.mean([ambient_volume(x) for x in sites]))
        if pressure is not None:
            composition = {el: sites.count(el) for el in set(sites)}
            ratio = vegard_volume(composition, EOS_REFERENCE[proto], pressure) / v0
            if ratio >= max_ratio:
                return
        s = prototype(proto, species, v0 * ratio)
        source = f"{proto} {'-'.join(species)} V/V0={ratio:.3f}"
        if pressure is not None:
            source += f" ({pressure:.0f} GPa)"
        if distorted:
            s, note = distort(s, rng)
            source += f", {note}"
        elements = sorted(set(species))
        split = split_of(elements)
        if split == "train" and rng.random() < val_share:
            split = "val"
        doc = {"structure": s.as_dict(), "prototype": proto, "v_ratio": round(ratio, 4),
               "volume_per_atom": round(s.volume / len(s), 4), "source": source,
               "split": split, "distorted": distorted}
        if pressure is not None:
            doc["pressure_gpa"] = round(pressure, 1)
        docs.append(doc)

    fixed = (1.0, 0.7, 0.5) if pressures is None else (0.4, 0.3, 0.22)
    for species in (["Ca", "Ba"], ["Fe", "Pb"]):
        for ratio in fixed:
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
        distorted = bool(rng.random() < distorted_share)
        if pressures is None:
            add(proto, species, float(rng.uniform(vmin, 1.0)), distorted)
        else:
            add(proto, species, None, distorted, pressure=float(rng.uniform(*pressures)))
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distorted-share", type=float, default=0.15)
    parser.add_argument("--pressures", type=float, nargs=2, metavar=("PMIN", "PMAX"),
                        help="compress by equation of state to a pressure in [PMIN, PMAX] GPa")
    parser.add_argument("--max-ratio", type=float, default=0.5, help="with --pressures: keep cells with V/V0 below this")
    parser.add_argument("-o", "--output", default="structures.json")
    args = parser.parse_args()
    docs = generate(args.count, args.seed, args.distorted_share, pressures=args.pressures, max_ratio=args.max_ratio)
    with open(args.output, "w") as handle:
        json.dump(docs, handle)
    splits = {k: sum(d["split"] == k for d in docs) for k in ("train", "val", "test")}
    print(f"{len(docs)} cells -> {args.output}; splits {splits}")


if __name__ == "__main__":
    main()
