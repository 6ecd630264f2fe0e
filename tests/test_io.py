"""Structures in, CHGCAR/ELFCAR out: validation errors and round trips."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp.outputs import Chgcar

from elf_workflows.errors import InputError
from elf_workflows.io import read_chgcar, read_elfcar, read_structure, validate_structure, write_chgcar, write_elfcar
from elf_workflows.sad import integrate, sad_density


def test_reads_poscar_and_cif(tmp_path, fcc_la):
    fcc_la.to(filename=str(tmp_path / "POSCAR"), fmt="poscar")
    fcc_la.to(filename=str(tmp_path / "la.cif"))
    for name in ("POSCAR", "la.cif"):
        s = read_structure(tmp_path / name)
        assert len(s) == 4 and s.composition.reduced_formula == "La"


@pytest.mark.parametrize(
    "content, name, message",
    [
        (None, "missing.vasp", "file not found"),
        ("", "empty.vasp", "empty file"),
        ("this is not a structure\n", "junk.cif", "cannot read a structure"),
        ("2\nH2\nH 0 0 0\nH 0 0 0.74\n", "h2.xyz", "no periodic lattice"),
    ],
)
def test_unreadable_inputs(tmp_path, content, name, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_structure(path)


def test_directory_is_refused(tmp_path):
    with pytest.raises(InputError, match="directory"):
        read_structure(tmp_path)


def test_partial_occupancy(tmp_path):
    s = Structure(Lattice.cubic(4.0), [{"La": 0.5, "Ce": 0.5}], [[0, 0, 0]])
    s.to(filename=str(tmp_path / "dis.cif"))
    with pytest.raises(InputError, match="partial occupancy"):
        read_structure(tmp_path / "dis.cif")


def test_overlapping_atoms():
    s = Structure(Lattice.cubic(4.0), ["Ca", "Ca"], [[0, 0, 0], [0.05, 0, 0]])
    with pytest.raises(InputError, match=r"overlapping atoms 0 and 1 are 0\.200 Å apart"):
        validate_structure(s)


def test_element_without_atomic_data():
    s = Structure(Lattice.cubic(5.0), ["U"], [[0, 0, 0]])
    with pytest.raises(InputError, match="no atomic data for element 'U'"):
        validate_structure(s)


def test_no_metal_when_required():
    s = Structure(Lattice.cubic(5.0), ["Si"], [[0, 0, 0]])
    validate_structure(s)
    with pytest.raises(InputError, match="no metal"):
        validate_structure(s, require_metal=True)


def test_chgcar_round_trip_is_rho_times_volume(tmp_path, b2_caba):
    rho = sad_density(b2_caba, (20, 20, 20))
    path = write_chgcar(b2_caba, rho, tmp_path / "CHGCAR")
    raw = Chgcar.from_file(str(path))
    assert np.allclose(raw.data["total"], rho * b2_caba.volume, rtol=1e-9)
    structure, back = read_chgcar(path)
    assert np.allclose(back, rho, rtol=1e-9, atol=1e-12)
    assert integrate(back, structure) == pytest.approx(20.0, abs=1e-6)


def test_elfcar_round_trip(tmp_path, fcc_la, rng):
    elf = rng.random((10, 12, 14))
    path = write_elfcar(fcc_la, elf, tmp_path / "ELFCAR")
    structure, back = read_elfcar(path)
    assert back.shape == (10, 12, 14) and np.allclose(back, elf, atol=1e-10)
    assert structure.matches(fcc_la)
