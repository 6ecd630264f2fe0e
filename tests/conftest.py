"""Shared fixtures: small structures with known symmetry."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure


@pytest.fixture(autouse=True, scope="session")
def _table_cache(tmp_path_factory):
    """Form-factor tables are cached on disk (sad.table_cache_dir): in a temporary directory, never in ~/.cache."""
    import os

    previous = os.environ.get("ELF_WORKFLOWS_CACHE")
    os.environ["ELF_WORKFLOWS_CACHE"] = str(tmp_path_factory.mktemp("elf_workflows_cache"))
    yield
    if previous is None:
        os.environ.pop("ELF_WORKFLOWS_CACHE", None)
    else:
        os.environ["ELF_WORKFLOWS_CACHE"] = previous


@pytest.fixture
def fcc_la() -> Structure:
    """Conventional fcc La at LaH10's volume (a = 5.10 Å, 150 GPa)."""
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.10), ["La"], [[0, 0, 0]])


@pytest.fixture
def hcp_y() -> Structure:
    """hcp Y, a small hexagonal cell."""
    return Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(3.2, 5.1), ["Y"], [[1 / 3, 2 / 3, 0.25]])


@pytest.fixture
def b2_caba() -> Structure:
    """B2 (CsCl-type) CaBa."""
    return Structure(Lattice.cubic(3.6), ["Ca", "Ba"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture
def triclinic_almg() -> Structure:
    """A two-atom triclinic cell with no symmetry beyond inversion-free P1."""
    return Structure(Lattice([[3.1, 0, 0], [0.4, 3.3, 0], [0.2, -0.3, 3.6]]), ["Al", "Mg"],
                     [[0, 0, 0], [0.45, 0.52, 0.48]])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
