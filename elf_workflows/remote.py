"""jobflow-remote: the project template of elf-workflows, its validation, and flow submission.

A jobflow-remote *project* (``~/.jfremote/NAME.yaml``) names the workers (here Slurm clusters reached
over SSH, through qtoolkit), the MongoDB queue, and the JobStore (docs in MongoDB, grids in the
additional store ``data``). :func:`project_dict` builds one, :func:`validate_project` checks it with
jobflow-remote's own pydantic model (``jobflow_remote.config.base.Project``), :func:`submit` sends a
flow to the queue. Then, on the machine that runs the runner::

    jf project check --errors
    jf runner start
    jf job list

Run as a module to write a filled-in project file::

    python -m elf_workflows.remote write --host login.my.cluster --user me \\
        --work-dir /scratch/me/elf --mongo-host db.my.lab -o ~/.jfremote/elf_workflows.yaml
    python -m elf_workflows.remote check ~/.jfremote/elf_workflows.yaml
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

from elf_workflows.errors import InputError

#: the template shipped with the repository (``flows/jobflow_remote_project.yaml``)
TEMPLATE = Path(__file__).resolve().parent.parent / "flows" / "jobflow_remote_project.yaml"
#: name of the JobStore additional store that holds the grids
DATA_STORE = "data"


def _mongo(host: str, port: int, database: str, collection: str, store_type: str = "MongoStore",
           username: str | None = None, password: str | None = None) -> dict[str, Any]:
    if host.startswith(("mongodb://", "mongodb+srv://")):
        return {"type": store_type, "uri": host, "database": database, "collection_name": collection}
    spec = {"type": store_type, "host": host, "port": int(port), "database": database,
            "collection_name": collection}
    if username:
        spec.update(username=username, password=password or "")
    return spec


def project_dict(
    name: str = "elf_workflows",
    host: str = "login.cluster.example.org",
    user: str = "myuser",
    work_dir: str = "/scratch/myuser/elf_workflows",
    mongo_host: str = "localhost",
    mongo_port: int = 27017,
    database: str = "elf_workflows",
    mongo_user: str | None = None,
    mongo_password: str | None = None,
    venv: str = "~/elf-workflows/.venv",
    cpu_partition: str = "standard",
    gpu_partition: str | None = "gpu",
    ntasks: int = 16,
    walltime: str = "04:00:00",
    local: bool = False,
) -> dict[str, Any]:
    """A jobflow-remote project for elf-workflows as a dict (what the YAML file holds).

    Args:
        name: project name (``jf -p NAME ...``).
        host, user: SSH login of the cluster.
        work_dir: absolute directory on the cluster where jobs run.
        mongo_host: MongoDB host name, or a full ``mongodb://``/``mongodb+srv://`` URI.
        mongo_port, database, mongo_user, mongo_password: MongoDB access.
        venv: virtual environment with elf-workflows on the cluster.
        cpu_partition, gpu_partition: Slurm partitions (``gpu_partition=None``: no GPU worker).
        ntasks: MPI tasks of a CPU job; walltime: Slurm ``--time``.
        local: a single worker on this machine running jobs through the ``shell`` scheduler
            (for trying the queue without a cluster).
    """
    if not str(work_dir).startswith("/"):
        raise InputError(f"work_dir must be an absolute path, got {work_dir!r}")
    pre_run = f"source {venv}/bin/activate\nexport OMP_NUM_THREADS=1\n"
    if local:
        workers = {"local": {"type": "local", "scheduler_type": "shell", "work_dir": f"{work_dir}/local",
                             "pre_run": pre_run, "timeout_execute": 120}}
    else:
        workers = {"cpu": {
            "type": "remote", "scheduler_type": "slurm", "host": host, "user": user,
            "work_dir": f"{work_dir}/cpu", "pre_run": pre_run, "timeout_execute": 120,
            "resources": {"partition": cpu_partition, "nodes": 1, "ntasks": int(ntasks), "time": walltime},
        }}
        if gpu_partition:
            workers["gpu"] = {
                "type": "remote", "scheduler_type": "slurm", "host": host, "user": user,
                "work_dir": f"{work_dir}/gpu", "pre_run": f"source {venv}/bin/activate\n",
                "timeout_execute": 120,
                "resources": {"partition": gpu_partition, "nodes": 1, "ntasks": 1, "cpus_per_task": 8,
                              "gres": "gpu:1", "time": "12:00:00"},
            }
    auth = dict(username=mongo_user, password=mongo_password)
    return {
        "name": name,
        "workers": workers,
        "queue": {"store": _mongo(mongo_host, mongo_port, f"{database}_queue", "jobs", **auth)},
        "jobstore": {
            "docs_store": _mongo(mongo_host, mongo_port, database, "outputs", **auth),
            "additional_stores": {
                DATA_STORE: _mongo(mongo_host, mongo_port, database, "outputs_blobs", "GridFSStore", **auth),
            },
        },
        "exec_config": {"gpaw": {"export": {"OMP_NUM_THREADS": "1"}}},
        "runner": {"delay_checkout": 30, "delay_check_run_status": 60, "delay_advance_status": 30},
    }


def load_project_file(path: str | Path) -> dict[str, Any]:
    """The project dict of a YAML (or JSON) project file."""
    import yaml

    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: a project file holds a mapping, got {type(data).__name__}")
    return data


def validate_project(project: dict[str, Any] | str | Path):
    """Validate a project (dict or file) with jobflow-remote's model; return the ``Project``.

    Besides jobflow-remote's own checks (worker types, scheduler known to qtoolkit, absolute
    ``work_dir``, queue store a MongoStore, JobStore buildable), elf-workflows needs the JobStore
    to have the additional store ``data`` for the grids. Raises :class:`InputError` with one line.
    """
    from pydantic import ValidationError
    from jobflow_remote.config.base import Project

    data = load_project_file(project) if isinstance(project, (str, Path)) else copy.deepcopy(project)
    try:
        validated = Project.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        message = str(err.get("msg", exc)).strip().splitlines()[0]
        raise InputError(f"invalid jobflow-remote project ({exc.error_count()} error(s)); "
                         f"first at {where or 'top level'}: {message}") from exc
    stores = (validated.jobstore or {}).get("additional_stores") or {}
    if DATA_STORE not in stores:
        raise InputError(f"the project's jobstore has no additional store {DATA_STORE!r}: "
                         "elf-workflows routes its grids there")
    if not validated.workers:
        raise InputError("the project defines no workers")
    return validated


def write_project(path: str | Path, **kwargs) -> Path:
    """Build (:func:`project_dict`), validate and write a project YAML file."""
    import yaml

    data = project_dict(**kwargs)
    validate_project(data)
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def submit(flow, project: str | None = None, worker: str | None = None,
           resources: dict | None = None, exec_config: str | None = None) -> list:
    """Add ``flow`` to the jobflow-remote queue of ``project`` (default: the current project).

    Returns the database ids of the inserted jobs. Nothing runs until ``jf runner start``.
    """
    try:
        from jobflow_remote import submit_flow
    except ImportError as exc:
        raise InputError("jobflow-remote is not installed: pip install 'elf-workflows[remote]'") from exc
    try:
        return submit_flow(flow, worker=worker, project=project, resources=resources, exec_config=exec_config)
    except Exception as exc:  # noqa: BLE001 - config and connection errors become one line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"jobflow-remote submission failed: {message}") from exc


def main(argv: list[str] | None = None) -> int:
    """``python -m elf_workflows.remote write|check``."""
    parser = argparse.ArgumentParser(prog="python -m elf_workflows.remote", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write a validated project file")
    w.add_argument("-o", "--output", required=True, help="project YAML to write (e.g. ~/.jfremote/elf_workflows.yaml)")
    w.add_argument("--name", default="elf_workflows")
    w.add_argument("--host", default="login.cluster.example.org", help="SSH login node")
    w.add_argument("--user", default="myuser")
    w.add_argument("--work-dir", default="/scratch/myuser/elf_workflows", help="absolute path on the cluster")
    w.add_argument("--mongo-host", default="localhost", help="host name or mongodb:// URI")
    w.add_argument("--mongo-port", type=int, default=27017)
    w.add_argument("--database", default="elf_workflows")
    w.add_argument("--venv", default="~/elf-workflows/.venv")
    w.add_argument("--cpu-partition", default="standard")
    w.add_argument("--gpu-partition", default="gpu", help="'' for no GPU worker")
    w.add_argument("--local", action="store_true", help="one local worker (shell scheduler) instead of Slurm")
    c = sub.add_parser("check", help="validate a project file with jobflow-remote's model")
    c.add_argument("project", help="project YAML file")
    args = parser.parse_args(argv)
    try:
        if args.command == "write":
            path = write_project(args.output, name=args.name, host=args.host, user=args.user,
                                 work_dir=args.work_dir, mongo_host=args.mongo_host, mongo_port=args.mongo_port,
                                 database=args.database, venv=args.venv, cpu_partition=args.cpu_partition,
                                 gpu_partition=args.gpu_partition or None, local=args.local)
            print(f"wrote {path}", file=sys.stderr)
        else:
            project = validate_project(args.project)
            print(f"{args.project}: valid project {project.name!r}, workers "
                  f"{', '.join(project.workers)}, data store {DATA_STORE!r}")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


def add_submit_arguments(parser) -> None:
    """The jobflow-remote options every ``flows/`` script shares: ``--submit``, ``--project``, ``--worker``."""
    remote = parser.add_argument_group("jobflow-remote")
    remote.add_argument("--submit", action="store_true", help="submit through jobflow-remote instead of running here")
    remote.add_argument("--project", default=None, help="jobflow-remote project (default: the current one)")
    remote.add_argument("--worker", default=None, help="worker of the project (default: its first)")


def quiet_library_warnings() -> None:
    """Silence the deprecation chatter of pymatgen/jobflow in the ``flows/`` scripts' output."""
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
