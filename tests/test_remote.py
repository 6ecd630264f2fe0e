"""The jobflow-remote project template validates with jobflow-remote's own config model."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

pytest.importorskip("jobflow_remote")
from jobflow import JobStore  # noqa: E402
from jobflow_remote.config.base import Project  # noqa: E402
from qtoolkit.io.slurm import SlurmIO  # noqa: E402

from elf_workflows.errors import InputError  # noqa: E402
from elf_workflows.remote import TEMPLATE, main, project_dict, validate_project, write_project  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
ROOT = Path(__file__).resolve().parent.parent


def test_shipped_template_is_a_valid_jobflow_remote_project():
    assert TEMPLATE == ROOT / "flows" / "jobflow_remote_project.yaml"
    raw = yaml.safe_load(TEMPLATE.read_text())
    project = Project.model_validate(raw)  # jobflow-remote's own model, not ours
    assert project.name == "elf_workflows"
    assert set(project.workers) == {"cpu", "gpu"}
    for worker in project.workers.values():
        assert worker.type == "remote"
        assert isinstance(worker.get_scheduler_io(), SlurmIO)
        assert worker.work_dir.is_absolute()
    assert project.workers["gpu"].resources["gres"] == "gpu:1"
    assert project.queue.store["type"] == "MongoStore"
    jobstore = project.get_jobstore()
    assert isinstance(jobstore, JobStore)
    assert set(jobstore.additional_stores) == {"data"}
    assert type(jobstore.additional_stores["data"]).__name__ == "GridFSStore"
    # and our own validator agrees
    assert validate_project(TEMPLATE).name == "elf_workflows"


def test_slurm_script_renders_the_worker_resources():
    project = validate_project(TEMPLATE)
    worker = project.workers["cpu"]
    script = worker.get_scheduler_io().get_submission_script("jf -fe execution run /x", worker.resources)
    assert "#SBATCH --partition=standard" in script
    assert "#SBATCH --ntasks=16" in script
    assert "#SBATCH --time=04:00:00" in script


def test_builder_writes_valid_projects(tmp_path):
    path = write_project(tmp_path / "p.yaml", host="login.hpc.test", user="me", work_dir="/scratch/me/elf",
                         mongo_host="mongodb://db.lab:27017", gpu_partition=None)
    project = Project.model_validate(yaml.safe_load(path.read_text()))
    assert set(project.workers) == {"cpu"}
    assert project.workers["cpu"].host == "login.hpc.test"
    assert str(project.workers["cpu"].work_dir) == "/scratch/me/elf/cpu"
    assert project.get_jobstore().additional_stores["data"].collection_name == "outputs_blobs"
    local = project_dict(local=True, work_dir="/tmp/elf")
    assert Project.model_validate(local).workers["local"].type == "local"


def test_bad_projects_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="work_dir must be an absolute path"):
        project_dict(work_dir="relative/dir")
    broken = project_dict()
    broken["workers"]["cpu"]["scheduler_type"] = "no-such-scheduler"
    with pytest.raises(InputError, match="invalid jobflow-remote project"):
        validate_project(broken)
    no_data = project_dict()
    del no_data["jobstore"]["additional_stores"]
    with pytest.raises(InputError, match="no additional store 'data'"):
        validate_project(no_data)
    no_queue = project_dict()
    del no_queue["queue"]
    with pytest.raises(InputError, match="first at queue"):
        validate_project(no_queue)


def test_module_command_checks_files(tmp_path, capsys):
    assert main(["check", str(TEMPLATE)]) == 0
    assert "valid project 'elf_workflows'" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nworkers: [1, 2\n")
    assert main(["check", str(bad)]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["write", "-o", str(tmp_path / "w.yaml"), "--local", "--work-dir", "/tmp/w"]) == 0
    assert Project.model_validate(yaml.safe_load((tmp_path / "w.yaml").read_text())).workers["local"]


def test_screening_flow_enters_a_jobflow_remote_queue(tmp_path, monkeypatch):
    """jobflow-remote accepts the screening flow (serialised Makers, dynamic fan-out): inserted with
    its JobController into a queue (an in-memory MongoStore here; MongoDB on a real set-up)."""
    from jobflow_remote.jobs.state import JobState

    from elf_workflows.flows import TemplateScreeningMaker

    data = project_dict(name="elf_test", local=True, work_dir=str(tmp_path / "work"))
    data["base_dir"] = str(tmp_path / "project")
    data["queue"]["store"] = {"type": "MemoryStore", "collection_name": "jobs"}
    data["jobstore"] = {"docs_store": {"type": "MemoryStore"}, "additional_stores": {"data": {"type": "MemoryStore"}}}
    controller = validate_project(data).get_job_controller()
    assert controller.reset()
    flow = TemplateScreeningMaker(engine="gradient-expansion").make(["Al"], ["fcc", "bcc"], [100])
    ids = controller.add_flow(flow, worker="local")
    assert ids == ["1", "2", "3"]
    jobs = {j.name: j for j in controller.get_jobs_info()}
    assert set(jobs) == {"sublattices", "screen sublattices", "rank"}
    assert jobs["sublattices"].state == JobState.READY
    assert jobs["rank"].state == JobState.WAITING and jobs["rank"].worker == "local"
