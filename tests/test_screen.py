"""Screening: idempotent reruns, kill-and-resume, per-template failures, the screen/show commands."""

from __future__ import annotations

import json
import sys
import types
from types import SimpleNamespace

import pytest
from pymatgen.core import Lattice, Structure

from elf_workflows.screening import register_engine, screen_sublattices
from elf_workflows.store import TemplateStore

SHAPE = (16, 16, 16)


def void_elf(structure: Structure):
    """A cheap analytic engine: an ELF-like field high where the SAD density is low (the voids)."""
    from elf_workflows.sad import sad_density

    rho = sad_density(structure, SHAPE)
    elf = 0.25 + 0.6 * (1 - rho / rho.max())
    return elf, None, {"settings": {"grid": list(SHAPE)}, "model_version": "analytic-1"}


def entries():
    out = []
    for el, proto, a in [("Ca", "fcc", 4.4), ("Y", "fcc", 4.3), ("La", "fcc", 4.6), ("Ca", "bcc", 3.5),
                         ("La", "bcc", 3.7)]:
        if proto == "fcc":
            s = Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), [el], [[0, 0, 0]])
        else:
            h = a / 2
            s = Structure(Lattice([[-h, h, h], [h, -h, h], [h, h, -h]]), [el], [[0, 0, 0]])
        out.append({"structure": s.as_dict(), "prototype": proto, "pressure_gpa": 100.0,
                    "volume_per_atom": s.volume, "template_id": f"{el}-{proto}-100GPa", "eos_source": "test"})
    return out


@pytest.fixture(autouse=True)
def analytic_engine():
    register_engine("analytic", void_elf)


def test_screen_is_idempotent(tmp_path):
    with TemplateStore.from_spec(tmp_path / "db") as store:
        first = screen_sublattices(entries(), store, engine="analytic", progress=False)
        assert len(first.computed) == 5 and not first.skipped and not first.failed
        docs = {d.template_id: d for d in (store.get(e["template_id"]) for e in entries())}
        second = screen_sublattices(entries(), store, engine="analytic", progress=False)
        assert second.computed == [] and len(second.skipped) == 5
        assert store.count() == 5
        again = store.get("La-fcc-100GPa")
        assert again.created_at == docs["La-fcc-100GPa"].created_at  # not recomputed
        doc = docs["La-fcc-100GPa"]
        assert doc.elf_source.model_version == "analytic-1" and doc.elf_source.density_source == "sad"
        assert doc.elements == ["La"] and doc.prototype == "fcc" and doc.spacegroup == "Fm-3m"
        assert doc.timings.elf is not None and doc.timings.score is not None
        inter = [a for a in doc.attractors if a.kind == "interstitial"]
        assert "4b" in {a.wyckoff for a in inter} and {a.wyckoff for a in inter} <= {"4b", "8c"}
        # the basins of all attractors hold the 11 valence electrons of La (SAD)
        assert sum(a.multiplicity * a.electrons for a in doc.attractors) == pytest.approx(11.0, rel=1e-4)
        assert store.load_grid(doc, "elf").shape == SHAPE


def test_kill_and_resume(tmp_path):
    calls = []

    def dies_on_third(structure):
        calls.append(structure.composition.reduced_formula)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is killed while the third template is in flight
        return void_elf(structure)

    with TemplateStore.from_spec(tmp_path / "db") as store:
        with pytest.raises(KeyboardInterrupt):
            screen_sublattices(entries(), store, engine="analytic", engine_fn=dies_on_third, progress=False)
        assert store.count() == 2  # the two finished templates, nothing half-written
        resumed = screen_sublattices(entries(), store, engine="analytic", progress=False)
        assert len(resumed.skipped) == 2 and len(resumed.computed) == 3
        assert store.count() == 5
        assert store.stored_keys("analytic") == {(e["template_id"], "analytic") for e in entries()}


def test_a_failing_template_is_recorded_and_the_rest_stored(tmp_path):
    def fails_for_y(structure):
        if "Y" in structure.composition:
            raise RuntimeError("SCF did not converge")
        return void_elf(structure)

    with TemplateStore.from_spec(tmp_path / "db") as store:
        summary = screen_sublattices(entries(), store, engine="analytic", engine_fn=fails_for_y, progress=False)
        assert summary.failed == {"Y-fcc-100GPa": "SCF did not converge"}
        assert store.count() == 4
        assert len(screen_sublattices(entries(), store, engine="analytic", progress=False).computed) == 1


def test_screen_rank_show_commands(tmp_path, monkeypatch, capsys):
    from elf_workflows.cli import main
    from elf_workflows.io import read_elfcar

    def generate(elements, prototypes, pressures, binaries=False):
        return [e for e in entries() if e["template_id"].split("-")[0] in elements
                and e["prototype"] in prototypes]

    fake = types.ModuleType("elf_workflows.sublattices")
    fake.generate_sublattices = generate
    monkeypatch.setitem(sys.modules, "elf_workflows.sublattices", fake)
    store = str(tmp_path / "db")
    argv = ["screen", "--elements", "Ca,La", "--prototypes", "fcc,bcc", "--pressures", "100",
            "--engine", "analytic", "--store", store]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "4 computed" in err
    assert main(argv + ["--no-progress"]) == 0
    assert "0 computed, 4 already stored" in capsys.readouterr().err
    assert main(["rank", "--store", store, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    best = rows[0]["template_id"]
    assert main(["show", best, "--store", store, "--elfcar", str(tmp_path / "ELFCAR")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["template_id"] == best and doc["score"] == rows[0]["score"]
    structure, elf = read_elfcar(tmp_path / "ELFCAR")
    assert elf.shape == SHAPE and structure.composition.reduced_formula == doc["formula"]
    assert main(["screen", "--elements", "La", "--prototypes", "fcc", "--pressures", "100", "--engine", "nope",
                 "--store", store]) == 1
    assert capsys.readouterr().err.startswith("error: unknown ELF engine 'nope'")
    assert main(["screen", "--elements", "La", "--prototypes", "fcc", "--pressures", "x", "--store", store]) == 1
    assert "not a number" in capsys.readouterr().err
    assert main(["screen", "--elements", "La", "--prototypes", "fcc", "--pressures", "100", "--engine", "analytic",
                 "--store", "mongodb://127.0.0.1:1"]) == 1
    assert capsys.readouterr().err.startswith("error: cannot reach store")
    assert main(["show", "missing-id", "--store", store]) == 1
    assert capsys.readouterr().err.startswith("error: no template 'missing-id'")


def test_surrogate_flags_cells_more_compressed_than_its_training_set(tmp_path):
    from elf_workflows.screening import extrapolation_warning, surrogate_engine
    from elf_workflows.surrogate.domain import (
        TRAINED_V_RATIO,
        ambient_volume_per_atom,
        compression_ratio,
        extrapolation_note,
        trained_v_ratio,
    )

    v0 = ambient_volume_per_atom("Ca")
    assert v0 == pytest.approx(26.2 / 0.602214076, rel=0.01)  # Ca: 26.2 cm³/mol

    def fcc_ca(ratio):
        s = Structure(Lattice([[0, .5, .5], [.5, 0, .5], [.5, .5, 0]]), ["Ca"], [[0, 0, 0]])
        s.scale_lattice(v0 * ratio)
        return s

    assert compression_ratio(fcc_ca(0.7)) == pytest.approx(0.7, rel=1e-9)
    lo, hi = trained_v_ratio()  # the shipped model's training cells
    assert lo < 0.45 and 1.0 <= hi < 1.15  # strained ambient cells reach a little above V/V0 = 1
    assert extrapolation_note(fcc_ca(0.7)) is None
    assert extrapolation_note(fcc_ca(lo)) is None  # the edge of the training range is inside
    squeezed = 0.8 * lo
    note = extrapolation_note(fcc_ca(squeezed))
    assert note.startswith(f"Ca: V/V0 = {squeezed:.2f} is below") and f"{lo:.2f}" in note
    # a model without the record falls back to the V/V0 range of the session-2 set
    assert trained_v_ratio(SimpleNamespace(metadata={})) == TRAINED_V_RATIO == (0.45, 1.0)
    assert extrapolation_note(fcc_ca(0.3), SimpleNamespace(metadata={})).startswith("Ca: V/V0 = 0.30 is below")
    # binaries: V0 is the mean over sites (Vegard), as in the training generator
    b2 = Structure(Lattice.cubic(3.0), ["Ca", "Ba"], [[0, 0, 0], [.5, .5, .5]])
    assert compression_ratio(b2) == pytest.approx(13.5 / ((v0 + ambient_volume_per_atom("Ba")) / 2), rel=1e-9)
    # the surrogate engine reports it, the screen counts it, the command line warns
    *_, info = surrogate_engine(fcc_ca(squeezed))
    assert info["extrapolation"] == note
    store = TemplateStore.from_spec(str(tmp_path / "store"))
    entries = [{"structure": fcc_ca(r), "template_id": f"tpl-{r}"} for r in (squeezed, 0.8)]
    summary = screen_sublattices(entries, store, engine="surrogate", save_grids=False, progress=False)
    assert summary.extrapolated == [f"tpl-{squeezed}"] and len(summary.computed) == 2
    assert extrapolation_warning(summary).startswith("warning: 1 of 2 computed templates are more compressed")


def test_surrogate_documents_of_older_weights_are_recomputed_not_reused(tmp_path, monkeypatch):
    """A store screened with older surrogate weights (or before the partition SAD) must not keep their scores
    beside the new ones: templates whose stored model_version differs are computed again and replaced."""
    from elf_workflows import screening

    version = {"now": "surrogate-old"}

    def fake_surrogate(structure):
        elf, _, info = void_elf(structure)
        return elf, None, {**info, "model_version": version["now"]}

    monkeypatch.setitem(screening._ENGINES, "surrogate", fake_surrogate)
    monkeypatch.setitem(screening._PREPARE, "surrogate", lambda: None)
    monkeypatch.setattr(screening, "surrogate_model", lambda path=None: SimpleNamespace(version=version["now"]))
    store = TemplateStore.from_spec(str(tmp_path / "db"))
    first = screen_sublattices(entries(), store, engine="surrogate", progress=False)
    assert len(first.computed) == 5 and not first.refreshed
    again = screen_sublattices(entries(), store, engine="surrogate", progress=False)
    assert (len(again.computed), len(again.skipped)) == (0, 5)
    version["now"] = "surrogate-new"
    new = screen_sublattices(entries(), store, engine="surrogate", progress=False)
    assert len(new.computed) == 5 and len(new.refreshed) == 5 and not new.skipped
    assert "5 computed (5 of them replacing documents of an older surrogate model), 0 already stored" in new.counts()
    assert store.count() == 5  # replaced, never duplicated
    assert set(store.stored_model_versions("surrogate").values()) == {"surrogate-new"}


def test_worker_processes_store_the_same_documents_in_entry_order(tmp_path):
    """Two spawned workers with the shipped surrogate: the same scores as one process, stored in entry order,
    a failing template recorded, and engines the workers cannot import refused up front."""
    from elf_workflows.errors import InputError

    batch = entries()[:3]
    bad = dict(batch[0], template_id="broken", structure={"not": "a structure"})
    with TemplateStore.from_spec(tmp_path / "serial") as store:
        serial = screen_sublattices(batch, store, engine="surrogate", progress=False)
        expected = {e["template_id"]: store.get(e["template_id"]).score for e in batch}
    with TemplateStore.from_spec(tmp_path / "pooled") as store:
        pooled = screen_sublattices(batch + [bad], store, engine="surrogate", progress=False, workers=2)
        scores = {e["template_id"]: store.get(e["template_id"]).score for e in batch}
        with pytest.raises(InputError, match="registered engines"):
            screen_sublattices(batch, store, engine_fn=void_elf, progress=False, workers=2)
    assert serial.computed == pooled.computed == [e["template_id"] for e in batch]
    assert list(pooled.failed) == ["broken"]
    assert scores == pytest.approx(expected, abs=1e-5) and max(expected.values()) > 0  # 1 vs 2 torch threads: rounding
