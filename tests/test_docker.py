"""docker/: compose declares MongoDB + a screening worker; the images build with `make install`.

No docker engine runs here: the files are parsed and cross-checked against the repository (paths
they copy, make targets they call, CLI options the worker uses).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_install_with_the_make_target(dockerfile):
    steps = _instructions(dockerfile)
    assert steps[0][0] == "FROM"
    runs = " && ".join(args for word, args in steps if word == "RUN")
    called = re.findall(r"(?:^|&&|;)\s*make\s+([a-z][\w-]*)", runs)
    assert called == ["install"], called
    assert set(called) <= _make_targets()
    # every COPY source exists in the repository (README.md is needed by pyproject's readme)
    for word, args in steps:
        if word == "COPY":
            *sources, _ = shlex.split(args)
            for src in sources:
                if src != "README.md":
                    assert (ROOT / src).exists(), f"{dockerfile.name} copies missing {src}"
    entry = [args for word, args in steps if word == "ENTRYPOINT"]
    assert entry == ['["elf-workflows"]']


def test_cpu_image_uses_cpu_torch_and_cuda_image_a_gpu_base():
    cpu = (DOCKER / "Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" in cpu and "+cpu" in cpu
    assert _instructions(DOCKER / "Dockerfile.cuda")[0][1].startswith("nvidia/cuda:")
    # torch pins stay inside pyproject's range
    for path in DOCKERFILES:
        for major, minor in re.findall(r"torch==2\.(\d+)\.(\d+)", path.read_text()):
            assert 2 <= int(major) < 15


def test_compose_declares_mongo_and_a_screening_worker():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"mongo", "worker"}
    assert services["mongo"]["image"].startswith("mongo:")
    worker = services["worker"]
    assert worker["build"]["dockerfile"] == "docker/Dockerfile"
    assert (DOCKER / worker["build"]["context"] / worker["build"]["dockerfile"]).resolve() == DOCKERFILES[0]
    assert worker["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert "healthcheck" in services["mongo"]
    uri = worker["environment"]["ELF_WORKFLOWS_STORE"]
    assert uri.startswith("mongodb://mongo:27017/")
    script = " ".join(worker["command"])
    assert "elf-workflows screen" in script and "elf-workflows rank" in script
    assert f"--store {uri}" in script
    for volume in ("mongo-data", "worker-data"):
        assert volume in compose["volumes"]


def test_worker_command_uses_real_cli_options(capsys):
    """The options in compose.yaml exist in ``elf-workflows screen/rank --help``."""
    from elf_workflows.cli import main

    script = " ".join(yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["worker"]["command"])
    for part in script.split("&&"):
        words = shlex.split(part)
        assert words[0] == "elf-workflows"
        command = words[1]
        assert main([command, "--help"]) == 0
        help_text = capsys.readouterr().out
        for option in (w for w in words[2:] if w.startswith("--")):
            assert option in help_text, f"{command} has no option {option}"
