"""The reference-convergence audit (scripts/reference_convergence_audit.py): pooled comparisons of three fields."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import reference_convergence_audit as audit  # noqa: E402


def _peaked(shape, centres, heights, base=0.1):
    """A periodic field with Gaussian peaks of ``heights`` above ``base`` at the given voxels."""
    idx = np.indices(shape).reshape(3, -1).T
    field = np.full(int(np.prod(shape)), base)
    for c, height in zip(centres, heights):
        d = idx - np.asarray(c)
        d = (d + np.asarray(shape) // 2) % np.asarray(shape) - np.asarray(shape) // 2
        field += height * np.exp(-(d**2).sum(1) / 4.0)
    return field.reshape(shape)


def test_audit_pools_voxel_and_maxima_errors_against_the_truth_of_each_comparison():
    converged = _peaked((12, 12, 12), [(2, 2, 2), (8, 8, 8)], [0.8, 0.5])
    reference = converged.copy()
    reference[2, 2, 2] -= 0.05         # one maximum 0.05 low in the stored reference (still a maximum)
    surrogate = converged + 0.05       # the surrogate 0.05 high everywhere
    parts = [audit.compare({"reference": reference, "converged": converged, "surrogate": surrogate})]
    summary = audit.summarise(parts)
    n = converged.size
    rc = summary["reference_vs_converged"]
    assert rc["n_maxima"] == 2
    assert rc["voxel_mae"] == pytest.approx(round(0.05 / n, 4))
    assert rc["maxima_mae"] == pytest.approx(0.025)            # (0.05 + 0) / 2 maxima of the converged field
    sc = summary["surrogate_vs_converged"]
    assert sc["voxel_mae"] == pytest.approx(0.05) and sc["maxima_mae"] == pytest.approx(0.05)
    assert sc["maxima_r2"] == pytest.approx(1 - 2 * 0.05**2 / (2 * 0.15**2), abs=1e-3)  # peaks 0.9 and 0.6
    sr = summary["surrogate_vs_reference"]
    assert sr["maxima_mae"] == pytest.approx((0.1 + 0.05) / 2)  # at the reference's own maxima, one lowered
    assert sr["voxel_mae"] == pytest.approx(round((0.05 * (n - 1) + 0.1) / n, 4))


def test_audit_settings_overrides_take_the_type_of_their_field():
    assert audit.parse_setting("4", "float") == 4.0 and isinstance(audit.parse_setting("80", "int"), int)
    assert audit.parse_setting("fermi-dirac", "str") == "fermi-dirac"
    assert audit.parse_setting("true", "bool") is True and audit.parse_setting("0", "bool") is False
    assert audit.parse_setting("300", "float | None") == 300.0


def test_audit_rows_without_maxima_report_none_not_nan():
    flat = np.full((6, 6, 6), 0.01)  # below the 0.05 floor of the maxima: none
    summary = audit.summarise([audit.compare({"reference": flat, "converged": flat, "surrogate": flat + 0.02})])
    assert summary["surrogate_vs_converged"] == {"voxel_mae": 0.02, "maxima_mae": None, "maxima_r2": None, "n_maxima": 0}
