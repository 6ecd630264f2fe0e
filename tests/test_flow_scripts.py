"""The runnable scripts in flows/: --help, a bad input, and real local runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "flows").glob("*.py"))


def _run(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT,
                          timeout=timeout)


def test_the_four_scripts_exist():
    assert [p.name for p in SCRIPTS] == ["active_learning.py", "screen_templates.py", "train_surrogate.py",
                                         "vasp_reference_set.py"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_exits_zero(script):
    proc = _run(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")
    assert "--submit" in proc.stdout and "Examples:" in proc.stdout


def _script(name: str):
    """The script as a module (its ``main(argv)`` runs in this process)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), ROOT / "flows" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_input_is_one_error_line(tmp_path, capsys):
    screen = _script("screen_templates.py")
    assert screen.main(["--elements", "La", "--prototypes", "fcc", "--pressures", "150", "--engine", "nope",
                        "--store", str(tmp_path / "s")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: unknown ELF engine 'nope'; use one of gpaw, surrogate, gradient-expansion, surrogate-uncertainty "
        "or 'package.module:function'"]
    reference = _script("vasp_reference_set.py")
    assert reference.main([str(tmp_path / "missing.vasp"), "--dataset", str(tmp_path / "d")]) == 1
    assert capsys.readouterr().err.startswith("error: file not found")
    train = _script("train_surrogate.py")
    assert train.main(["--dataset", str(tmp_path), "--epochs", "0"]) == 1
    assert capsys.readouterr().err.strip() == "error: --epochs, --batch-size and --patch must be positive"


def test_screen_templates_runs_locally_into_the_embedded_store(tmp_path, capsys):
    store = tmp_path / "elf_store"
    code = _script("screen_templates.py").main(["--elements", "Al", "--prototypes", "fcc,bcc", "--pressures", "100",
                                                "--engine", "gradient-expansion", "--store", str(store), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    ranked = json.loads(captured.out)
    assert len(ranked) == 2 and [r["rank"] for r in ranked] == [1, 2]
    # the same templates are in the elf-workflows store (what `elf-workflows rank` reads)
    from elf_workflows.store import open_store

    with open_store(store) as s:
        rows = s.rank()
    assert [r["template_id"] for r in rows] == [r["template_id"] for r in ranked]


def test_demo_command_screens_prints_and_reports(tmp_path, capsys):
    """``elf-workflows demo`` (what ``make demo`` runs) on a small set, without the GPAW check."""
    from elf_workflows.cli import main
    from elf_workflows.store import open_store

    args = ["demo", "--elements", "Ca,Y", "--prototypes", "bcc,fcc", "--pressures", "150",
            "--dft-check", "0", "--store", str(tmp_path / "store"), "--out-dir", str(tmp_path / "report"),
            "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["rank", "template", "formula"]
    assert len(out) == 1 + 4
    from elf_workflows.report import order_rows

    with open_store(tmp_path / "store") as store:
        rows = store.rank(engine="surrogate")
    # by descending score, ties by the highest interstitial ELF
    assert [line.split()[1] for line in out[1:]] == [r["template_id"] for r in order_rows(rows)]
    keys = [(r["score"], r["max_interstitial_elf"] or 0) for r in order_rows(rows)]
    assert keys == sorted(keys, reverse=True)
    for name in ("report.md", "report.html", "ranking.png", "elf_slices.png", "ranking.json"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    # a rerun finds everything stored and computes nothing
    assert main(args) == 0
    assert "0 computed, 4 already stored" in capsys.readouterr().err


def test_demo_degrades_with_one_error_line(tmp_path, capsys, monkeypatch):
    """Without a piece it needs, the demo says which, in one line, and exits 1."""
    import sys

    from elf_workflows.cli import main

    monkeypatch.setitem(sys.modules, "elf_workflows.sublattices", None)  # makes its import fail
    assert main(["demo", "--store", str(tmp_path / "s"), "--out-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the demo needs elf_workflows.sublattices")
    assert not (tmp_path / "r").exists()
