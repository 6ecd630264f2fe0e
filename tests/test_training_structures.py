"""The training-set generator (scripts/make_training_structures.py): volumes, pressures and held-out splits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import make_training_structures as mts  # noqa: E402

from elf_workflows.sublattices.eos import volume_at_pressure  # noqa: E402
from elf_workflows.surrogate.domain import compression_ratio  # noqa: E402


def _elements(doc):
    return sorted({site["species"][0]["element"] for site in doc["structure"]["sites"]})


def test_ratio_mode_spans_the_asked_volumes_and_holds_out_test_chemistry():
    docs = mts.generate(60, seed=5, distorted_share=0.0)
    ratios = np.array([d["v_ratio"] for d in docs])
    assert ratios.min() >= 0.45 and ratios.max() <= 1.0
    for d in docs:
        els = set(_elements(d))
        assert (d["split"] == "test") == bool(els & mts.TEST_ELEMENTS or frozenset(els) in mts.TEST_PAIRS)
        s = Structure.from_dict(d["structure"])
        assert compression_ratio(s) == pytest.approx(d["v_ratio"], abs=1e-3)


def test_pressure_mode_compresses_by_the_equation_of_state():
    docs = mts.generate(40, seed=7, distorted_share=0.0, pressures=(50.0, 300.0), max_ratio=0.5)
    drawn = [d for d in docs if "pressure_gpa" in d]
    assert len(drawn) == 40 - 6  # after the six fixed B2 CaBa / FePb cells
    for d in drawn:
        assert 50.0 <= d["pressure_gpa"] <= 300.0 and d["v_ratio"] < 0.5
        s = Structure.from_dict(d["structure"])
        if d["prototype"] in ("fcc", "bcc", "hcp"):  # unary: the element's own EOS volume at that pressure
            (el,) = _elements(d)
            expected = volume_at_pressure(el, d["prototype"], d["pressure_gpa"])
            assert s.volume / len(s) == pytest.approx(expected, rel=2e-3)  # pressure rounded to 0.1 GPa
    # soft metals reach far below V/V0 = 0.45 at these pressures
    assert min(d["v_ratio"] for d in drawn) < 0.3
