"""Template stores: MontyStore round trips, Mongo semantics on mongomock (GridFS too), rank, bad URIs."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elf_workflows.documents import TemplateDoc
from elf_workflows.errors import StoreError
from elf_workflows.store import TemplateStore, decode_grid, encode_grid, rank_criteria


def make_doc(template_id: str, score: float, pressure: float, elements=("La",), engine="surrogate") -> TemplateDoc:
    species = list(elements) if len(elements) > 1 else [elements[0]] * 2
    s = Structure(Lattice.cubic(3.0), species, [[0, 0, 0], [0.5, 0.5, 0.5]])
    els = sorted(set(elements))
    return TemplateDoc(template_id=template_id, engine=engine, formula=s.composition.reduced_formula, elements=els,
                       nelements=len(els), nsites=2, prototype="bcc", spacegroup="Im-3m", pressure_gpa=pressure,
                       volume_per_atom=13.5, structure=s.as_dict(), score=score,
                       elf_source={"engine": engine, "model_version": "test"},
                       attractors=[{"kind": "interstitial", "frac_coords": [0.5, 0, 0.25], "elf": 0.7, "electrons": 1.1,
                                    "volume": 3.2, "multiplicity": 6, "wyckoff": "12d"}])


@pytest.fixture
def monty(tmp_path):
    store = TemplateStore.from_spec(tmp_path / "db")
    with store:
        yield store


@pytest.fixture
def mongomock_store(monkeypatch):
    """A MongoDB-URI store whose server is mongomock (MongoURIStore + GridFSURIStore code paths)."""
    import mongomock
    import mongomock.gridfs

    mongomock.gridfs.enable_gridfs_integration()
    client = mongomock.MongoClient()
    monkeypatch.setattr("maggma.stores.mongolike.MongoClient", lambda *a, **k: client)
    monkeypatch.setattr("maggma.stores.gridfs.MongoClient", lambda *a, **k: client)
    store = TemplateStore.from_spec("mongodb://user:secret@example.org/screening")
    with store:
        yield store


def test_grid_encoding_round_trip(rng):
    a = rng.random((5, 6, 7)).astype(np.float32)
    assert np.array_equal(decode_grid(encode_grid(a), a.shape), a)


@pytest.mark.parametrize("backend", ["monty", "mongomock_store"])
def test_round_trip_upsert_and_lazy_grids(backend, request, rng, monkeypatch):
    store = request.getfixturevalue(backend)
    monkeypatch.setattr("elf_workflows.store._CHUNK", 1000)  # several blob chunks on the embedded store
    elf = rng.random((12, 12, 12))
    doc = make_doc("La-bcc-100", 0.42, 100.0)
    store.save(doc, {"elf": (elf, "")})
    back = store.get("La-bcc-100", "surrogate")
    assert back.score == 0.42 and back.attractors[0].wyckoff == "12d" and back.attractors[0].multiplicity == 6
    assert back.to_structure() == doc.to_structure()
    assert back.grids["elf"].shape == [12, 12, 12]
    assert np.array_equal(store.load_grid(back, "elf"), elf.astype(np.float32))
    # rerun: same key → replaced, not duplicated; another engine → a second document
    store.save(make_doc("La-bcc-100", 0.5, 100.0), {"elf": (elf[:6, :6, :6], "")})
    assert store.count() == 1 and store.get("La-bcc-100").score == 0.5
    assert store.load_grid(store.get("La-bcc-100"), "elf").shape == (6, 6, 6)
    assert store.count({"template_id": "La-bcc-100"}) == 1
    store.save(make_doc("La-bcc-100", 0.3, 100.0, engine="gpaw"))
    assert store.count() == 2 and store.stored_keys("gpaw") == {("La-bcc-100", "gpaw")}
    assert store.get("La-bcc-100").engine == "surrogate"  # best score when no engine named
    with pytest.raises(StoreError, match="no template"):
        store.get("nope")


def test_embedded_store_persists_across_connections(tmp_path):
    with TemplateStore.from_spec(tmp_path / "db") as s:
        s.save(make_doc("a", 1.0, 50.0), {"elf": (np.ones((4, 4, 4)), "")})
    with TemplateStore.from_spec(tmp_path / "db") as s:
        assert s.count() == 1 and s.load_grid(s.get("a"), "elf").sum() == 64


def test_mongo_indexes_and_redacted_description(mongomock_store):
    info = mongomock_store.docs._collection.index_information()
    keys = {k for idx in info.values() for k, _ in idx["key"]}
    assert {"score", "pressure_gpa", "elements"} <= keys
    assert "secret" not in mongomock_store.description
    assert mongomock_store.docs.database == "screening"


@pytest.mark.parametrize("backend", ["monty", "mongomock_store"])
def test_rank_order_and_filters(backend, request):
    store = request.getfixturevalue(backend)
    docs = [make_doc("La-50", 0.3, 50.0), make_doc("La-150", 0.9, 150.0), make_doc("Y-150", 0.6, 150.0, ("Y",)),
            make_doc("LaY-200", 0.7, 200.0, ("La", "Y")), make_doc("Ca-100", 0.1, 100.0, ("Ca",))]
    for d in docs:
        store.save(d)
    ids = lambda rows: [r["template_id"] for r in rows]  # noqa: E731
    assert ids(store.rank()) == ["La-150", "LaY-200", "Y-150", "La-50", "Ca-100"]
    assert ids(store.rank(top=2)) == ["La-150", "LaY-200"]
    assert ids(store.rank(elements=["La"])) == ["La-150", "LaY-200", "La-50"]
    assert ids(store.rank(elements=["La", "Y"])) == ["LaY-200"]
    assert ids(store.rank(min_pressure=100, max_pressure=150)) == ["La-150", "Y-150", "Ca-100"]
    assert ids(store.rank(elements=["Y"], max_pressure=160)) == ["Y-150"]
    row = store.rank(top=1)[0]
    assert {"template_id", "formula", "prototype", "pressure_gpa", "score"} <= set(row)
    # ties (e.g. many zero scores) go to the higher interstitial ELF maximum, then the id
    for tid, elf_max in [("Z-b", 0.45), ("Z-a", 0.30), ("Z-c", 0.48)]:
        d = make_doc(tid, 0.0, 300.0)
        d.metrics = {"max_interstitial_elf": elf_max}
        store.save(d)
    assert ids(store.rank(min_pressure=300)) == ["Z-c", "Z-b", "Z-a"]


def test_rank_criteria_is_a_plain_mongo_filter():
    assert rank_criteria(elements=["Y", "La"], min_pressure=100, max_pressure=200) == {
        "elements": {"$all": ["La", "Y"]}, "pressure_gpa": {"$gte": 100.0, "$lte": 200.0}}


def test_unreachable_server_fails_fast_with_one_line():
    start = time.perf_counter()
    with pytest.raises(StoreError) as info:
        TemplateStore.from_spec("mongodb://127.0.0.1:1").connect()
    assert time.perf_counter() - start < 10
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("cannot reach store mongodb://127.0.0.1:1")


@pytest.mark.parametrize("spec", ["", "http://example.org/db", "s3://bucket"])
def test_bad_store_specs(spec):
    with pytest.raises(StoreError):
        TemplateStore.from_spec(spec)


def test_store_path_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        TemplateStore.from_spec(tmp_path / "f")


def test_rank_command_json_csv_and_errors(tmp_path, capsys):
    from elf_workflows.cli import main

    with TemplateStore.from_spec(tmp_path / "db") as s:
        for d in [make_doc("La-150", 0.9, 150.0), make_doc("Y-150", 0.6, 150.0, ("Y",)), make_doc("La-50", 0.3, 50.0)]:
            s.save(d)
    assert main(["rank", "--store", str(tmp_path / "db"), "--json", "--top", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["template_id"] for r in rows] == ["La-150", "Y-150"]
    assert rows[0]["formula"] == "La" and rows[0]["score"] == 0.9 and rows[0]["pressure_gpa"] == 150.0
    assert main(["rank", "--store", str(tmp_path / "db"), "--csv", "--elements", "La", "--max-pressure", "100"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("template_id,formula,prototype,pressure_gpa,score") and len(lines) == 2
    assert lines[1].startswith("La-50,La,bcc,50.0,0.3")
    assert main(["rank", "--store", "mongodb://127.0.0.1:1", "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: cannot reach store") and captured.err.count("\n") == 1
    assert main(["rank", "--store", str(tmp_path / "missing")]) == 1
    assert "no store at" in capsys.readouterr().err


def test_loose_dicts_from_jobs_are_upserted(tmp_path, fcc_la):
    """``TemplateDoc.from_dict`` fills the derived fields of a plain dict (as the jobflow jobs make)."""
    from elf_workflows.store import open_store, upsert_templates

    loose = {"template_id": "La-fcc", "engine": "gpaw", "structure": fcc_la.as_dict(), "score": 0.5,
             "prototype": "fcc", "pressure_gpa": 150.0, "spacegroup": {"symbol": "Fm-3m", "number": 225},
             "density_source": "scf", "uncertainty": 0.02, "attractors": []}
    with open_store(tmp_path / "db") as store:
        assert upsert_templates(store, [loose, loose]) == 2
        doc = store.get("La-fcc")
        assert store.count() == 1
    assert doc.elements == ["La"] and doc.nsites == 4 and doc.spacegroup == "Fm-3m"
    assert doc.elf_source.engine == "gpaw" and doc.elf_source.density_source == "scf"
    assert doc.metrics["uncertainty"] == 0.02
    assert doc.volume_per_atom == pytest.approx(5.10**3 / 4)
