"""jobflow Makers and flows: run with ``run_locally`` into a JobStore with a ``data`` store.

The cheap engine is ``gradient-expansion`` (the gradient-expansion ELF of the SAD, no network, no
DFT): the flows are checked for their plumbing against independent numbers (valence electron
counts, the engine's own grid, ordering), and once with the shipped surrogate and once with GPAW.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from jobflow import Flow, JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.core import Lattice, Structure

from elf_workflows.elements import valence_electrons
from elf_workflows.flows import (
    ActiveLearningMaker,
    ReferenceSetMaker,
    TemplateScreeningMaker,
    elf_maker_for,
    screen_sublattices,
    select_for_dft,
)
from elf_workflows.jobs import GridData, SadMaker, ScoreMaker, StoreMaker, rank_templates

warnings.filterwarnings("ignore", category=FutureWarning)


def _store() -> JobStore:
    return JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})


def _cubic(element: str, spacegroup: str, a: float) -> Structure:
    return Structure.from_spacegroup(spacegroup, Lattice.cubic(a), [element], [[0, 0, 0]])


def _sublattices() -> list[dict]:
    cells = [("Li", "Im-3m", "bcc", 2.80), ("Al", "Fm-3m", "fcc", 3.60)]
    return [{"structure": _cubic(el, sg, a).as_dict(), "template_id": f"{el}-{proto}-100GPa",
             "prototype": proto, "pressure_gpa": 100.0, "eos_source": "test"} for el, sg, proto, a in cells]


def _output(store: JobStore, uuid: str):
    """A job output with its grids loaded from ``data`` and decoded (GridData objects)."""
    from monty.json import MontyDecoder

    return MontyDecoder().process_decoded(store.get_output(uuid, load=True))


def _run(flow, store) -> None:
    run_locally(flow, store=store, log=False, ensure_success=True, raise_immediately=True)


def test_surrogate_uncertainty_is_the_score_uncertainty_of_its_attractors():
    """``surrogate-uncertainty`` → score job: ``metrics.uncertainty`` is the score's standard deviation
    under the surrogate's void-maximum ELF error (σ = 0.1 plus the symmetry spread, 0 for the shipped
    weights), from the document's own attractors; not 0, as the symmetry spread alone was."""
    from elf_workflows.templates.attractors import Attractor
    from elf_workflows.templates.score import SURROGATE_VOID_SIGMA, score_uncertainty

    docs = _sublattices()
    fan = screen_sublattices(docs, SadMaker(), elf_maker_for("surrogate-uncertainty"), ScoreMaker(), StoreMaker())
    rank = rank_templates(fan.output)
    store = _store()
    _run(Flow([fan, rank]), store)
    seen = []
    for row in store.get_output(rank.uuid):
        doc = store.query_one({"name": f"score {row['template_id']}"}, load=False)["output"]
        attractors = [Attractor(**a) for a in doc["attractors"]]
        structure = Structure.from_dict(next(d for d in docs if d["template_id"] == row["template_id"])["structure"])
        expected = score_uncertainty(structure, attractors, SURROGATE_VOID_SIGMA)
        assert doc["metrics"]["uncertainty"] == pytest.approx(expected, abs=1e-6)
        assert row["uncertainty"] == doc["metrics"]["uncertainty"]
        seen.append(doc["metrics"]["uncertainty"])
    assert max(seen) > 0.01  # compressed fcc Al's voids localise (ELF ≈ 0.7): its score has an error bar


def test_griddata_roundtrip_is_exact_float32_and_chgcar_holds_rho_v():
    values = np.random.default_rng(0).random((5, 6, 7))
    grid = GridData(values, kind="sad", units="e/Å³")
    back = GridData.from_dict(grid.as_dict())
    assert back.shape == (5, 6, 7) and back.kind == "sad" and back.units == "e/Å³"
    np.testing.assert_array_equal(back.values, values.astype(np.float32))
    s = _cubic("Al", "Fm-3m", 4.0)
    chg = back.to_volumetric(s)
    np.testing.assert_allclose(chg.data["total"], values.astype(np.float32) * s.volume, rtol=1e-6)


def test_fan_out_routes_grids_to_data_store_and_ranks(tmp_path):
    """One elf → sad → score → store branch per sublattice; grids in ``data``; documents in the
    elf-workflows store too; a rerun does not duplicate them."""
    from elf_workflows.jobs import gradient_expansion_engine
    from elf_workflows.store import open_store
    from elf_workflows.templates import score_template

    docs = _sublattices()
    fan = screen_sublattices(docs, SadMaker(), elf_maker_for("gradient-expansion"), ScoreMaker(),
                             StoreMaker(store=str(tmp_path / "elf_store")))
    rank = rank_templates(fan.output)
    store = _store()
    _run(Flow([fan, rank]), store)

    ranked = store.get_output(rank.uuid)
    assert [r["rank"] for r in ranked] == [1, 2]
    assert sorted(r["template_id"] for r in ranked) == sorted(d["template_id"] for d in docs)
    assert ranked[0]["score"] >= ranked[1]["score"]

    data = store.additional_stores["data"]
    # per template: elf (ELF job) + sad (SAD job); the engine gives no SCF density
    assert data.count() == 2 * len(docs)
    for doc in docs:
        structure = Structure.from_dict(doc["structure"])
        elf_job = store.query_one({"name": f"elf (gradient-expansion) {doc['template_id']}"}, load=False)
        # the main docs store holds a reference, not the grid
        assert "blob_uuid" in elf_job["output"]["elf"] and "data" not in elf_job["output"]["elf"]
        elf_out = _output(store, elf_job["uuid"])
        expected, _, _ = gradient_expansion_engine(structure)
        np.testing.assert_allclose(elf_out["elf"].values, expected, atol=1e-6)
        sad_job = store.query_one({"name": f"sad {doc['template_id']}"}, load=False)
        sad_out = _output(store, sad_job["uuid"])
        assert sad_out["sad"].shape == elf_out["elf"].shape
        # the SAD holds the valence electrons of the cell (independent count)
        n_val = len(structure) * valence_electrons(structure[0].specie.symbol)
        rho = sad_out["sad"].values.astype(float)
        assert rho.mean() * structure.volume == pytest.approx(n_val, rel=1e-3)
        # the score is the one score_template gives on the same grids
        row = next(r for r in ranked if r["template_id"] == doc["template_id"])
        assert row["score"] == pytest.approx(score_template(structure, expected, None).score, abs=1e-6)

    with open_store(tmp_path / "elf_store") as elf_store:
        assert elf_store.count() == 2
        stored = elf_store.get(docs[0]["template_id"], engine="gradient-expansion")
        assert set(stored.grids) == {"elf"}
    # rerun: upserts keyed by (template_id, engine), no duplicates
    fan2 = screen_sublattices(docs, SadMaker(), elf_maker_for("gradient-expansion"), ScoreMaker(),
                              StoreMaker(store=str(tmp_path / "elf_store")))
    _run(fan2, _store())
    with open_store(tmp_path / "elf_store") as elf_store:
        assert elf_store.count() == 2


def test_unknown_engine_is_one_clear_error():
    from elf_workflows.errors import InputError

    with pytest.raises(InputError, match="unknown ELF engine 'nope'"):
        TemplateScreeningMaker(engine="nope").make(["Li"], ["bcc"], [100])


def test_select_for_dft_takes_top_then_least_certain():
    docs = [{"template_id": f"t{i}", "score": s, "metrics": {"uncertainty": u}}
            for i, (s, u) in enumerate([(0.9, 0.01), (0.5, 0.30), (0.7, 0.02), (0.1, 0.20), (0.3, 0.05)])]
    job = select_for_dft(docs, n_top=2, n_uncertain=2)
    store = _store()
    _run(job, store)
    chosen = store.get_output(job.uuid)
    assert [(d["template_id"], d["reason"]) for d in chosen] == [
        ("t0", "top"), ("t2", "top"), ("t1", "uncertain"), ("t3", "uncertain")]


def test_template_screening_maker_end_to_end():
    """The contract: ``TemplateScreeningMaker().make(elements, prototypes, pressures)`` → Flow."""
    flow = TemplateScreeningMaker(engine="gradient-expansion").make(["Ca", "Al"], ["fcc", "bcc"], [150])
    assert isinstance(flow, Flow)
    store = _store()
    _run(flow, store)
    ranked = store.get_output(flow.output.uuid)
    assert len(ranked) == 2 * 2
    assert {(r["formula"], r["prototype"], r["pressure_gpa"]) for r in ranked} == {
        (el, p, 150.0) for el in ("Ca", "Al") for p in ("fcc", "bcc")}
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert store.additional_stores["data"].count() == 2 * len(ranked)


def test_screening_with_the_shipped_surrogate():
    from elf_workflows.surrogate import load_model, predict_elf

    flow = TemplateScreeningMaker().make(["La"], ["fcc"], [150])
    store = _store()
    _run(flow, store)
    (row,) = store.get_output(flow.output.uuid)
    assert row["engine"] == "surrogate" and row["formula"] == "La"
    elf_job = store.query_one({"name": {"$regex": "^surrogate elf"}}, load=False)
    elf_out = _output(store, elf_job["uuid"])
    structure = elf_out["structure"]
    np.testing.assert_allclose(elf_out["elf"].values, predict_elf(structure, model=load_model()), atol=1e-6)
    assert elf_out["info"]["model_version"] == load_model().version


@pytest.mark.slow
@pytest.mark.gpaw
def test_gpaw_reference_set_on_a_tiny_cell(tmp_path):
    """GPAW (loose settings) on one-atom fcc Al: ELF in [0, 1], the SCF density integrates to the 3
    valence electrons, and the record lands in a readable dataset with its grids."""
    pytest.importorskip("gpaw")
    from elf_workflows.dataset import ReferenceDataset

    al = Structure(Lattice([[0, 2.0, 2.0], [2.0, 0, 2.0], [2.0, 2.0, 0]]), ["Al"], [[0, 0, 0]])
    flow = ReferenceSetMaker(engine_kwargs={"settings": "loose"}, dataset=str(tmp_path / "ds")).make(
        [al], metadata=[{"template_id": "Al-fcc-test"}])
    store = _store()
    start = time.perf_counter()
    _run(flow, store)
    assert time.perf_counter() - start < 60
    (record,) = [store.get_output(ref.uuid) for ref in flow.output]
    assert record["engine"] == "gpaw" and record["electrons"] == pytest.approx(3.0, abs=0.02)
    assert record["template_id"] == "Al-fcc-test" and record["score"] is not None
    with ReferenceDataset(tmp_path / "ds") as ds:
        assert ds.ids() == [record["id"]]
        structure, elf, density = ds.load(record["id"])
    assert elf.shape == density.shape == tuple(record["shape"])
    assert 0.0 <= elf.min() and elf.max() <= 1.0
    assert density.mean() * structure.volume == pytest.approx(3.0, abs=0.02)
    # the grids also sit in the JobStore's data store
    assert store.additional_stores["data"].count() == 2


def test_active_learning_flow_wires_screen_select_dft_compare():
    flow = ActiveLearningMaker(retrain=False, n_top=1, n_uncertain=1).make(
        ["La"], ["fcc"], [150], dataset="/tmp/never-written")
    names = [j.name for j in flow.jobs]
    assert names[0] == "template screening"
    assert names[1:] == ["select for DFT", "DFT reference", "compare"]
    assert set(flow.output) == {"ranking", "comparison"}


@pytest.mark.slow
@pytest.mark.gpaw
def test_report_of_a_flow_screened_store(tmp_path):
    """The demo report from templates the flow stored: table, ranking, parity (GPAW check), slices."""
    pytest.importorskip("gpaw")
    from elf_workflows.jobs import gradient_expansion_engine
    from elf_workflows.report import dft_check, format_table, order_rows, write_report
    from elf_workflows.store import open_store

    docs = _sublattices()
    fan = screen_sublattices(docs, SadMaker(), elf_maker_for("gradient-expansion"), ScoreMaker(),
                             StoreMaker(store=str(tmp_path / "elf_store")))
    _run(fan, _store())

    def predict(structure, shape):
        from elf_workflows.grids import fourier_interpolate

        elf, _, _ = gradient_expansion_engine(structure)
        return np.clip(fourier_interpolate(elf, shape), 0, 1)

    with open_store(tmp_path / "elf_store") as store:
        rows = order_rows(store.rank(engine="gradient-expansion"))
        checks = dft_check(store, ["Al-fcc-100GPa"], engine="gradient-expansion", predict=predict)
        paths = write_report(store, tmp_path / "report", engine="gradient-expansion", checks=checks)
    (check,) = checks
    assert check["nsites"] == 1  # the primitive fcc cell
    assert len(check["elf_dft"]) == len(check["elf_pred"]) >= 1
    assert 0 <= min(check["elf_dft"]) and max(check["elf_dft"]) <= 1
    assert 0 < check["elf_voxel_mae"] < 0.5
    # the same check with the DFT ELF itself as the "prediction": its basins filled with the SCF
    # density must reproduce the DFT score exactly, and with the SAD give the SAD-partitioned score
    from dataclasses import replace

    from elf_workflows.reference.gpaw import PRESETS, compute_gpaw_elf
    from elf_workflows.templates import score_template

    def dft_itself(structure, shape):
        ref = compute_gpaw_elf(structure, settings=replace(PRESETS["loose"], timeout_s=60.0))
        assert ref.elf.shape == tuple(shape)
        dft_itself.structure, dft_itself.elf = structure, ref.elf
        return ref.elf

    with open_store(tmp_path / "elf_store") as store:
        (same,) = dft_check(store, ["Al-fcc-100GPa"], engine="gradient-expansion", predict=dft_itself)
    assert same["elf_voxel_mae"] == 0.0
    assert same["score_pred_dft_density"] == pytest.approx(same["score_dft"], abs=1e-9)
    assert same["score_pred"] == pytest.approx(score_template(dft_itself.structure, dft_itself.elf).score, abs=1e-9)
    assert {"ranking_plot", "parity_plot", "elf_slices", "markdown", "html", "ranking_json"} <= set(paths)
    for key in ("ranking_plot", "parity_plot", "elf_slices"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["markdown"].read_text()
    ranked_lines = [line for line in md.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert [line.split("|")[2].strip() for line in ranked_lines] == [r["template_id"] for r in rows]
    assert "![parity](parity.png)" in md and "<img alt='parity' src='parity.png'>" in paths["html"].read_text()
    text = format_table(rows)
    assert text.splitlines()[1].split()[1] == rows[0]["template_id"]


def test_vasp_reference_set_through_atomate2_mock(tmp_path, monkeypatch):
    """ReferenceSetMaker(engine="vasp"): atomate2's VASP ELF static under atomate2's mock VASP
    (inputs checked against tests/fixtures/vasp_elf/inputs, outputs copied in), then scored and
    written to a dataset. The fixture's ELFCAR/CHGCAR and minimal vasprun.xml/OUTCAR (parsed into
    atomate2's TaskDoc, whose energy the record keeps) come from a GPAW run of the same fcc Al cell."""
    pytest.importorskip("atomate2")
    import json
    from pathlib import Path

    from atomate2.utils.testing.vasp import monkeypatch_vasp
    from pymatgen.core import SETTINGS

    from elf_workflows.dataset import ReferenceDataset

    fixture = Path(__file__).parent / "fixtures" / "vasp_elf"
    expected = json.loads((fixture / "expected.json").read_text())
    monkeypatch.delenv("PMG_VASP_PSP_DIR", raising=False)
    monkeypatch.delitem(SETTINGS, "PMG_VASP_PSP_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    mock = monkeypatch_vasp(monkeypatch, fixture.parent, nelect=3)
    mock_vasp = next(mock)
    mock_vasp({"elf static": "vasp_elf"}, {"elf static": {"incar_settings": ["LELF", "NPAR", "KPAR", "LCHARG"]}})
    from elf_workflows.reference.vasp import VaspElfMaker

    al = Structure(Lattice([[0, 2.025, 2.025], [2.025, 0, 2.025], [2.025, 2.025, 0]]), ["Al"], [[0, 0, 0]])
    maker = ReferenceSetMaker(engine="vasp", vasp_maker=VaspElfMaker(),  # TaskDoc parsed (default)
                              dataset=str(tmp_path / "refs"))
    flow = maker.make([al], metadata=[{"template_id": "Al-fcc-vasp"}])
    store = _store()
    run_locally(flow, store=store, create_folders=True, ensure_success=True, log=False)
    (record,) = [store.get_output(ref.uuid) for ref in flow.output]
    assert record["engine"] == "vasp" and record["shape"] == expected["shape"]
    assert record["electrons"] == pytest.approx(expected["electrons"], abs=1e-4)
    assert record["energy_ev"] == pytest.approx(expected["energy_ev"], abs=1e-8)
    assert record["template_id"] == "Al-fcc-vasp" and record["score"] >= 0
    with ReferenceDataset(tmp_path / "refs") as ds:
        _, elf, density = ds.load(record["id"])
    assert float(elf.max()) == pytest.approx(expected["elf_max"], abs=1e-3)  # float16 storage
    assert density.shape == tuple(expected["shape"])


def test_flows_serialise_for_jobflow_remote():
    """jobflow-remote stores flows as JSON: the Makers (engine, settings, store) must survive it."""
    import json

    from monty.json import MontyDecoder, jsanitize

    maker = TemplateScreeningMaker(engine="gpaw", engine_kwargs={"settings": "loose"}, store="mongodb://db/elf")
    flow = maker.make(["La", "Y"], ["fcc"], [150.0])
    text = json.dumps(jsanitize(flow.as_dict(), strict=True, enum_values=True))
    back = MontyDecoder().process_decoded(json.loads(text))
    assert isinstance(back, Flow) and [j.name for j in back.jobs] == ["sublattices", "screen sublattices", "rank"]
    fan = back.jobs[1]
    sad_maker, elf_maker, score_maker, store_maker = fan.function_args[1:]
    assert type(elf_maker).__name__ == "GpawElfMaker" and elf_maker.engine_kwargs == {"settings": "loose"}
    assert store_maker.store == "mongodb://db/elf"
    assert list(back.jobs[0].function_args) == [["La", "Y"], ["fcc"], [150.0]]


@pytest.mark.slow
@pytest.mark.gpaw
def test_active_learning_loop_with_gpaw_and_retraining(tmp_path):
    """The whole loop on one template: surrogate screening with the symmetry-spread uncertainty →
    GPAW (loose) on the best template → record in the dataset → surrogate vs DFT → retrain (one
    tiny epoch). The surrogate is a freshly initialised network saved to a file, so the test does
    not depend on the shipped weights."""
    pytest.importorskip("gpaw")
    import torch

    from elf_workflows.dataset import ReferenceDataset
    from elf_workflows.surrogate.infer import load_model, save_model
    from elf_workflows.surrogate.model import PeriodicUNet, UNetConfig

    from elf_workflows.surrogate.train import TrainConfig

    torch.manual_seed(0)
    start_version = save_model(PeriodicUNet(UNetConfig()).eval(), tmp_path / "start.pt", name="start")
    tiny = {"epochs": 1, "patch_size": 16, "patches_per_epoch": 2, "batch_size": 2, "pretrain_steps": 10}
    maker = ActiveLearningMaker(reference=ReferenceSetMaker(engine_kwargs={"settings": "loose"}), n_top=1,
                                n_uncertain=1, model=str(tmp_path / "start.pt"),
                                train_kwargs={k: v for k, v in tiny.items() if k in TrainConfig.__dataclass_fields__})
    flow = maker.make(["Al"], ["bcc"], [150], dataset=str(tmp_path / "refs"), model_out=str(tmp_path / "new.pt"))
    store = _store()
    _run(flow, store)
    (row,) = store.get_output(flow.output["ranking"].uuid)
    (compared,) = store.get_output(flow.output["comparison"].uuid)
    assert row["engine"] == "surrogate-uncertainty" and row["uncertainty"] >= 0
    assert compared["reason"] == "top" and compared["template_id"] == row["template_id"]
    assert compared["surrogate_score"] == row["score"] and compared["dft_score"] is not None
    assert compared["score_error"] == pytest.approx(compared["surrogate_score"] - compared["dft_score"])
    assert 0 < compared["elf_mae"] < 0.5
    with ReferenceDataset(tmp_path / "refs") as ds:
        assert ds.ids() == [compared["record_id"]]
        structure, elf, density = ds.load(compared["record_id"])
    assert density.mean() * structure.volume == pytest.approx(2 * 3.0, abs=0.05)  # 2 Al atoms, 3 e each
    retrained = store.get_output(flow.output["model"].uuid)
    assert retrained["model"] == str(tmp_path / "new.pt")
    assert load_model(tmp_path / "new.pt").version not in (start_version, None)
