"""Process pools of spawned, single-threaded workers: how the package runs independent work in parallel.

A spawned worker imports numpy (and torch) before any pool initializer runs, and OpenBLAS/MKL/OpenMP
size their thread pools from the environment at that moment. So the thread variables are set to 1
in this process while the pool lives (children inherit the environment; this process's own pools are
already sized and do not change) and restored afterwards. Without it, 15 workers on 16 cores each
started a full OpenBLAS pool and preparing the training cells took 376 s instead of 62 s
(docs/surrogate.md, session 6).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator

#: the environment of a worker process: one BLAS/OpenMP thread (the workers are the parallelism)
ONE_THREAD = {var: "1" for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


@contextmanager
def one_thread_environment() -> Iterator[None]:
    """:data:`ONE_THREAD` in ``os.environ`` for the duration of the block, the previous values restored after."""
    saved = {var: os.environ.get(var) for var in ONE_THREAD}
    os.environ.update(ONE_THREAD)
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def spawn_pool(workers: int, initializer: Callable[..., Any] | None = None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (no fork of a process whose torch/OpenMP threads already run).

    Create and use it inside :func:`one_thread_environment` (workers start lazily, on submission).
    """
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=initializer,
                               initargs=initargs)


@contextmanager
def single_threaded_pool(workers: int, initializer: Callable[..., Any] | None = None,
                         initargs: tuple = ()) -> Iterator[ProcessPoolExecutor]:
    """:func:`spawn_pool` inside :func:`one_thread_environment`, shut down (waiting for its work) on exit."""
    with one_thread_environment(), spawn_pool(workers, initializer, initargs) as pool:
        yield pool
