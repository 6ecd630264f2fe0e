"""Worker pools: spawned processes start with one BLAS/OpenMP thread; the parent's environment is restored."""

from __future__ import annotations

import os

from elf_workflows.parallel import single_threaded_pool


def test_spawned_workers_start_single_threaded_and_the_environment_is_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with single_threaded_pool(1) as pool:
        seen = [pool.submit(os.getenv, var).result() for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                                 "MKL_NUM_THREADS")]
    assert seen == ["1", "1", "1"]
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ
