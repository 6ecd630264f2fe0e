"""VASP engine: ELF static inputs, and the atomate2 Maker run end to end through atomate2's mock VASP.

The mock (``atomate2.utils.testing.vasp.monkeypatch_vasp``) checks the INCAR/KPOINTS/POSCAR/POTCAR.spec
the Maker writes against ``tests/fixtures/vasp_elf/inputs`` and copies in ``outputs/``: ELFCAR, CHGCAR,
CONTCAR, a minimal vasprun.xml and OUTCAR and a clean custodian.json that this project's converter
wrote from a GPAW calculation of the same fcc Al cell (``tests/fixtures/vasp_elf/make_fixture.py``),
so atomate2's TaskDoc parsing (emmet ``TaskDoc.from_directory``) runs on them. VASP itself is never
run here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("atomate2")

from pymatgen.io.vasp import Incar, Kpoints  # noqa: E402

from elf_workflows.cli import main  # noqa: E402
from elf_workflows.reference.vasp import ELF_INCAR, ElfGridDocument, VaspElfMaker, write_vasp_inputs  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "vasp_elf"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture
def no_potcars(monkeypatch):
    from pymatgen.core import SETTINGS

    monkeypatch.delenv("PMG_VASP_PSP_DIR", raising=False)
    monkeypatch.delitem(SETTINGS, "PMG_VASP_PSP_DIR", raising=False)


def al_fcc():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURE / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.al_fcc()


def test_inputs_are_an_elf_static(tmp_path, no_potcars):
    files = write_vasp_inputs(al_fcc(), tmp_path / "run")
    assert sorted(p.name for p in files) == ["INCAR", "KPOINTS", "POSCAR", "POTCAR.spec"]
    incar = Incar.from_file(tmp_path / "run" / "INCAR")
    assert incar["LELF"] is True and incar["LCHARG"] is True
    assert incar["NPAR"] == 1 and incar["KPAR"] == 1 and "NCORE" not in incar
    assert incar["ISPIN"] == 1 and incar["GGA"].upper() == "PE" and incar["NSW"] == 0
    assert (tmp_path / "run" / "POTCAR.spec").read_text().split() == ["Al"]
    kpts = Kpoints.from_file(tmp_path / "run" / "KPOINTS")
    assert min(kpts.kpts[0]) >= 8  # 200 k-points per reciprocal atom on a 1-atom cell


def test_cli_write_inputs(tmp_path, no_potcars, capsys):
    poscar = tmp_path / "POSCAR"
    al_fcc().to(filename=str(poscar), fmt="poscar")
    assert main(["reference", str(poscar), "--engine", "vasp", "--write-inputs", str(tmp_path / "vasp")]) == 0
    assert Incar.from_file(tmp_path / "vasp" / "INCAR")["LELF"] is True
    assert (tmp_path / "vasp" / "POTCAR.spec").exists()
    # VASP is never run here: without --write-inputs the command refuses with one error line
    assert main(["reference", str(poscar), "--engine", "vasp"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: VASP does not run here")


def _run_mocked(tmp_path, monkeypatch, maker):
    """Run ``maker`` on fcc Al under atomate2's mock VASP; return (job, store, response)."""
    from atomate2.utils.testing.vasp import monkeypatch_vasp
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    monkeypatch.chdir(tmp_path)
    mock = monkeypatch_vasp(monkeypatch, FIXTURE.parent, nelect=3)
    mock_vasp = next(mock)
    mock_vasp({"elf static": "vasp_elf"},
              {"elf static": {"incar_settings": ["LELF", "NPAR", "KPAR", "LCHARG", "ISPIN", "GGA", "ISMEAR"]}})
    job = maker.make(al_fcc())
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    responses = run_locally(job, store=store, create_folders=True, ensure_success=True)
    with pytest.raises(StopIteration):
        next(mock)
    return job, store, responses[job.uuid][1]


def test_maker_through_atomate2_mock(tmp_path, monkeypatch, no_potcars):
    """Default Maker (``parse_task_document=True``): TaskDoc parsed from the GPAW-made vasprun/OUTCAR."""
    import atomate2.vasp.jobs.base as base

    task_docs = []
    parse = base.get_vasp_task_document

    def spy(*args, **kwargs):
        task_docs.append(parse(*args, **kwargs))
        return task_docs[-1]

    monkeypatch.setattr(base, "get_vasp_task_document", spy)
    maker = VaspElfMaker()
    assert maker.parse_task_document is True
    job, store, response = _run_mocked(tmp_path, monkeypatch, maker)
    doc = response.output
    assert isinstance(doc, ElfGridDocument)
    # the TaskDoc atomate2 built from vasprun.xml/OUTCAR: GPAW's energy (vasprun keeps 8 decimals)
    (task_doc,) = task_docs
    assert task_doc.state == "successful" and str(task_doc.calc_type) == "PBE Static"
    assert task_doc.input.incar["LELF"] is True and task_doc.input.kpoints.kpts[0] == (14, 14, 14)
    assert task_doc.output.energy == pytest.approx(EXPECTED["energy_ev"], abs=1e-8)
    assert task_doc.output.structure.matches(al_fcc())
    assert doc.energy_ev == task_doc.output.energy
    # the custodian record of the TaskDoc is the job's stored data: one clean VaspJob run
    (run,) = response.stored_data["custodian"]
    assert run.job["@class"] == "VaspJob" and run.corrections == []
    # grid document numbers: the GPAW result written into the fixture
    assert doc.shape == EXPECTED["shape"]
    assert doc.elf_max == pytest.approx(EXPECTED["elf_max"], abs=1e-8)
    assert doc.electrons == pytest.approx(EXPECTED["electrons"], abs=1e-6)
    # the run folder kept ELFCAR and CHGCAR
    run_dir = Path(doc.dir_name)
    assert any(run_dir.glob("ELFCAR*")) and any(run_dir.glob("CHGCAR*"))
    # big arrays were routed to the additional store "data"; the main store holds references only
    stored = store.query_one({"uuid": job.uuid}, load=False)
    assert "blob_uuid" in stored["output"]["elf"] and "blob_uuid" in stored["output"]["density"]
    data_store = store.additional_stores["data"]
    assert data_store.count() == 2
    loaded = store.query_one({"uuid": job.uuid}, load=True)["output"]
    elf = np.asarray(loaded["elf"], float)
    assert elf.shape == tuple(EXPECTED["shape"]) and elf.max() == pytest.approx(EXPECTED["elf_max"], abs=1e-8)
    assert loaded["energy_ev"] == pytest.approx(EXPECTED["energy_ev"], abs=1e-8)


def test_maker_without_task_document(tmp_path, monkeypatch, no_potcars):
    """``parse_task_document=False``: no TaskDoc, no stored data; the energy comes from this project's
    own reader of the run folder (``read_vasp_dir`` → pymatgen ``Vasprun``)."""
    import atomate2.vasp.jobs.base as base

    def no_task_doc(*args, **kwargs):
        raise AssertionError("TaskDoc parsed although parse_task_document=False")

    monkeypatch.setattr(base, "get_vasp_task_document", no_task_doc)
    _, _, response = _run_mocked(tmp_path, monkeypatch, VaspElfMaker(parse_task_document=False))
    assert response.stored_data is None
    assert response.output.energy_ev == pytest.approx(EXPECTED["energy_ev"], abs=1e-8)
    assert response.output.elf_max == pytest.approx(EXPECTED["elf_max"], abs=1e-8)


def test_mock_rejects_inputs_without_lelf(tmp_path, monkeypatch, no_potcars):
    """The mock compares the written INCAR with the fixture's: a Maker without LELF fails."""
    from atomate2.utils.testing.vasp import monkeypatch_vasp
    from atomate2.vasp.sets.core import StaticSetGenerator
    from jobflow import run_locally

    monkeypatch.chdir(tmp_path)
    mock = monkeypatch_vasp(monkeypatch, FIXTURE.parent, nelect=3)
    next(mock)({"elf static": "vasp_elf"}, {"elf static": {"incar_settings": ["LELF"]}})
    plain = StaticSetGenerator(user_incar_settings={**ELF_INCAR, "LELF": False})
    job = VaspElfMaker(input_set_generator=plain).make(al_fcc())
    with pytest.raises(RuntimeError):
        run_locally(job, create_folders=True, ensure_success=True)
    with pytest.raises(StopIteration):
        next(mock)


def test_elf_incar_requirements():
    assert ELF_INCAR["LELF"] is True and ELF_INCAR["NPAR"] == 1 and ELF_INCAR["KPAR"] == 1
