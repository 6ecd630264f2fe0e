"""The `sad` and `symmetry` commands, and the one-line error contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from elf_workflows.cli import main
from elf_workflows.io import read_chgcar
from elf_workflows.sad import integrate


@pytest.fixture
def poscar(tmp_path, hcp_y):
    path = tmp_path / "POSCAR"
    hcp_y.to(filename=str(path), fmt="poscar")
    return path


def test_sad_command_writes_a_normalised_chgcar(tmp_path, poscar):
    out = tmp_path / "CHGCAR"
    assert main(["sad", str(poscar), "--spacing", "0.2", "-o", str(out)]) == 0
    structure, rho = read_chgcar(out)
    assert rho.shape[0] == rho.shape[1]
    assert integrate(rho, structure) == pytest.approx(22.0, abs=1e-5)
    assert main(["sad", str(poscar), "--grid", "10", "12", "14", "-o", str(out)]) == 0
    assert read_chgcar(out)[1].shape == (10, 12, 14)
    # --partition: the compensated free-atom densities, same electron count, the semicore at the nuclei
    part = tmp_path / "CHGCAR_partition"
    assert main(["sad", str(poscar), "--spacing", "0.2", "--partition", "-o", str(part)]) == 0
    _, rho_p = read_chgcar(part)
    assert integrate(rho_p, structure) == pytest.approx(22.0, abs=1e-5)
    assert rho_p.max() > 1.5 * rho.max()  # Y's 4s4p semicore kept at the nucleus


def test_symmetry_command_json(poscar, capsys):
    assert main(["symmetry", str(poscar), "--json", "--spacing", "0.2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["spacegroup"] == {"symbol": "P6_3/mmc", "number": 194}
    assert report["n_operations"] == 24 and report["grids"][0]["all_compatible"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["sad", "does-not-exist.vasp"], "error: file not found"),
        (["sad", "{poscar}", "--grid", "0", "4", "4"], "error: grid sizes must be positive"),
        (["sad", "{poscar}", "--grid", "4000", "4000", "4000"], "error: grid 4000x4000x4000 needs about"),
        (["sad", "{poscar}", "--grid", "8", "8", "8", "--spacing", "0.1"], "error: give either --grid or --spacing"),
    ],
)
def test_bad_input_is_one_error_line_and_nonzero_exit(poscar, tmp_path, args, message):
    args = [a.replace("{poscar}", str(poscar)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "elf_workflows.cli", *args, "-o", str(tmp_path / "C")]
                          if args[0] == "sad" else [sys.executable, "-m", "elf_workflows.cli", *args],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "C").exists()
