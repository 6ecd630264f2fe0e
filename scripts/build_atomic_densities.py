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

Second density, ``rho_partition``: the free atom's valence charge the way GPAW's SCF density
(``Densities.pseudo_densities(add_compensation_charges=True)``) places it,

    n_p(r) = ñ_v(r) + [ñ_c(r) + Q_00 ĝ_0(r)] / √4π,     Q_00 = Σ_ij D_ij Δ_ij00 + Δ_0 + N_v/√4π,

with ñ_v *not* renormalised, ñ_c the smooth core density, ĝ_0 the Gaussian compensation shape and
D the setup's initial (free-atom) density matrix; 4π∫n_p r²dr = N_v exactly. The compensation charge
puts the semicore electrons that the smooth ñ_v smears outwards back at the nucleus, so basin
electrons counted in this density match the SCF density's, where ñ_v over-fills the voids.

Third pair, ``rho_pseudo`` and ``tau_pseudo``: the free atom exactly as GPAW's pseudo ELF sees it
(``gpaw.elf``: pseudo density with the smooth core, ``nt = ñ_v + ñ_c``, and kinetic energy density
``τ̃ = τ̃_v + τ̃_c`` from ``density.update_ked``),

    ñ(r) = Σ_i f_i φ̃_i(r)² / 4π + ñ_c(r)/√4π,
    τ̃(r) = Σ_i f_i [φ̃_i'(r)² + l_i(l_i+1) φ̃_i(r)²/r²] / 8π + τ̃_c(r)/√4π

(τ = ½Σ|∇ψ|², the spherical average of a subshell with f electrons spread evenly over m). Neither
is renormalised: φ̃_i carry the PAW norm deficit, as the SCF pseudo wave functions do, so
4π∫ñr²dr ≠ N_v. Units Å⁻³ and Å⁻⁵ (ħ²/m_e = 1 with Å as length, the unit system in which the ELF
ratio D/D_h is written). Their superposition gives the surrogate's atomic-limit ELF channel.

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
        **_setup_densities(_gpaw_setup(path.name.split(".")[0])),
        "source": f"gpaw-data {path.name}",
    }


def partition_density(setup) -> np.ndarray:
    """n_p(r) (Bohr⁻³) on ``setup.data.rgd``: pseudo valence + smooth core + compensation charge (see above)."""
    data = setup.data
    r = data.rgd.r_g
    f_si = setup.calculate_initial_occupation_numbers(0, False, 0, 1)
    D_p = setup.initialize_density_matrix(f_si)[0]
    q00 = float(D_p @ setup.Delta_pL[:, 0] + setup.Delta0 + setup.Nv / np.sqrt(4 * np.pi))
    valence = sum(f * phit**2 for f, phit, n in zip(data.f_j, data.phit_jg, data.n_j) if n > 0 and f > 0)
    g0 = np.zeros_like(r)
    g0[: setup.g_lg.shape[1]] = setup.g_lg[0]
    rho = valence / (4 * np.pi) + (data.nct_g + q00 * g0) / np.sqrt(4 * np.pi)
    total = float(np.trapezoid(4 * np.pi * rho * r**2, r))
    if abs(total - setup.Nv) > 2e-3 * setup.Nv:
        raise RuntimeError(f"{setup.symbol}: partition density integrates to {total:.4f}, not {setup.Nv}")
    return rho


def pseudo_atom(setup) -> tuple[np.ndarray, np.ndarray]:
    """(ñ, τ̃) of the free pseudo atom (Bohr⁻³, Bohr⁻⁵) on ``setup.data.rgd``: what GPAW's pseudo ELF is built from."""
    from scipy.interpolate import CubicSpline

    data = setup.data
    r = data.rgd.r_g
    r_safe = np.where(r > 0, r, 1.0)
    rho = data.nct_g / np.sqrt(4 * np.pi)
    tau = (data.tauct_g if data.tauct_g is not None else np.zeros_like(r)) / np.sqrt(4 * np.pi)
    for f, phit, n, l in zip(data.f_j, data.phit_jg, data.n_j, data.l_j):
        if n > 0 and f > 0:
            rho = rho + f * phit**2 / (4 * np.pi)
            centrifugal = l * (l + 1) * (phit / r_safe) ** 2
            centrifugal[r == 0] = centrifugal[1] if l == 1 else 0.0  # φ̃ ~ r^l: finite at 0 only for p
            slope = CubicSpline(r, phit)(r, 1)  # np.gradient's error on the sparse outer grid shows in the tail ELF
            tau = tau + f * (slope**2 + centrifugal) / (8 * np.pi)
    return rho, tau


def _setup_densities(setup) -> dict:
    rho_pseudo, tau_pseudo = pseudo_atom(setup)
    return {"rho_partition": partition_density(setup), "rho_pseudo": rho_pseudo, "tau_pseudo": tau_pseudo}


def _gpaw_setup(symbol: str, data=None):
    from gpaw.setup import Setup, create_setup
    from gpaw.xc import XC

    return create_setup(symbol, XC("PBE")) if data is None else Setup(data, XC("PBE"), lmax=2)


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
        **_setup_densities(_gpaw_setup(symbol, gen.make_paw_setup(f"elf-workflows-{symbol}"))),
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
        if len(data["rho_partition"]) != len(data["r"]):
            raise RuntimeError(f"{symbol}: the setup's radial grid differs from the dataset's")
        r = data["r"] * BOHR
        rho = data["rho"] / BOHR**3
        keep = slice(0, int(np.nonzero(rho > 1e-12 * rho.max())[0].max()) + 2)
        r, rho = r[keep], rho[keep]
        # trapezoid integral 4π ∫ ρ r² dr, then normalise to the valence count
        integral = np.trapezoid(4 * np.pi * rho * r**2, r)
        rho *= data["valence"] / integral
        # the partition density on the same grid, its tiny quadrature remainder removed the same way
        partition = data["rho_partition"][keep] / BOHR**3
        partition *= data["valence"] / np.trapezoid(4 * np.pi * partition * r**2, r)
        arrays[f"{symbol}/r"] = r
        arrays[f"{symbol}/rho"] = rho
        arrays[f"{symbol}/rho_partition"] = partition
        # the free pseudo atom of GPAW's ELF, as it is (no renormalisation)
        arrays[f"{symbol}/rho_pseudo"] = data["rho_pseudo"][keep] / BOHR**3
        arrays[f"{symbol}/tau_pseudo"] = data["tau_pseudo"][keep] / BOHR**5
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
