"""GPAW engine on a 1-atom fcc Al cell with loose settings (~2 s per SCF).

Independent checks: ELF in [0, 1]; ELF and density invariant under the 48 operations of Fm-3m;
the density integrates to Al's 3 valence electrons; the grid convention (``data[i, j, k]`` at
``(i/nx, j/ny, k/nz)``) by moving the atom by a lattice-commensurate shift, which must roll the grids
by exactly that many voxels; ELFCAR/CHGCAR round trip; a stored regression value.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gpaw")

from pymatgen.core import Lattice, Structure  # noqa: E402

from elf_workflows.cli import main  # noqa: E402
from elf_workflows.errors import EngineError  # noqa: E402
from elf_workflows.io import read_chgcar, read_elfcar  # noqa: E402
from elf_workflows.reference.gpaw import LOOSE, GpawSettings, compute_gpaw_elf, result_to_files  # noqa: E402
from elf_workflows.symmetry import symmetry_error  # noqa: E402

pytestmark = [pytest.mark.gpaw, pytest.mark.slow]

EXPECTED = json.loads((Path(__file__).parent / "fixtures" / "vasp_elf" / "expected.json").read_text())
LATTICE = Lattice([[0, 2.025, 2.025], [2.025, 0, 2.025], [2.025, 2.025, 0]])  # fcc Al, a = 4.05 Å


@pytest.fixture(scope="module")
def al():
    s = Structure(LATTICE, ["Al"], [[0, 0, 0]])
    return s, compute_gpaw_elf(s, LOOSE)


def test_elf_range_symmetry_and_electrons(al):
    s, r = al
    assert r.shape == (12, 12, 12) and r.native_shape == (12, 12, 12)
    assert 0.0 <= r.elf.min() and r.elf.max() <= 1.0
    assert symmetry_error(r.elf, s) < 1e-6
    assert symmetry_error(r.density, s) < 1e-6
    assert r.electrons == pytest.approx(3.0, abs=1e-3)  # Al: 3 valence electrons in GPAW's dataset
    assert r.converged and r.iterations >= 2 and r.seconds > 0
    for key in ("ecut_ev", "kpoints", "smearing", "grid_spacing", "gpaw_version", "native_grid"):
        assert key in r.settings


def test_regression_value(al):
    """Stored from the same loose calculation (tests/fixtures/vasp_elf/expected.json)."""
    _, r = al
    assert r.elf.max() == pytest.approx(EXPECTED["elf_max"], abs=2e-3)
    assert r.elf.min() == pytest.approx(EXPECTED["elf_min"], abs=2e-3)
    assert r.energy_ev == pytest.approx(EXPECTED["energy_ev"], abs=5e-3)


def test_grid_convention_by_shifting_the_atom(al):
    """Atom at (1/4, 1/2, 3/4) on a 12³ grid: every field is the origin result rolled by (3, 6, 9) voxels."""
    _, r0 = al
    shifted = Structure(LATTICE, ["Al"], [[0.25, 0.5, 0.75]])
    r1 = compute_gpaw_elf(shifted, LOOSE)
    assert r1.shape == r0.shape
    assert np.abs(r1.elf - np.roll(r0.elf, (3, 6, 9), axis=(0, 1, 2))).max() < 2e-3
    assert np.abs(r1.density - np.roll(r0.density, (3, 6, 9), axis=(0, 1, 2))).max() < 2e-3 * r0.density.max()
    # and not by the opposite convention
    assert np.abs(r1.elf - np.roll(r0.elf, (-3, -6, -9), axis=(0, 1, 2))).max() > 0.05


def test_files_round_trip(al, tmp_path):
    s, r = al
    result_to_files(r, tmp_path / "ELFCAR", tmp_path / "CHGCAR")
    s2, elf = read_elfcar(tmp_path / "ELFCAR")
    _, rho = read_chgcar(tmp_path / "CHGCAR")
    assert np.allclose(elf, r.elf, atol=1e-9) and np.allclose(rho, r.density, rtol=1e-9, atol=1e-12)
    assert np.allclose(s2.lattice.matrix, s.lattice.matrix)


def test_missing_paw_dataset_fails_before_running():
    th = Structure(Lattice.cubic(5.08), ["Th"] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    with pytest.raises(EngineError, match="no PBE PAW dataset for Th"):
        compute_gpaw_elf(th, LOOSE)


def test_timeout_is_an_engine_error():
    s = Structure(Lattice.cubic(3.5), ["Li"], [[0, 0, 0]])
    with pytest.raises(EngineError, match="timed out"):
        compute_gpaw_elf(s, GpawSettings(timeout_s=0.05))


def test_cli_reference_on_a_requested_grid(al, tmp_path, capsys):
    """--grid 24 24 24 Fourier-interpolates GPAW's native 12³ grid: the native points are kept."""
    _, r0 = al
    poscar = tmp_path / "POSCAR"
    Structure(LATTICE, ["Al"], [[0, 0, 0]]).to(filename=str(poscar), fmt="poscar")
    code = main(["reference", str(poscar), "--engine", "gpaw", "--preset", "loose", "--grid", "24", "24", "24",
                 "-o", str(tmp_path / "ELFCAR"), "--density-out", str(tmp_path / "CHGCAR")])
    assert code == 0
    _, elf = read_elfcar(tmp_path / "ELFCAR")
    s, rho = read_chgcar(tmp_path / "CHGCAR")
    assert elf.shape == (24, 24, 24) and rho.shape == (24, 24, 24)
    assert np.abs(elf[::2, ::2, ::2] - r0.elf).max() < 1e-6
    assert np.abs(rho[::2, ::2, ::2] - r0.density).max() < 1e-6 * r0.density.max()
    assert 0 <= elf.min() and elf.max() <= 1
    assert rho.mean() * s.volume == pytest.approx(3.0, abs=1e-3)
    assert "GPAW PW 250 eV" in capsys.readouterr().err


def test_cli_th_is_one_error_line(tmp_path, capsys):
    poscar = tmp_path / "POSCAR"
    Structure(Lattice.cubic(3.6), ["Th"], [[0, 0, 0]]).to(filename=str(poscar), fmt="poscar")
    assert main(["reference", str(poscar), "--engine", "gpaw", "-o", str(tmp_path / "ELFCAR")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: GPAW has no PBE PAW dataset for Th")
    assert not (tmp_path / "ELFCAR").exists()


def test_gpaw_maker_routes_grids_to_data_store():
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    from elf_workflows.reference.gpaw import GpawElfMaker

    job = GpawElfMaker(settings=LOOSE).make(Structure(LATTICE, ["Al"], [[0, 0, 0]]))
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    run_locally(job, store=store, ensure_success=True)
    raw = store.query_one({"uuid": job.uuid}, load=False)["output"]
    assert "blob_uuid" in raw["elf"] and "blob_uuid" in raw["density"]
    assert raw["electrons"] == pytest.approx(3.0, abs=1e-3) and raw["engine"] == "gpaw"
    out = store.query_one({"uuid": job.uuid}, load=True)["output"]
    assert np.asarray(out["elf"]).shape == (12, 12, 12)
    assert np.asarray(out["elf"]).max() == pytest.approx(EXPECTED["elf_max"], abs=2e-3)


def test_atomic_limit_channel_is_gpaws_free_atom_elf():
    """A Ca atom in an 8 Å box: GPAW's self-consistent pseudo ELF within 2 Å of the nucleus against the
    surrogate's atomic-limit channel, built from the radial tables alone (no SCF). The gradient-expansion
    ELF of the same cell's SAD, the other density-only estimate, is the yardstick it must beat."""
    from dataclasses import replace

    from elf_workflows.grids import fractional_grid
    from elf_workflows.reference.gpaw import GpawSettings, compute_gpaw_elf
    from elf_workflows.sad import sad_density
    from elf_workflows.surrogate.features import atomic_limit_elf, gradient_expansion_elf

    atom = Structure(Lattice.cubic(8.0), ["Ca"], [[0.5, 0.5, 0.5]])
    settings = replace(GpawSettings(), kpoint_density=0.1, smearing="fermi-dirac", smearing_width_ev=0.05)
    ref = compute_gpaw_elf(atom, settings)
    near = np.linalg.norm((fractional_grid(ref.elf.shape) - 0.5) @ atom.lattice.matrix, axis=-1) <= 2.0
    ours = np.abs(atomic_limit_elf(atom, ref.elf.shape) - ref.elf)[near].mean()
    ge = np.abs(gradient_expansion_elf(sad_density(atom, ref.elf.shape), atom.lattice) - ref.elf)[near].mean()
    assert ours < 0.035  # 0.025 measured
    assert ours < ge / 3
