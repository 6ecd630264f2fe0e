"""Reference datasets: format round trip, resumable GPAW builds (also after a real kill), failures as
records, VASP folder import and ``dataset info``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elf_workflows.cli import main
from elf_workflows.dataset import DatasetWriter, ReferenceDataset, record_id
from elf_workflows.errors import InputError

FIXTURE = Path(__file__).parent / "fixtures" / "vasp_elf"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
ROOT = Path(__file__).resolve().parents[1]


def cell(symbol: str = "Al", a: float = 4.05) -> Structure:
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), [symbol], [[0, 0, 0]])


# ---------------------------------------------------------------------------------------------- format
def test_writer_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    grids = {}
    with DatasetWriter(tmp_path / "ds", records_per_shard=2) as writer:
        for i, a in enumerate([3.9, 4.0, 4.1]):
            s = cell(a=a)
            rid = record_id(s, "gpaw", {"ecut_ev": 300})
            elf, rho = rng.random((4, 5, 6)), rng.random((4, 5, 6)) * 0.1
            grids[rid] = (elf, rho)
            writer.add({"id": rid, "structure": s, "engine": "gpaw", "settings": {}, "split": ["train", "val", "test"][i],
                        "energy_ev": -3.0, "seconds": 1.0, "source": "test"}, elf, rho)
        writer.add_failed({"id": "bad", "structure": cell("Li", 3.5), "engine": "gpaw"}, "GPAW SCF did not converge\nmore")
    ds = ReferenceDataset(tmp_path / "ds")
    assert len(ds) == 3 and [r["split"] for r in ds.records()] == ["train", "val", "test"]
    assert len(list(ds.records(split="val"))) == 1
    assert ds.failed()[0]["reason"] == "GPAW SCF did not converge"
    assert sorted(p.name for p in (tmp_path / "ds" / "shards").iterdir()) == ["shard-0000.npz", "shard-0001.npz"]
    for rid, (elf, rho) in grids.items():
        s, elf2, rho2 = ds.load(rid)
        assert record_id(s, "gpaw", {"ecut_ev": 300}) == rid  # the compact structure dict loads back exactly
        assert elf2.dtype == np.float32 and elf2.shape == (4, 5, 6)
        assert np.abs(elf2 - elf).max() < 5e-4  # float16 ELF: 11-bit mantissa
        assert np.allclose(rho2, rho, rtol=1e-6)  # float32 density
        assert ds.record(rid)["formula"] == "Al" and ds.record(rid)["elements"] == ["Al"]
    with pytest.raises(InputError):
        ds.load("bad")
    with pytest.raises(InputError):
        ReferenceDataset(tmp_path / "nothing")


def test_settings_shared_by_records_are_written_once_and_read_back_exactly(tmp_path):
    base = {"ecut_ev": 300.0, "xc": "PBE", "kpoints": [3, 3, 3], "elf": "pseudo ELF, a long fixed description"}
    settings = [base, {**base, "kpoints": [5, 5, 5]}, {"ecut_ev": 300.0, "xc": "PBE"}, {**base, "extra": 1}]
    with DatasetWriter(tmp_path / "ds") as writer:
        for i, st in enumerate(settings):
            writer.add_failed({"id": f"r{i}", "structure": cell(a=3.9 + 0.1 * i), "engine": "gpaw",
                               "settings": st}, "test")
    lines = [json.loads(line) for line in (tmp_path / "ds" / "records.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "ds" / "settings.json").read_text()) == {"gpaw": base}
    # a line keeps only what differs from the shared settings; a record lacking a shared key stays whole
    assert [line.get("settings") for line in lines] == [{}, {"kpoints": [5, 5, 5]}, {"ecut_ev": 300.0, "xc": "PBE"},
                                                         {"extra": 1}]
    assert [line.get("settings_shared", False) for line in lines] == [True, True, False, True]
    for reader in (ReferenceDataset(tmp_path / "ds").all_records(), DatasetWriter(tmp_path / "ds")._records.values()):
        assert [r["settings"] for r in reader] == settings
        assert not any("settings_shared" in r for r in reader)


def test_compact_structure_dict_keeps_everything_from_dict_cannot_rederive():
    from elf_workflows.dataset.format import compact_structure_dict

    plain = Structure(Lattice.from_parameters(3.1, 3.3, 3.7, 80, 95, 100), ["Ca", "Ba"], [[0.1, 0, 0], [0.5, 0.45, 0.5]])
    d = compact_structure_dict(plain)
    assert set(d["sites"][0]) == {"species", "abc"} and set(d["lattice"]) == {"matrix"}
    assert len(json.dumps(d)) < 0.6 * len(json.dumps(plain.as_dict()))
    assert Structure.from_dict(d) == plain
    # what is not the default survives: labels, site and structure properties, oxidation states, charge, pbc
    odd = Structure(Lattice(plain.lattice.matrix, pbc=(True, True, False)), [{"Fe2+": 0.5, "Ni2+": 0.5}, "Ba"],
                    plain.frac_coords, labels=["M1", "Ba"], site_properties={"magmom": [1.0, 0.0]},
                    charge=1.0, properties={"note": "x"})
    back = Structure.from_dict(compact_structure_dict(odd))
    assert back == odd and back.labels == ["M1", "Ba"] and back.site_properties["magmom"] == [1.0, 0.0]
    assert back.lattice.pbc == (True, True, False) and back.charge == 1.0 and back.properties == {"note": "x"}
    assert [str(sp) for sp in back[0].species] == ["Fe2+", "Ni2+"]


def test_torn_line_and_reopened_shard(tmp_path):
    path = tmp_path / "ds"
    w = DatasetWriter(path, records_per_shard=4)
    w.add({"id": "a", "structure": cell(), "engine": "gpaw"}, np.zeros((2, 2, 2)), np.ones((2, 2, 2)))
    with open(path / "records.jsonl", "a") as handle:  # a kill in the middle of a line
        handle.write('{"id": "b", "status": "o')
    w2 = DatasetWriter(path, records_per_shard=4)
    assert w2.done_ids() == {"a"}
    w2.add({"id": "c", "structure": cell(a=4.2), "engine": "gpaw"}, np.ones((2, 2, 2)), np.ones((2, 2, 2)))
    ds = ReferenceDataset(path)
    assert ds.ids() == ["a", "c"]
    assert ds.record("c")["shard"] == ds.record("a")["shard"] == "shard-0000.npz"  # shard continued
    assert ds.load("a")[1].max() == 0 and ds.load("c")[1].min() == 1


def test_record_id_is_stable():
    s = cell()
    assert record_id(s, "gpaw", {"x": 1}) == record_id(s.copy(), "gpaw", {"x": 1})
    assert record_id(s, "gpaw", {"x": 1}) != record_id(s, "gpaw", {"x": 2})
    assert record_id(s, "gpaw", {}) != record_id(cell(a=4.06), "gpaw", {})


# ----------------------------------------------------------------------------------------------- build
@pytest.mark.gpaw
def test_build_records_failures_and_skips_on_rerun(tmp_path):
    pytest.importorskip("gpaw")
    from elf_workflows.dataset.build import build_dataset
    from elf_workflows.reference.gpaw import LOOSE

    th = Structure(Lattice.cubic(3.6), ["Th"], [[0, 0, 0]])
    docs = [{"structure": cell(), "split": "test", "source": "fcc Al"}, {"structure": th, "source": "sc Th"}]
    seen = []
    counts = build_dataset(docs, tmp_path / "ds", LOOSE, workers=0, progress=False, on_record=seen.append)
    assert counts == {"ok": 1, "failed": 1, "skipped": 0, "total": 2}
    ds = ReferenceDataset(tmp_path / "ds")
    (rec,) = list(ds.records())
    assert rec["split"] == "test" and rec["engine"] == "gpaw" and rec["settings"]["ecut_ev"] == 250
    assert rec["energy_ev"] == pytest.approx(EXPECTED["energy_ev"], abs=5e-3) and rec["seconds"] > 0
    s, elf, rho = ds.load(rec["id"])
    assert elf.shape == tuple(EXPECTED["shape"]) and abs(elf.max() - EXPECTED["elf_max"]) < 2e-3
    assert rho.mean() * s.volume == pytest.approx(3.0, abs=1e-3)
    (bad,) = ds.failed()
    assert "no PBE PAW dataset for Th" in bad["reason"]
    again = build_dataset(docs, tmp_path / "ds", LOOSE, workers=0, progress=False)
    assert again == {"ok": 0, "failed": 0, "skipped": 2, "total": 2}


def test_export_then_rebuild_keeps_split_and_provenance_and_points_back(tmp_path, capsys):
    pytest.importorskip("gpaw")
    from elf_workflows.dataset.build import build_dataset
    from elf_workflows.reference.gpaw import LOOSE

    rng = np.random.default_rng(1)
    with DatasetWriter(tmp_path / "old") as writer:
        for s, split, source in ((cell(), "val", "fcc Al"), (cell("Li", 3.5), "test", "fcc Li")):
            writer.add({"id": record_id(s, "gpaw", {"ecut_ev": 300}), "structure": s, "engine": "gpaw", "settings": {},
                        "split": split, "source": source, "v_ratio": 0.5, "seconds": 1.0}, rng.random((4, 4, 4)),
                       rng.random((4, 4, 4)))
    old = ReferenceDataset(tmp_path / "old")
    assert main(["dataset", "export", str(tmp_path / "old"), "--split", "val", "-o", str(tmp_path / "val.json")]) == 0
    docs = json.loads((tmp_path / "val.json").read_text())
    (al_id,) = old.ids("val")
    assert [(d["split"], d["source"], d["v_ratio"], d["parent_id"]) for d in docs] == [("val", "fcc Al", 0.5, al_id)]
    from elf_workflows.dataset.build import input_documents

    assert [d["parent_id"] for d in input_documents(old, elements={"Li"})] == old.ids("test")
    assert main(["dataset", "export", str(tmp_path / "old"), "--elements", "Cs", "-o", str(tmp_path / "x.json")]) == 1
    assert "no cells" in capsys.readouterr().err
    from elf_workflows.dataset.build import load_inputs

    counts = build_dataset(load_inputs([tmp_path / "val.json"]), tmp_path / "new", LOOSE, workers=0, progress=False)
    assert counts["ok"] == 1
    (rec,) = ReferenceDataset(tmp_path / "new").records()
    assert rec["id"] != al_id and rec["parent_id"] == al_id and rec["split"] == "val" and rec["source"] == "fcc Al"
    assert ReferenceDataset(tmp_path / "new").load_structure(rec["id"]) == old.load_structure(al_id)


@pytest.mark.gpaw
def test_build_resumes_after_kill(tmp_path):
    """`dataset build` (one worker process) killed with SIGKILL after its first record; the rerun keeps
    that record, skips it and does the rest."""
    pytest.importorskip("gpaw")
    from elf_workflows.dataset.build import build_dataset, load_inputs
    from elf_workflows.reference.gpaw import LOOSE

    inputs = tmp_path / "cells.json"
    cells = [cell("Al", a) for a in (3.9, 4.05)]
    inputs.write_text(json.dumps([{"structure": c.as_dict(), "source": f"Al {i}"} for i, c in enumerate(cells)]))
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "elf_workflows.cli", "dataset", "build", str(inputs), "-o", str(out),
           "--preset", "loose", "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    records = out / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (records.exists() and records.read_text().count("\n") >= 1):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the build and its worker, mid-way through the second cell
    proc.wait()
    first = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    assert len(first) == 1 and first[0]["status"] == "ok"
    # the same inputs and settings again (in this process): the finished cell is skipped
    counts = build_dataset(load_inputs([inputs]), out, LOOSE, workers=0, progress=False)
    assert counts == {"ok": 1, "failed": 0, "skipped": 1, "total": 2}
    ds = ReferenceDataset(out)
    assert len(ds) == 2 and not ds.failed() and ds.ids()[0] == first[0]["id"]
    for rid in ds.ids():
        s, elf, rho = ds.load(rid)
        assert rho.mean() * s.volume == pytest.approx(3.0, abs=1e-3)


@pytest.mark.gpaw
def test_retry_failed_with_more_scf_iterations_keeps_the_cell_id(tmp_path, capsys):
    """A cell whose SCF stops at --maxiter is recorded failed; --retry-failed with a higher cap computes it
    under the same id (the cap decides whether a run finishes, not what it converges to)."""
    pytest.importorskip("gpaw")
    inputs = tmp_path / "cells.json"
    inputs.write_text(json.dumps([{"structure": cell("Al", 4.0).as_dict(), "source": "Al"}]))
    out = tmp_path / "ds"
    base = ["dataset", "build", str(inputs), "-o", str(out), "--preset", "loose", "--workers", "0", "--no-progress"]
    assert main(base + ["--maxiter", "2"]) == 0
    (failed,) = ReferenceDataset(out).failed()
    assert "did not converge in 2 iterations" in failed["reason"]
    assert main(base + ["--maxiter", "60"]) == 0  # without --retry-failed the failed cell is left alone
    assert "0 new ok, 0 new failed, 1 already done" in capsys.readouterr().err
    assert main(base + ["--maxiter", "60", "--retry-failed"]) == 0
    ds = ReferenceDataset(out)
    assert ds.ids() == [failed["id"]] and not ds.failed()
    s, elf, rho = ds.load(failed["id"])
    assert rho.mean() * s.volume == pytest.approx(3.0, abs=1e-3)


# ---------------------------------------------------------------------------------------------- import
def test_import_vasp_folders(tmp_path, capsys):
    run = tmp_path / "Al_elf"
    shutil.copytree(FIXTURE / "outputs", run)
    shutil.copy(FIXTURE / "inputs" / "INCAR", run / "INCAR")
    shutil.copy(FIXTURE / "inputs" / "KPOINTS", run / "KPOINTS")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "POSCAR").write_text("not a poscar\n")
    out = tmp_path / "ds"
    assert main(["dataset", "import", str(run), str(broken), "-o", str(out), "--split", "val"]) == 0
    assert "1 imported, 1 failed" in capsys.readouterr().err
    ds = ReferenceDataset(out)
    (rec,) = list(ds.records("val"))
    assert rec["engine"] == "vasp" and rec["settings"]["incar"]["LELF"] is True
    s, elf, rho = ds.load(rec["id"])
    assert elf.shape == tuple(EXPECTED["shape"]) and abs(elf.max() - EXPECTED["elf_max"]) < 1e-3
    assert rho.mean() * s.volume == pytest.approx(EXPECTED["electrons"], abs=1e-4)
    assert "no ELFCAR" in ds.failed()[0]["reason"]
    assert main(["dataset", "import", str(run), "-o", str(out)]) == 0
    assert "1 already there" in capsys.readouterr().err
    assert main(["dataset", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ok"] == 1 and info["failed"] == 1 and info["splits"]["val"] == 1 and info["elements"] == {"Al": 1}


def test_cli_errors(tmp_path, capsys):
    assert main(["dataset", "info", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    assert main(["dataset", "build", str(bad), "-o", str(tmp_path / "ds")]) == 1
    assert "not valid JSON" in capsys.readouterr().err
