#!/usr/bin/env python
"""Fit ``elf_workflows/data/eos_gpaw.json``: PBE (GPAW) equations of state of metals, the preferred EOS source.

The CHGNet table (``scripts/fit_eos_table.py``) is far too compressible at ≥ 100 GPa for La and the
alkali metals, because CHGNet's E(V) breaks down below ~0.5 V0. This script computes PBE energies
with GPAW (new API ``gpaw.new.ase_interface.GPAW``; plane waves, Marzari–Vanderbilt smearing,
Γ-centred k-mesh, 1-atom primitive cells, see :func:`elf_workflows.sublattices.eos.gpaw_energy`) at
``--n-volumes`` volumes geometrically spaced from V_min to 1.05·V0 and stores the energies, their
secant pressures −ΔE/ΔV (what ``eos.eos_volume`` interpolates), a Vinet summary fitted with volume
residuals, and pymatgen's ordinary Vinet and Birch–Murnaghan fits as diagnostics. V0 and V_min come
from the CHGNet table: V_min = V_table(250 GPa) clamped to [0.12, 0.55]·V0 (the table is too soft, so
this reaches 200–1100 GPa in PBE).

Energies are written after every point (resumable: points already in the file are not recomputed
when the settings match). Volumes of a set are computed coarse-to-fine (ends first, then the
midpoints) so that an interrupted set still spans its range; a set is fitted once it has ≥ 6 points.

Run (one process, one thread, low priority):
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/fit_eos_gpaw.py \\
        --pairs La:fcc,Y:fcc,Ca:bcc ... > gpaw_eos.log 2>&1 &
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from elf_workflows.sublattices.eos import (  # noqa: E402
    GPAW_ALIASES,
    fit_vinet_volume_residuals,
    gpaw_energy,
    eos_volume,
    load_eos_table,
    secant_pressures,
    vinet_pressure,
    vinet_volume,
)

DEFAULT_OUT = ROOT / "elf_workflows" / "data" / "eos_gpaw.json"
#: the demo's elements first (fcc and bcc), in order of use by the example hydrides
DEFAULT_PAIRS = ("La:fcc,Y:fcc,Ca:bcc,Y:bcc,Ce:fcc,K:bcc,Ca:fcc,La:bcc,Mg:fcc,Sc:fcc,Sr:fcc,Ba:bcc,Al:fcc,"
                 "K:fcc,Ce:bcc,Sr:bcc,Ba:fcc,Mg:bcc,Sc:bcc,Al:bcc")
SETTINGS = {"ecut": 350.0, "kpts": 8, "width": 0.2, "smearing": "marzari-vanderbilt", "xc": "PBE"}


def volume_grid(symbol: str, prototype: str, n: int) -> np.ndarray:
    """``n`` volumes (Å³/atom) geometrically spaced from V_min to 1.05 V0 (CHGNet-table V0)."""
    par = load_eos_table()["elements"][symbol][prototype]
    v0 = par["v0"]
    v_min = vinet_volume(250.0, v0, par["b0_gpa"], par["b1"])
    v_min = float(np.clip(v_min, 0.12 * v0, 0.55 * v0))
    return np.geomspace(v_min, 1.05 * v0, n)


def coarse_to_fine(n: int) -> list[int]:
    """Indices 0..n-1 ordered ends first, then recursive midpoints."""
    order, seen = [], set()
    queue = [(0, n - 1)]
    for i in (0, n - 1):
        order.append(i)
        seen.add(i)
    while queue:
        lo, hi = queue.pop(0)
        if hi - lo < 2:
            continue
        mid = (lo + hi) // 2
        if mid not in seen:
            order.append(mid)
            seen.add(mid)
        queue += [(lo, mid), (mid, hi)]
    return order + [i for i in range(n) if i not in seen]


def fit(volumes, energies) -> dict:
    """The stored fit: Vinet with volume residuals (:func:`fit_vinet_volume_residuals`), plus the
    ordinary least-squares E(V) Vinet and Birch–Murnaghan fits of pymatgen as diagnostics."""
    from pymatgen.analysis.eos import EOS

    v = np.sort(np.asarray(volumes, float))
    pv = fit_vinet_volume_residuals(volumes, energies)
    v0, b0, b1 = pv["v0"], pv["b0_gpa"], pv["b1"]
    out = {"e0": round(pv["e0"], 6), "v0": round(v0, 5), "b0_gpa": round(b0, 4), "b1": round(b1, 5),
           "vinet_method": "least squares in volume (secant-pressure residual / bulk modulus)",
           "n_points": int(len(v)), "v_min_fit": round(float(v[0]), 4), "v_max_fit": round(float(v[-1]), 4),
           "p_max_fit_gpa": round(float(vinet_pressure(v[0], v0, b0, b1)), 1),
           "max_abs_dv_over_v": round(pv["max_abs_dv_over_v"], 4)}
    vm, p_sec = secant_pressures(volumes, energies)
    out["max_abs_pressure_error_gpa"] = round(float(np.max(np.abs(p_sec - vinet_pressure(vm, v0, b0, b1)))), 2)
    out["secant_pressures_gpa"] = [[round(float(a), 5), round(float(b), 4)] for a, b in zip(vm, p_sec)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        order = np.argsort(volumes)
        vv, ee = list(np.asarray(volumes, float)[order]), list(np.asarray(energies, float)[order])
        for name in ("vinet", "birch_murnaghan"):
            try:
                f = EOS(name).fit(vv, ee)
                out[f"{name}_energy_lsq"] = {"v0": round(float(f.v0), 4), "b0_gpa": round(float(f.b0_GPa), 3),
                                             "b1": round(float(f.b1), 4)}
            except Exception as exc:  # noqa: BLE001 - diagnostic only
                out[f"{name}_energy_lsq"] = {"error": str(exc)}
    return out


def report(data: dict) -> None:
    """Markdown tables for docs/sublattices.md: the GPAW fits against the CHGNet table, and against the
    500 eV / Fermi–Dirac 0.1 eV energies of ``eos_validation_gpaw.json`` (a cutoff/smearing check)."""
    table = load_eos_table()["elements"]
    print("| element / prototype | points, secant P range (GPa) | Vinet summary V0, B0, B0′ (max abs ΔV/V) | "
          "V 0 GPa GPAW / CHGNet (err) | V 100 GPa | V 150 GPa | V 200 GPa |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for symbol, entry in data["elements"].items():
        for proto, e in entry.items():
            f = e.get("fit")
            if not f:
                continue
            ch = table[symbol][proto]
            cells = []
            for p in (0.0, 100.0, 150.0, 200.0):
                vg = eos_volume(f, p)
                vc = vinet_volume(p, ch["v0"], ch["b0_gpa"], ch["b1"])
                cells.append(f"{vg:.2f} / {vc:.2f} ({100 * (vc - vg) / vg:+.1f} %)")
            p_sec = [pp for _, pp in f["secant_pressures_gpa"]]
            print(f"| {symbol} {proto} | {f['n_points']}, {min(p_sec):.0f}–{max(p_sec):.0f} | "
                  f"{f['v0']:.1f}, {f['b0_gpa']:.0f}, {f['b1']:.2f} ({100 * f['max_abs_dv_over_v']:.1f} %) | "
                  + " | ".join(cells) + " |")
    # spot checks without a fit (e.g. hcp at fcc volumes): secant pressure vs the fitted fcc pressure
    for symbol, entry in data["elements"].items():
        for proto, e in entry.items():
            if e.get("fit") or len(e["volumes"]) < 2:
                continue
            ref = GPAW_ALIASES.get(proto)
            fref = entry.get(ref, {}).get("fit") if ref else None
            for vm, ps in zip(*secant_pressures(e["volumes"], e["energies"])):
                line = f"spot check {symbol} {proto}: V={vm:.3f} P_secant={ps:.1f} GPa"
                if fref:
                    vf = eos_volume(fref, ps)
                    pf = float(np.interp(vm, *np.array(fref["secant_pressures_gpa"]).T))
                    line += f"; {ref} fit: P={pf:.1f} GPa, V({ps:.0f} GPa)={vf:.3f} ({100 * (vm - vf) / vf:+.2f} %)"
                print(line)
    path = ROOT / "elf_workflows" / "data" / "eos_validation_gpaw.json"
    if path.exists():
        print("\n| element / prototype | P (GPa), secant of 500 eV FD 0.1 scan | its V (Å³/atom) | V this EOS | diff |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for row in json.loads(path.read_text()):
            f = data["elements"].get(row["element"], {}).get(row["prototype"], {}).get("fit")
            if not f:
                continue
            for vm, ps in zip(*secant_pressures(row["volumes"], row["energies"])):
                if ps > 0:
                    vf = eos_volume(f, ps)
                    print(f"| {row['element']} {row['prototype']} | {ps:.1f} | {vm:.2f} | {vf:.2f} | "
                          f"{100 * (vf - vm) / vm:+.1f} % |")


def load(out: Path) -> dict:
    if out.exists():
        data = json.loads(out.read_text())
        if data.get("meta", {}).get("settings") == SETTINGS:
            return data
        print(f"settings differ from {out}; starting afresh", flush=True)
    return {"meta": {}, "elements": {}}


def write(out: Path, data: dict) -> None:
    data["meta"] = {
        "source": ("GPAW (new API gpaw.new.ase_interface.GPAW) PBE energies of 1-atom primitive cells, "
                   "plane waves 350 eV, Gamma-centred 8x8x8 k-points, Marzari-Vanderbilt 0.2 eV; "
                   "V(P) from monotone interpolation of secant pressures (eos.eos_volume); Vinet summary fitted "
                   "with volume residuals (fit_vinet_volume_residuals)"),
        "source_short": "gpaw-pbe",
        "eos": "vinet",
        "settings": SETTINGS,
        "units": {"e0": "eV/atom", "v0": "Å^3/atom", "b0_gpa": "GPa", "b1": "dimensionless",
                  "volumes": "Å^3/atom", "energies": "eV/atom"},
        "hcp": "no entry; hcp (ideal c/a) uses the fcc fit (volumes/atom within ~1 % in the CHGNet table)",
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "script": "scripts/fit_eos_gpaw.py",
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help="element:prototype,... (fcc/bcc/sc/A15)")
    ap.add_argument("--n-volumes", type=int, default=9)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--deadline", default=None, help="UTC HH:MM; start no new point after it")
    ap.add_argument("--like", default=None,
                    help="PROTO:i/j: compute at the volumes i, j of the element's PROTO scan instead (spot check)")
    ap.add_argument("--extend", type=int, default=0,
                    help="add N volumes below the smallest stored one (same geometric step) to reach higher P")
    ap.add_argument("--report", action="store_true", help="print markdown comparison tables and exit")
    ap.add_argument("--refit", action="store_true", help="only refit the stored energies (no GPAW)")
    args = ap.parse_args()
    data = load(args.out)
    if args.report:
        report(data)
        return
    if args.refit:
        for symbol, entry in data["elements"].items():
            for proto, e in entry.items():
                if len(e["volumes"]) >= 6:
                    e["fit"] = fit(e["volumes"], e["energies"])
                    f = e["fit"]
                    print(f"FIT {symbol} {proto}: V0={f['v0']:.3f} B0={f['b0_gpa']:.1f} B0'={f['b1']:.2f} "
                          f"max|dV/V|={f['max_abs_dv_over_v']:.3f}  Pmax_fit={f['p_max_fit_gpa']:.0f} GPa", flush=True)
                else:
                    e.pop("fit", None)
        write(args.out, data)
        return
    deadline = None
    if args.deadline:
        hh, mm = (int(x) for x in args.deadline.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p]
    for symbol, proto in pairs:
        entry = data["elements"].setdefault(symbol, {}).setdefault(proto, {"volumes": [], "energies": []})
        if args.extend:
            # continue an existing scan to smaller volumes with its own geometric step (higher pressures)
            vols = np.sort(entry["volumes"])
            step = float(np.exp(np.mean(np.diff(np.log(vols)))))
            grid = vols[0] / step ** np.arange(1, args.extend + 1)
            order = list(range(len(grid)))
        elif args.like:
            # a spot check at volumes of another prototype's scan (e.g. hcp at the fcc volumes near 100–200 GPa)
            like, idx = args.like.split(":")
            grid = np.sort(data["elements"][symbol][like]["volumes"])[[int(i) for i in idx.split("/")]]
            order = list(range(len(grid)))
        else:
            grid = volume_grid(symbol, proto, args.n_volumes)
            order = coarse_to_fine(len(grid))
        for i in order:
            v = round(float(grid[i]), 4)
            if any(abs(v - w) < 1e-3 for w in entry["volumes"]):
                continue
            if deadline and dt.datetime.now(dt.timezone.utc) > deadline:
                print("deadline reached; stopping", flush=True)
                write(args.out, data)
                return
            t0 = time.time()
            try:
                e = gpaw_energy(symbol, proto, v, ecut=SETTINGS["ecut"], kpts=SETTINGS["kpts"],
                                width=SETTINGS["width"], smearing=SETTINGS["smearing"])
            except Exception as exc:  # noqa: BLE001 - record and go on
                print(f"{symbol} {proto} V={v:.3f} FAILED: {exc}", flush=True)
                continue
            entry["volumes"].append(v)
            entry["energies"].append(round(e, 7))
            print(f"{symbol:2s} {proto:4s} V={v:8.3f} E={e:12.6f} eV/atom  {time.time() - t0:6.1f} s", flush=True)
            if len(entry["volumes"]) >= 6:
                try:
                    entry["fit"] = fit(entry["volumes"], entry["energies"])
                except Exception as exc:  # noqa: BLE001 - refit later with --refit
                    print(f"fit failed: {exc}", flush=True)
            write(args.out, data)
        if "fit" in entry:
            f = entry["fit"]
            print(f"FIT {symbol} {proto}: V0={f['v0']:.3f} B0={f['b0_gpa']:.1f} B0'={f['b1']:.2f} "
                  f"max|dV/V|={f['max_abs_dv_over_v']:.3f}  Pmax_fit={f['p_max_fit_gpa']:.0f} GPa", flush=True)
    write(args.out, data)


if __name__ == "__main__":
    main()
