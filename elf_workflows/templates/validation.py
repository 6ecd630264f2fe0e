"""Validation set of the template score: metal sublattices of known superhydrides vs compressed metals.

``python -m elf_workflows.templates.validation --engine gpaw --out DIR`` computes (or reuses) the ELF of
every case, scores it and prints a ranking (``--json`` for machine-readable output). GPAW results are
cached as ``DIR/<name>.ELFCAR`` and ``DIR/<name>.CHGCAR`` so reruns only score.

Cells: the superhydride frames are the hydrides shipped in ``elf_workflows/data/examples`` with H
removed (their first lines give the sources; LaH10's a = 5.10 Å at 150 GPa, the others approximate);
fcc and bcc frames are computed in their one-atom primitive cells. La4H23 (no example file) and the
controls use rough volumes at 100–150 GPa. Each case records its source (``note``). Where the
hydride's H positions are not schematic, ``h_sites_matched`` reports how many H atoms lie within
0.5 Å of an interstitial ELF attractor (reported, not part of the score).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Case:
    name: str
    element: str
    prototype: str
    volume_per_atom: float  # Å³
    known_superhydride: str | None
    note: str
    hydride_file: str | None = None  # example in elf_workflows/data/examples
    h_positions_real: bool = False  # False: the example's H sites are schematic


CASES: tuple[Case, ...] = (
    Case("La_fcc_LaH10", "La", "fcc", 5.10**3 / 4, "LaH10 (Fm-3m)", "LaH10_Fm-3m.vasp: a = 5.10 Å at 150 GPa",
         "LaH10_Fm-3m.vasp", True),
    Case("Ca_bcc_CaH6", "Ca", "bcc", 3.50**3 / 2, "CaH6 (Im-3m)", "CaH6_Im-3m.vasp: a = 3.50 Å, ~150 GPa (approx.)",
         "CaH6_Im-3m.vasp", True),
    Case("Y_bcc_YH6", "Y", "bcc", 3.58**3 / 2, "YH6 (Im-3m)", "YH6_Im-3m.vasp: a = 3.58 Å, ~165 GPa (approx.)",
         "YH6_Im-3m.vasp", True),
    Case("Y_hcp_YH9", "Y", "hcp", 0.0, "YH9 (P6_3/mmc)", "YH9_P6_3mmc.vasp: a = 3.39, c = 5.18 Å, ~180 GPa (approx.)",
         "YH9_P6_3mmc.vasp", False),
    Case("Ce_hcp_CeH9", "Ce", "hcp", 0.0, "CeH9 (P6_3/mmc)", "CeH9_P6_3mmc.vasp: a = 3.71, c = 5.54 Å, ~100 GPa (approx.)",
         "CeH9_P6_3mmc.vasp", False),
    Case("La_A15_La4H23", "La", "A15", 6.20**3 / 8, "La4H23 (Pm-3n)", "a ≈ 6.20 Å at ~100 GPa (approximate)"),
    Case("K_fcc", "K", "fcc", 18.0, None, "compressed K, ~100 GPa (rough)"),
    Case("Mg_hcp", "Mg", "hcp", 13.5, None, "compressed Mg, ~100 GPa (rough)"),
    Case("Al_fcc", "Al", "fcc", 11.0, None, "compressed Al, ~150 GPa (rough)"),
    Case("Na_fcc", "Na", "fcc", 14.0, None, "compressed Na, ~100 GPa (rough)"),
    Case("Cu_fcc", "Cu", "fcc", 9.5, None, "compressed Cu, ~150 GPa (rough)"),
)


def hydride(case: Case):
    """The example hydride of a case (None without one)."""
    if not case.hydride_file:
        return None
    from importlib import resources

    from pymatgen.core import Structure

    path = resources.files("elf_workflows.data").joinpath("examples", case.hydride_file)
    return Structure.from_str(path.read_text(), fmt="poscar")


def build(case: Case):
    """The (primitive where possible) cell of a case."""
    from pymatgen.core import Lattice, Structure

    v, el = case.volume_per_atom, case.element
    if case.hydride_file and case.prototype == "hcp":
        frame = hydride(case).copy()
        frame.remove_species(["H"])
        return frame
    if case.prototype == "fcc":
        a = (4 * v) ** (1 / 3)
        return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), [el], [[0, 0, 0]])
    if case.prototype == "bcc":
        a = (2 * v) ** (1 / 3)
        h = a / 2
        return Structure(Lattice([[-h, h, h], [h, -h, h], [h, h, -h]]), [el], [[0, 0, 0]])
    if case.prototype == "hcp":
        ca = math.sqrt(8 / 3)
        a = (2 * v / (math.sqrt(3) / 2 * ca)) ** (1 / 3)
        return Structure(Lattice.hexagonal(a, ca * a), [el] * 2, [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    if case.prototype == "A15":
        a = (8 * v) ** (1 / 3)
        coords = [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0, 0.5], [0.75, 0, 0.5], [0.5, 0.25, 0],
                  [0.5, 0.75, 0], [0, 0.5, 0.25], [0, 0.5, 0.75]]
        return Structure(Lattice.cubic(a), [el] * 8, coords)
    raise ValueError(case.prototype)


def gpaw_case(case: Case, out: Path):
    """(structure, elf, density, seconds) of a case from GPAW (TRAINING settings), cached in ``out``."""
    from elf_workflows.io import read_chgcar, read_elfcar, write_chgcar, write_elfcar

    structure = build(case)
    elfcar, chgcar, meta = out / f"{case.name}.ELFCAR", out / f"{case.name}.CHGCAR", out / f"{case.name}.json"
    if elfcar.exists() and chgcar.exists() and meta.exists():
        cached, elf = read_elfcar(elfcar)
        if np.allclose(cached.lattice.matrix, structure.lattice.matrix, atol=1e-4) and len(cached) == len(structure):
            return structure, elf, read_chgcar(chgcar)[1], json.loads(meta.read_text())
    from elf_workflows.reference.gpaw import TRAINING, compute_gpaw_elf
    import dataclasses

    settings = dataclasses.replace(TRAINING, timeout_s=1800.0, maxiter=200)
    result = compute_gpaw_elf(structure, settings=settings)
    write_elfcar(structure, result.elf, elfcar)
    write_chgcar(structure, result.density, chgcar)
    info = {"seconds": result.seconds, "settings": result.settings, "electrons": result.electrons}
    meta.write_text(json.dumps(info, indent=1, default=str))
    return structure, result.elf, result.density, info


def h_site_match(case: Case, structure, attractors, tolerance: float = 0.5) -> str | None:
    """``"n/N"``: H atoms of the hydride within ``tolerance`` Å of an interstitial attractor image."""
    if not case.h_positions_real:
        return None
    hyd = hydride(case)
    h_cart = np.array([site.coords for site in hyd if site.specie.symbol == "H"])
    images = []
    from elf_workflows.symmetry import get_space_group
    from elf_workflows.templates.attractors import orbit

    group = get_space_group(structure)
    for a in attractors:
        if a.kind == "interstitial":
            images.extend(orbit(np.array(a.frac_coords), group.rotations, group.translations, structure.lattice.matrix))
    if not images:
        return f"0/{len(h_cart)}"
    frac_h = structure.lattice.get_fractional_coords(h_cart)
    d = frac_h[:, None, :] - np.asarray(images)[None, :, :]
    d -= np.round(d)
    dist = np.linalg.norm(d @ structure.lattice.matrix, axis=-1).min(1)
    return f"{int((dist < tolerance).sum())}/{len(h_cart)}"


def run(engine: str, out: Path, names: list[str] | None = None) -> list[dict]:
    from elf_workflows.templates import score_template

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    by_name = {c.name: c for c in CASES}
    unknown = [n for n in names or [] if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; known: {list(by_name)}")
    for case in [by_name[n] for n in names] if names else CASES:
        t0 = time.perf_counter()
        if engine == "gpaw":
            from elf_workflows.errors import EngineError

            try:
                structure, elf, density, info = gpaw_case(case, out)
            except EngineError as exc:
                print(f"{case.name}: failed: {exc}", file=sys.stderr, flush=True)
                rows.append({"name": case.name, "known_superhydride": case.known_superhydride, "failed": str(exc)})
                continue
            source = "scf"
        else:
            from elf_workflows.screening import get_engine

            structure = build(case)
            elf, density, info = get_engine(engine)(structure)
            source = "scf" if density is not None else None
        result = score_template(structure, elf, density, density_source=source)
        inter = [a for a in result.attractors if a.kind == "interstitial"]
        best = max(inter, key=lambda a: a.elf, default=None)
        rows.append({
            "name": case.name, "known_superhydride": case.known_superhydride,
            "volume_per_atom": round(structure.volume / len(structure), 2), "score": result.score,
            "max_interstitial_elf": result.metrics["max_interstitial_elf"],
            "interstitial_electrons_per_atom": round(result.metrics["interstitial_electrons"] / len(structure), 3),
            "best_site": f"{best.wyckoff} ELF {best.elf:.3f} {best.electrons:.2f} e ∇²ρ {best.laplacian:+.3f}" if best else "-",
            "electride_sites": result.metrics["n_electride_sites"],
            "h_sites_matched": h_site_match(case, structure, result.attractors),
            "density_source": result.density_source, "grid": list(np.shape(elf)),
            "seconds": round(time.perf_counter() - t0, 1), "note": case.note,
        })
        print(f"{case.name}: score {result.score:.4f} ({rows[-1]['seconds']} s)", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: -r.get("score", -1.0))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="gpaw")
    parser.add_argument("--out", type=Path, default=Path("validation_gpaw"))
    parser.add_argument("--cases", nargs="*")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args.engine, args.out, args.cases)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'#':>2} {'case':<16}{'superhydride':<16}{'V/atom':>7}{'score':>8}{'ELFmax':>8}{'e_int/at':>9}"
              f"{'H on attr.':>11}  best interstitial site")
        for i, r in enumerate(rows, 1):
            if "failed" in r:
                print(f"{i:>2} {r['name']:<16}{r['known_superhydride'] or '-':<16} failed: {r['failed']}")
                continue
            elf_max = r["max_interstitial_elf"]
            print(f"{i:>2} {r['name']:<16}{r['known_superhydride'] or '-':<16}{r['volume_per_atom']:>7.2f}"
                  f"{r['score']:>8.4f}{(elf_max if elf_max is not None else float('nan')):>8.3f}"
                  f"{r['interstitial_electrons_per_atom']:>9.3f}{r['h_sites_matched'] or '-':>11}  {r['best_site']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
