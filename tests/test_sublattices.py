"""Sublattices: prototypes, EOS pressure → volume, hydride stripping, identity, CLI (issue #5)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import spglib
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from elf_workflows.errors import InputError
from elf_workflows.sublattices import (
    DOCUMENT_KEYS,
    PROTOTYPES,
    build_prototype,
    deduplicate,
    generate_sublattices,
    sublattice_from_hydride,
    template_id,
    volume_at_pressure,
)
from elf_workflows.sublattices.eos import (
    GPAW_SOURCE,
    eos_parameters,
    eos_source,
    fit_vinet_volume_residuals,
    gpaw_fitted,
    load_eos_table,
    load_gpaw_eos,
    pressure_at_volume,
    secant_pressures,
    vinet_energy,
    vinet_pressure,
    vinet_volume,
)

EXAMPLES = resources.files("elf_workflows.data").joinpath("examples")

# Experimental room-temperature volumes per atom (Å³) from lattice constants (Å) in the CRC Handbook of
# Chemistry and Physics, 97th ed., "Crystal structures and lattice parameters of allotropes of the
# elements": Al a=4.0495; Ca a=5.588; K a=5.328; fcc (β) La a=5.303; Y a=3.6474 c=5.7306;
# Cu a=3.6149; W a=3.1652; Mg a=3.2094 c=5.2108; Na a=4.2906; Sr a=6.0849.
def _hcp(a: float, c: float) -> float:
    return np.sqrt(3) / 2 * a * a * c / 2


EXPERIMENT = {
    ("Al", "fcc"): 4.0495**3 / 4,
    ("Ca", "fcc"): 5.588**3 / 4,
    ("K", "bcc"): 5.328**3 / 2,
    ("La", "fcc"): 5.303**3 / 4,
    ("Y", "hcp"): _hcp(3.6474, 5.7306),
    ("Cu", "fcc"): 3.6149**3 / 4,
    ("W", "bcc"): 3.1652**3 / 2,
    ("Mg", "hcp"): _hcp(3.2094, 5.2108),
    ("Na", "bcc"): 4.2906**3 / 2,
    ("Sr", "fcc"): 6.0849**3 / 4,
}


def spg_number(structure: Structure) -> int:
    cell = (structure.lattice.matrix, structure.frac_coords, [s.specie.Z for s in structure])
    return int(spglib.get_symmetry_dataset(cell, symprec=1e-3).number)


@pytest.mark.parametrize("key", sorted(EXPERIMENT))
def test_ambient_volume_within_10_percent_of_experiment(key):
    element, proto = key
    v = volume_at_pressure(element, proto, 0.0)
    assert abs(v - EXPERIMENT[key]) / EXPERIMENT[key] < 0.10, (element, v, EXPERIMENT[key])


def test_volume_falls_monotonically_with_pressure_for_every_table_entry():
    pressures = np.array([0, 1, 5, 10, 25, 50, 100, 150, 200, 300, 500, 750, 1000], float)
    table = load_eos_table()["elements"]
    assert len(table) >= 6
    for element, entry in table.items():
        for proto in entry:
            v = np.array([volume_at_pressure(element, proto, p) for p in pressures])
            assert np.all(np.diff(v) < 0), (element, proto, v)
            # no collapse: even at 1 TPa a metal keeps > 0.5 Å³/atom (the table's softest entries, the
            # alkalis, reach ~1 Å³: too compressible, see docs/sublattices.md)
            assert v[-1] > 0.5


def test_gpaw_fits_preferred_and_monotonic():
    fitted = gpaw_fitted()
    # the demo's key metals have PBE fits; hcp takes the fcc fit, sc/A15 stay on the CHGNet table
    for element, proto in [("La", "fcc"), ("Y", "fcc"), ("Ca", "bcc")]:
        assert proto in fitted[element]
        assert eos_source(element, proto) == GPAW_SOURCE
    assert "hcp" in fitted["La"]
    assert volume_at_pressure("La", "hcp", 150) == volume_at_pressure("La", "fcc", 150)
    assert eos_source("La", "sc") == eos_source() != GPAW_SOURCE
    pressures = np.array([0, 1, 10, 50, 100, 150, 200, 300, 500, 1000], float)
    for element, protos in fitted.items():
        for proto in protos:
            v = np.array([volume_at_pressure(element, proto, p) for p in pressures])
            assert np.all(np.diff(v) < 0) and v[-1] > 2.0, (element, proto, v)
    with pytest.raises(InputError, match="no GPAW equation of state"):
        volume_at_pressure("La", "sc", 100, source="gpaw")


def test_gpaw_la_fcc_against_its_energies_and_an_independent_calculation():
    """La fcc (the LaH10 sublattice) from the stored PBE energies: the Vinet summary refits to the stored
    parameters and is within 4 % in volume at every secant pressure −ΔE/ΔV; ``volume_at_pressure`` goes
    through the secant points; and it reproduces an independent GPAW scan at other settings (500 eV,
    Fermi–Dirac 0.1 eV, other volumes: ``eos_validation_gpaw.json``) within 1.5 % at 200 and 530 GPa."""
    entry = load_gpaw_eos()["elements"]["La"]["fcc"]
    refit = fit_vinet_volume_residuals(entry["volumes"], entry["energies"])
    par = eos_parameters("La", "fcc")
    for k in ("v0", "b0_gpa", "b1"):
        assert refit[k] == pytest.approx(par[k], rel=1e-3)
    vm, p_sec = secant_pressures(entry["volumes"], entry["energies"])
    assert p_sec.max() > 300 and p_sec.min() < 5  # the scan spans 0..>300 GPa
    for v, p in zip(vm, p_sec):
        assert vinet_volume(p, refit["v0"], refit["b0_gpa"], refit["b1"]) == pytest.approx(v, rel=0.04)
        if p > 0:
            assert volume_at_pressure("La", "fcc", p) == pytest.approx(v, rel=1e-5)
            assert pressure_at_volume("La", "fcc", v) == pytest.approx(p, rel=1e-5)
    other = next(r for r in json.loads(resources.files("elf_workflows.data").joinpath("eos_validation_gpaw.json")
                                      .read_text()) if (r["element"], r["prototype"]) == ("La", "fcc"))
    checked = 0
    for v, p in zip(*secant_pressures(other["volumes"], other["energies"])):
        if p > 100:
            assert volume_at_pressure("La", "fcc", p) == pytest.approx(v, rel=0.015), (v, p)
            checked += 1
    assert checked == 2
    v150 = volume_at_pressure("La", "fcc", 150)
    assert 14.3 < v150 < 15.3  # PBE: 14.8 Å³/La at 150 GPa
    # the CHGNet table is far too compressible there (the reason for the GPAW fits)
    assert volume_at_pressure("La", "fcc", 150, source="chgnet") < 0.8 * v150


def test_gpaw_k_bcc_against_an_independent_calculation():
    """K bcc: the CHGNet table is 16 % too dense at 200 GPa; the GPAW EOS matches the independent
    500 eV scan within 3 % at its 1–100 GPa secant pressures (K's s→d softening lies in between)."""
    other = next(r for r in json.loads(resources.files("elf_workflows.data").joinpath("eos_validation_gpaw.json")
                                      .read_text()) if (r["element"], r["prototype"]) == ("K", "bcc"))
    checked = 0
    for v, p in zip(*secant_pressures(other["volumes"], other["energies"])):
        if 1 < p < 100:
            assert volume_at_pressure("K", "bcc", p) == pytest.approx(v, rel=0.03), (v, p)
            checked += 1
    assert checked >= 3
    assert volume_at_pressure("K", "bcc", 200, source="chgnet") < 0.9 * volume_at_pressure("K", "bcc", 200)


def test_vinet_volume_residual_fit_recovers_parameters():
    v = np.geomspace(8.0, 21.0, 9)
    e = vinet_energy(v, -3.0, 20.0, 60.0 / 160.21766208, 4.3)
    fit = fit_vinet_volume_residuals(v, e)
    assert fit["v0"] == pytest.approx(20.0, rel=1e-5) and fit["b0_gpa"] == pytest.approx(60.0, rel=1e-4)
    assert fit["b1"] == pytest.approx(4.3, rel=1e-4) and fit["e0"] == pytest.approx(-3.0, abs=1e-6)
    with pytest.raises(InputError, match="at least 4"):
        fit_vinet_volume_residuals(v[:3], e[:3])


def test_vinet_inverse_and_derivative():
    v0, b0, b1 = 20.0, 50.0, 4.5
    for p in (0.0, 10.0, 150.0, 900.0):
        assert vinet_pressure(vinet_volume(p, v0, b0, b1), v0, b0, b1) == pytest.approx(p, abs=1e-8)
    # P = -dE/dV (b0 in eV/Å³ here)
    v, h = 15.0, 1e-5
    de = (vinet_energy(v + h, 0.0, v0, b0, b1) - vinet_energy(v - h, 0.0, v0, b0, b1)) / (2 * h)
    assert -de == pytest.approx(vinet_pressure(v, v0, b0, b1), rel=1e-6)


EXPECTED_SPG = {
    ("fcc", "A"): 225, ("bcc", "A"): 229, ("hcp", "A"): 194, ("sc", "A"): 221, ("A15", "A"): 223,
    ("A15", "A3B"): 223, ("B2", "AB"): 221, ("L1_2", "A3B"): 221, ("L1_2", "AB3"): 221,
    ("C15", "AB2"): 227, ("C15", "A2B"): 227, ("AlB2", "AB2"): 191, ("AlB2", "A2B"): 191,
}
EXPECTED_RATIO = {"A": None, "AB": 1, "A3B": 3, "AB3": 1 / 3, "AB2": 0.5, "A2B": 2}


@pytest.mark.parametrize("proto,stoich", sorted(EXPECTED_SPG))
def test_prototype_space_group_and_stoichiometry(proto, stoich):
    b = None if stoich == "A" else "Y"
    s = build_prototype(proto, "La", b, volume_per_atom=20.0, stoichiometry=stoich)
    assert spg_number(s) == EXPECTED_SPG[(proto, stoich)]
    assert s.volume / len(s) == pytest.approx(20.0)
    if b is not None:
        assert s.composition["La"] / s.composition["Y"] == pytest.approx(EXPECTED_RATIO[stoich])
    nearest = min(n.nn_distance for site in s for n in s.get_neighbors(site, 8.0))
    assert nearest > 0.8 * 20.0 ** (1 / 3)  # no squeezed pairs: ≥ 0.8 of the mean spacing


def test_prototype_cells_cached_and_unchanged(monkeypatch):
    """Prototype cells come from ``Structure.from_spacegroup`` once per prototype (cached), then are
    re-labelled and scaled: building again must not call it, and must give the same cell."""
    first = {(p, st): build_prototype(p, "La", None if st == "A" else "Y", 17.0, st) for p, st in EXPECTED_SPG}

    def fail(*args, **kwargs):
        raise AssertionError("Structure.from_spacegroup called for a cached prototype")

    monkeypatch.setattr(Structure, "from_spacegroup", fail)
    for (p, st), cell in first.items():
        again = build_prototype(p, "La", None if st == "A" else "Y", 17.0, st)
        assert again == cell and again.lattice.matrix.tolist() == cell.lattice.matrix.tolist()
        other = build_prototype(p, "Ca", None if st == "A" else "Sr", 17.0, st)
        assert np.allclose(other.frac_coords, cell.frac_coords) and other.volume == pytest.approx(cell.volume)
    docs = generate_sublattices(["La", "Y"], ["fcc", "A15", "C15"], [150])  # no from_spacegroup either
    assert len(docs) == 2 + 2 + 2  # La, Y unary fcc/A15 + C15 LaY2, La2Y


def test_prototype_geometry_nearest_neighbours():
    # fcc nn = a/√2, bcc nn = a√3/2, hcp ideal: 12 equal nearest neighbours
    fcc = build_prototype("fcc", "Al", volume_per_atom=16.0)
    a = fcc.lattice.a
    assert a == pytest.approx((4 * 16.0) ** (1 / 3))
    nn = [len(fcc.get_neighbors(site, a / np.sqrt(2) + 1e-3)) for site in fcc]
    assert nn == [12] * 4
    hcp = build_prototype("hcp", "Mg", volume_per_atom=23.0)
    d = sorted(n.nn_distance for n in hcp.get_neighbors(hcp[0], hcp.lattice.a * 1.2))
    assert len(d) == 12 and d[-1] - d[0] < 1e-6


def test_generate_documents_contract_and_count():
    docs = generate_sublattices(["La", "Ca"], ["fcc", "bcc", "hcp"], [0, 100, 200])
    assert len(docs) == 2 * 3 * 3
    for d in docs:
        assert set(DOCUMENT_KEYS) <= set(d)
        s = Structure.from_dict(d["structure"])
        assert s.volume / len(s) == pytest.approx(d["volume_per_atom"], rel=1e-5)
        assert d["volume_per_atom"] == pytest.approx(
            volume_at_pressure(d["elements"][0], d["prototype"], d["pressure_gpa"]), rel=1e-5)
        assert spg_number(s) == PROTOTYPES[d["prototype"]].number
        assert d["template_id"] == template_id(s, d["pressure_gpa"])
        sga = SpacegroupAnalyzer(s, symprec=1e-3)  # one spglib dataset per document gives the same answer
        assert (d["spacegroup"], d["spacegroup_number"]) == (sga.get_space_group_symbol(), sga.get_space_group_number())
        assert d["eos_source"]
    json.dumps(docs)  # JSON-serialisable
    assert len({d["template_id"] for d in docs}) == len(docs)
    la = [d["volume_per_atom"] for d in docs if d["formula"] == "La" and d["prototype"] == "fcc"]
    assert la[0] > la[1] > la[2]


def test_binaries_stoichiometries_and_vegard_volume():
    docs = generate_sublattices(["La", "Y"], ["B2", "L1_2", "C15", "AlB2"], [100])
    got = {(d["prototype"], d["stoichiometry"]): d for d in docs}
    assert set(got) == {("B2", "AB"), ("L1_2", "A3B"), ("L1_2", "AB3"), ("C15", "AB2"), ("C15", "A2B"),
                        ("AlB2", "AB2"), ("AlB2", "A2B")}
    assert {d["formula"] for d in docs} == {"LaY", "La3Y", "LaY3", "LaY2", "La2Y"}
    for (proto, stoich), d in got.items():
        s = Structure.from_dict(d["structure"])
        x_la = s.composition.get_atomic_fraction("La")
        ref = PROTOTYPES[proto].vegard_reference
        vegard = x_la * volume_at_pressure("La", ref, 100) + (1 - x_la) * volume_at_pressure("Y", ref, 100)
        assert d["volume_per_atom"] == pytest.approx(vegard, rel=1e-6)
        assert spg_number(s) == EXPECTED_SPG[(proto, stoich)]
    # --binaries with unary prototypes only: unaries plus every binary prototype on the pair
    both = generate_sublattices(["La", "Y"], ["fcc"], [0], binaries=True)
    assert {d["prototype"] for d in both} == {"fcc", "B2", "L1_2", "C15", "AlB2", "A15"}  # A15 as A3B
    assert sum(d["prototype"] == "fcc" for d in both) == 2


def test_la_h10_stripped_is_fcc_la_at_its_volume():
    doc = sublattice_from_hydride(str(EXAMPLES.joinpath("LaH10_Fm-3m.vasp")))
    s = Structure.from_dict(doc["structure"])
    assert s.composition.reduced_formula == "La" and len(s) == 4
    assert doc["volume_per_atom"] == pytest.approx(5.10**3 / 4, abs=1e-3)  # 33.16 Å³/La
    assert doc["prototype"] == "fcc" and doc["spacegroup"] == "Fm-3m"
    assert doc["parent_formula"] == "LaH10" and doc["stripped"] == ["H"]
    assert doc["pressure_gpa"] is None
    # bare fcc La has 33.16 Å³/atom at a few GPa: far below the hydride's 150 GPa (H takes volume)
    assert 0 < doc["bare_metal_pressure_gpa"] < 20
    assert doc["bare_metal_pressure_gpa"] == pytest.approx(pressure_at_volume("La", "fcc", 33.1628), abs=0.06)
    assert doc["bare_metal_eos"] == eos_source("La", "fcc") == GPAW_SOURCE
    # the secant pressures of the PBE scan bracket it: ~1 GPa at 35.4 Å³, ~8 GPa at 29.3 Å³
    vm, p_sec = secant_pressures(*(load_gpaw_eos()["elements"]["La"]["fcc"][k] for k in ("volumes", "energies")))
    assert np.interp(33.1628, vm, p_sec) == pytest.approx(doc["bare_metal_pressure_gpa"], abs=1.5)
    assert set(DOCUMENT_KEYS) <= set(doc)
    at150 = sublattice_from_hydride(str(EXAMPLES.joinpath("LaH10_Fm-3m.vasp")), pressure_gpa=150)
    assert at150["pressure_gpa"] == 150.0 and at150["template_id"] == template_id(s, 150.0) != doc["template_id"]
    with pytest.raises(InputError, match="outside"):
        sublattice_from_hydride(str(EXAMPLES.joinpath("LaH10_Fm-3m.vasp")), pressure_gpa=-5)


@pytest.mark.parametrize("name,proto,formula,n", [("CaH6_Im-3m.vasp", "bcc", "Ca", 2),
                                                  ("YH9_P6_3mmc.vasp", "hcp", "Y", 2)])
def test_other_hydrides_strip_to_their_sublattice(name, proto, formula, n):
    doc = sublattice_from_hydride(str(EXAMPLES.joinpath(name)))
    assert doc["prototype"] == proto and doc["formula"] == formula and doc["nsites"] == n


def test_strip_nonmetals_and_no_metal_left():
    s = Structure(Lattice.cubic(4.0), ["La", "B", "H"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])
    kept = sublattice_from_hydride(s, strip_nonmetals=True)
    assert kept["formula"] == "La" and kept["prototype"] == "sc"
    assert sublattice_from_hydride(s)["formula"] == "LaB"
    with pytest.raises(InputError, match="no metal"):
        sublattice_from_hydride(Structure(Lattice.cubic(3.0), ["B", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]]))


def _equivalent_settings(structure: Structure) -> list[Structure]:
    prim = structure.get_primitive_structure()
    shifted = structure.copy()
    shifted.translate_sites(list(range(len(shifted))), [0.13, 0.27, 0.41])
    super_ = structure.copy()
    super_.make_supercell([[1, 1, 0], [-1, 1, 0], [0, 0, 2]])
    rotated = Structure(Lattice(structure.lattice.matrix @ np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]])),
                        structure.species, structure.frac_coords)
    return [structure, prim, shifted, super_, rotated]


@pytest.mark.parametrize("proto", ["fcc", "hcp", "A15"])
def test_equivalent_settings_share_id_and_deduplicate(proto):
    s = build_prototype(proto, "La", volume_per_atom=20.0)
    variants = _equivalent_settings(s)
    ids = {template_id(v, 100.0) for v in variants}
    assert len(ids) == 1
    docs = [{"structure": v.as_dict(), "pressure_gpa": 100.0} for v in variants]
    assert len(deduplicate(docs)) == 1
    other = [template_id(s, 150.0), template_id(build_prototype(proto, "La", volume_per_atom=20.5), 100.0),
             template_id(build_prototype(proto, "Y", volume_per_atom=20.0), 100.0)]
    assert len(set(other) | ids) == 4


def test_dedupe_in_generation_and_stable_ids():
    docs = generate_sublattices("La,La", "fcc,FCC", "100,100")
    assert len(docs) == 1
    # the same cell reached twice (B2 of La-Y listed under two names) is kept once
    assert len(generate_sublattices("La,Y", "B2,b2", "100")) == 1
    # the id is a pure function of the structure and pressure: a fixed cell has a fixed id
    s = Structure(Lattice.cubic(5.10), ["La"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    assert template_id(s, 150.0) == template_id(s.copy(), 150.0) == STABLE_LA_FCC_ID
    assert template_id(s, None) != template_id(s, 150.0)


STABLE_LA_FCC_ID = "tpl-c2e272d6d126c1bb"


@pytest.mark.parametrize("call,match", [
    (lambda: generate_sublattices(["O"], ["fcc"], [0]), "not a metal"),
    (lambda: generate_sublattices(["Si"], ["fcc"], [0]), "not a metal"),
    (lambda: generate_sublattices(["Xx"], ["fcc"], [0]), "unknown element"),
    (lambda: generate_sublattices(["La"], ["foo"], [0]), "unknown prototype"),
    (lambda: generate_sublattices(["La"], ["fcc"], [-5]), "outside"),
    (lambda: generate_sublattices(["La"], ["fcc"], [2000]), "outside"),
    (lambda: generate_sublattices(["La"], ["B2"], [0]), "two elements"),
    (lambda: generate_sublattices([], ["fcc"], [0]), "no elements"),
    (lambda: volume_at_pressure("La", "fcc", float("nan")), "outside"),
])
def test_bad_inputs_raise_input_error(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_cli_sublattices_and_errors(tmp_path, capsys):
    from elf_workflows.cli import main

    out = tmp_path / "s.json"
    assert main(["sublattices", "--elements", "La,Ca", "--prototypes", "fcc,bcc", "--pressures", "0,150",
                 "-o", str(out)]) == 0
    docs = json.loads(out.read_text())
    assert len(docs) == 8 and all(set(DOCUMENT_KEYS) <= set(d) for d in docs)
    hyd = tmp_path / "h.json"
    assert main(["sublattices", "--from-hydride", str(EXAMPLES.joinpath("LaH10_Fm-3m.vasp")), "--pressure", "150",
                 "-o", str(hyd)]) == 0
    (doc,) = json.loads(hyd.read_text())
    assert doc["prototype"] == "fcc" and doc["volume_per_atom"] == pytest.approx(33.1628, abs=1e-3)
    assert doc["pressure_gpa"] == 150.0
    capsys.readouterr()
    for args in (["--elements", "La", "--pressures", "-5"], ["--elements", "C"], ["--elements", "La", "--prototypes", "xyz"],
                 ["--elements", "La", "--pressures", "2000"]):
        assert main(["sublattices", *args, "-o", str(tmp_path / "bad.json")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err


def test_table_agrees_with_stored_gpaw_eos_for_al_and_ca():
    """The shipped GPAW energies (accurate path) refitted here against the current table."""
    from pymatgen.analysis.eos import EOS

    rows = json.loads(resources.files("elf_workflows.data").joinpath("eos_validation_gpaw.json").read_text())
    checked = 0
    for row in rows:
        if (row["element"], row["prototype"]) not in {("Al", "fcc"), ("Ca", "fcc")}:
            continue
        eos = EOS("vinet").fit(row["volumes"], row["energies"])
        for p in (0.0, 100.0, 200.0):
            v_gpaw = vinet_volume(p, float(eos.v0), float(eos.b0_GPa), float(eos.b1))
            v_tab = volume_at_pressure(row["element"], row["prototype"], p)
            assert abs(v_tab - v_gpaw) / v_gpaw < 0.06, (row["element"], p, v_tab, v_gpaw)
            checked += 1
    assert checked == 6
