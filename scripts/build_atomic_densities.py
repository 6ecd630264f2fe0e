"""Regenerate ``elf_workflows/data/atomic_densities.npz``: radial pseudo valence densities.

Source
------
The PBE PAW datasets of the ``gpaw-data`` PyPI package (the setups GPAW uses by default, the same
ones that make this project's DFT ELF references). For each element the *pseudo valence density*
of the free atom is

    ñ_v(r) = Σ_i f_i |φ̃_i(r)|² / 4π

over the bound valence states ``<state n=... f=...>`` of the dataset, with φ̃_i the pseudo partial
waves. This is the smooth density that GPAW's pseudo ELF is built from. It is stored on the
dataset's own radial grid, converted to Å and e/Å³, and normalised to the dataset's valence count.
Elements that gpaw-data lacks between H and Rn (Tc, Po, At) are generated with GPAW's own setup
generator (``gpaw.atom.generator2``) from a neighbour's parameters, and marked ``generated``.

Each element also carries ``r_core`` (Å): the largest PAW augmentation radius of its valence
states, inside which the pseudo ELF shows atomic (semicore) structure rather than bonding.

Run:  python scripts/build_atomic_densities.py   (needs ``gpaw`` and ``gpaw-data``)
"""

from __future__ import annotations

import gzip
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

BOHR = 0.529177210903  # Å
OUT = Path(__file__).resolve().parents[1] / "elf_workflows" / "data" / "atomic_densities.npz"

# H..Rn (Z = 1..86)
SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm "
    "Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn"
).split()

# elements missing from gpaw-data: (generator parameters of a neighbour, valence configuration)
GENERATED = {"Tc": "Ru16", "Po": "Bi15", "At": "Bi15"}


def _radial_grid(node: ET.Element) -> np.ndarray:
    eq = node.get("eq")
    a = float(node.get("a"))
    n = int(node.get("n"))
    i = np.arange(int(node.get("istart")), int(node.get("iend")) + 1, dtype=float)
    if eq == "r=a*i/(n-i)":
        return a * i / (n - i)
    if eq == "r=a*i/(1-b*i)":
        b = float(node.get("b"))
        return a * i / (1 - b * i)
    raise ValueError(f"unknown radial grid {eq}")


def from_gpaw_data(path: Path) -> dict:
    root = ET.fromstring(gzip.decompress(path.read_bytes()))
    atom = root.find("atom")
    r = _radial_grid(root.find("radial_grid"))
    waves = {w.get("state"): np.array(w.text.split(), float) for w in root.iter("pseudo_partial_wave")}
    rho = np.zeros_like(r)
    rcs = []
    for state in root.find("valence_states"):
        rcs.append(float(state.get("rc")))
        f = float(state.get("f", 0.0))
        if state.get("n") is not None and f > 0:
            rho += f * waves[state.get("id")] ** 2 / (4 * np.pi)
    return {
        "Z": int(float(atom.get("Z"))),
        "valence": float(atom.get("valence")),
        "r": r,
        "rho": rho,
        "rc": max(rcs),
        "source": f"gpaw-data {path.name}",
    }


def from_generator(symbol: str, template: str) -> dict:
    from ase.data import atomic_numbers
    from gpaw.atom.generator2 import generate, parameters

    par = parameters[template]
    projectors, radii = par[0], par[1]
    radii = [radii] if isinstance(radii, float) else list(radii)
    gen = generate(symbol, atomic_numbers[symbol], projectors, radii, 0.9 * min(radii), None, 5, xc="PBE")
    r = gen.rgd.r_g
    rho = np.zeros_like(r)
    valence = 0.0
    for waves in gen.waves_l:
        for n, f, phit in zip(waves.n_n, waves.f_n, waves.phit_ng):
            if n > 0 and f > 0:
                rho += f * phit**2 / (4 * np.pi)
                valence += f
    return {
        "Z": atomic_numbers[symbol],
        "valence": valence,
        "r": r,
        "rho": rho,
        "rc": max(radii),
        "source": f"generated with gpaw.atom.generator2 from parameters {template} (PBE)",
    }


def main() -> None:
    import gpaw_data

    setups = Path(gpaw_data.__file__).parent / "setups"
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, dict] = {}
    for symbol in SYMBOLS:
        path = setups / f"{symbol}.PBE.gz"
        data = from_generator(symbol, GENERATED[symbol]) if symbol in GENERATED else from_gpaw_data(path)
        r = data["r"] * BOHR
        rho = data["rho"] / BOHR**3
        keep = slice(0, int(np.nonzero(rho > 1e-12 * rho.max())[0].max()) + 2)
        r, rho = r[keep], rho[keep]
        # trapezoid integral 4π ∫ ρ r² dr, then normalise to the valence count
        integral = np.trapezoid(4 * np.pi * rho * r**2, r)
        rho *= data["valence"] / integral
        arrays[f"{symbol}/r"] = r
        arrays[f"{symbol}/rho"] = rho
        meta[symbol] = {
            "Z": data["Z"],
            "valence": data["valence"],
            "r_core": round(data["rc"] * BOHR, 4),
            "raw_integral": round(float(integral), 6),
            "source": data["source"],
        }
        print(f"{symbol:2s} Z={data['Z']:2d} valence={data['valence']:5.1f} r_core={data['rc'] * BOHR:.3f} Å "
              f"raw ∫ñ={integral:.3f}  ({data['source']})")
    arrays["meta"] = np.array(json.dumps(meta))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
