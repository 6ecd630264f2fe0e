"""Build a reference dataset with GPAW: parallel worker processes, progress bar, resumable, failures recorded.

Each input is a structure plus optional metadata (``split``, ``source``, ``prototype``...). Its record
id hashes the structure, the engine and the physics settings, so a rerun with the same settings skips
every id already in ``records.jsonl`` (``ok`` or ``failed``; ``retry_failed`` recomputes failures),
and a rerun with other settings adds new records beside the old ones.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from elf_workflows.dataset.format import DatasetWriter, record_id
from elf_workflows.errors import InputError
from elf_workflows.parallel import one_thread_environment, spawn_pool

#: metadata keys of an input document copied into its record
KEEP_KEYS = ("split", "source", "prototype", "v_ratio", "pressure_gpa", "template_id", "distorted", "parent_id")


def load_inputs(paths: Iterable[str | Path]) -> list[dict]:
    """Input documents from structure files and/or JSON lists.

    A JSON file holds a list of documents with a ``structure`` key (pymatgen dict; the output of
    ``sublattices`` and ``scripts/make_training_structures.py``) or of bare structure dicts. Any other
    file is read as one structure (POSCAR, CIF...).
    """
    docs: list[dict] = []
    for path in map(Path, paths):
        if path.suffix.lower() == ".json":
            if not path.exists():
                raise InputError(f"file not found: {path}")
            try:
                items = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
            if isinstance(items, dict):
                items = [items]
            if not isinstance(items, list) or not items:
                raise InputError(f"{path}: expected a non-empty JSON list of structure documents")
            for n, item in enumerate(items):
                doc = dict(item) if isinstance(item, dict) and "structure" in item else {"structure": item}
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        s = Structure.from_dict(doc["structure"])
                except Exception as exc:  # noqa: BLE001
                    raise InputError(f"{path}: item {n} is not a pymatgen structure ({type(exc).__name__})") from exc
                if len(s) == 0:
                    raise InputError(f"{path}: item {n} has no atoms")
                doc["structure"] = s  # checked per cell by the engine: a bad cell is a failed record
                doc.setdefault("source", f"{path.name}[{n}]")
                docs.append(doc)
        else:
            docs.append({"structure": _read_unchecked(path), "source": path.name})
    if not docs:
        raise InputError("no structures given")
    return docs


def input_documents(dataset, split: str | None = None, elements: set[str] | None = None) -> list[dict]:
    """The ``ok`` records of a :class:`~elf_workflows.dataset.format.ReferenceDataset` (of one split;
    holding any of ``elements``) as input documents of :func:`build_dataset`, the inverse of
    :func:`load_inputs`: ``structure`` (pymatgen dict), the metadata a build keeps (:data:`KEEP_KEYS`:
    split, source, prototype, V/V0...) and ``parent_id``, the record's own id.

    Rebuilding a dataset with other settings (``elf-workflows dataset export``, then ``dataset
    build``) keeps every cell's split and provenance; the new records get new ids (their settings
    differ) and point back through ``parent_id``.
    """
    docs = []
    for rec in dataset.records(split):
        if elements and not elements.intersection(rec.get("elements", [])):
            continue
        doc = {"structure": rec["structure"], **{k: rec[k] for k in KEEP_KEYS if k in rec and k != "parent_id"}}
        doc["parent_id"] = rec["id"]
        docs.append(doc)
    return docs


def _read_unchecked(path: Path) -> Structure:
    """A structure file as pymatgen reads it; element checks are left to the engine (failed records)."""
    from elf_workflows.io import read_structure

    try:
        return read_structure(path)
    except InputError as exc:
        if "no atomic data for element" not in str(exc):
            raise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Structure.from_file(path)


def _valence(structure: Structure) -> float | None:
    from elf_workflows.sad import valence_count

    try:
        return valence_count(structure)
    except Exception:  # noqa: BLE001 - an element without atomic data
        return None


def _compute(payload: dict) -> dict:
    """Worker: one GPAW calculation → record fields and arrays, or a failure reason (never raises)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from elf_workflows.reference.gpaw import GpawSettings, compute_gpaw_elf

    structure = Structure.from_dict(payload["structure"])
    start = time.perf_counter()
    try:
        result = compute_gpaw_elf(structure, GpawSettings(**payload["settings"]), payload.get("grid"))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a record
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"id": payload["id"], "ok": False, "reason": text, "seconds": time.perf_counter() - start}
    return {"id": payload["id"], "ok": True, "meta": result.metadata(), "elf": result.elf,
            "density": result.density, "seconds": result.seconds}


def build_dataset(
    inputs: list[dict],
    path: str | Path,
    settings=None,
    workers: int = 2,
    grid: tuple[int, int, int] | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    records_per_shard: int = 64,
    limit: int | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> dict[str, int]:
    """Compute the GPAW ELF of every input not yet in the dataset at ``path``; return counts.

    Args:
        inputs: documents from :func:`load_inputs` (``structure`` + metadata).
        path: dataset directory (created; reopened and extended if it exists).
        settings: :class:`~elf_workflows.reference.gpaw.GpawSettings` (``timeout_s`` caps each cell).
        workers: worker processes (each GPAW runs single-threaded); 0 runs in this process.
        grid: fixed output grid for every cell, ``None`` = GPAW's native grid.
        retry_failed: recompute ids recorded as ``failed``.
        progress: tqdm progress bar on stderr.
        limit: stop after this many new records (``None``: all).
        on_record: called with each new record (after it is written).

    Returns:
        ``{"ok": n, "failed": n, "skipped": n, "total": n}``.
    """
    from elf_workflows.reference.gpaw import GpawSettings

    settings = settings or GpawSettings()
    physics = settings.as_dict()
    writer = DatasetWriter(path, records_per_shard=records_per_shard)
    done = writer.done_ids(include_failed=not retry_failed)
    tasks: list[tuple[dict, dict]] = []
    seen: set[str] = set()
    skipped = 0
    for doc in inputs:
        s = doc["structure"] if isinstance(doc["structure"], Structure) else Structure.from_dict(doc["structure"])
        key = physics | ({"grid": list(grid)} if grid else {})
        rid = record_id(s, "gpaw", key)
        if rid in done or rid in seen:
            skipped += 1
            continue
        seen.add(rid)
        base = {k: doc[k] for k in KEEP_KEYS if k in doc}
        base.update(id=rid, structure=s, engine="gpaw",
                    sad={"module": "elf_workflows.sad", "valence_electrons": _valence(s)})
        payload = {"id": rid, "structure": s.as_dict(), "settings": asdict(settings),
                   "grid": list(grid) if grid else None}
        tasks.append((base, payload))
    if limit is not None:
        tasks = tasks[:limit]
    counts = {"ok": 0, "failed": 0, "skipped": skipped, "total": len(inputs)}
    bar = _progress(len(tasks), progress)

    def store(base: dict, out: dict) -> None:
        if out["ok"]:
            meta = out["meta"]
            rec = base | {"settings": meta["settings"], "energy_ev": meta["energy_ev"],
                          "seconds": round(out["seconds"], 3),
                          "electrons": meta["electrons"], "convergence": meta["convergence"],
                          "native_shape": meta["native_shape"]}
            rec = writer.add(rec, out["elf"], out["density"])
            counts["ok"] += 1
        else:
            rec = base | {"settings": physics, "seconds": round(out["seconds"], 3)}
            rec = writer.add_failed(rec, out["reason"])
            counts["failed"] += 1
        bar.update(1)
        bar.set_postfix(ok=counts["ok"], failed=counts["failed"], refresh=False)
        if on_record is not None:
            on_record(rec)

    try:
        if workers <= 0:
            for base, payload in tasks:
                store(base, _compute(payload))
        else:
            with one_thread_environment():
                _run_pool(tasks, workers, store)
    finally:
        bar.close()
    return counts


def _worker_init(parent: int) -> None:
    """Worker start-up: exit as soon as the parent build dies (killed)."""
    import threading

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(2.0)

    threading.Thread(target=watch, daemon=True).start()


def _run_pool(tasks, workers: int, store) -> None:
    """Keep ``2 * workers`` tasks in flight; a dead worker fails its tasks and the pool restarts.

    Call it inside :func:`elf_workflows.parallel.one_thread_environment`: GPAW's BLAS reads the
    thread variables when a spawned worker imports numpy, before :func:`_worker_init` runs.
    """
    queue = list(reversed(tasks))
    while queue:
        pool = spawn_pool(workers, _worker_init, (os.getpid(),))
        running: dict[Future, tuple[dict, dict]] = {}
        broken = False
        try:
            while queue or running:
                while queue and len(running) < 2 * workers and not broken:
                    base, payload = queue.pop()
                    running[pool.submit(_compute, payload)] = (base, payload)
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    base, payload = running.pop(fut)
                    try:
                        out = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        out = {"id": payload["id"], "ok": False, "seconds": 0.0,
                               "reason": "GPAW worker process died (out of memory or killed)"}
                    store(base, out)
                if broken and not running:
                    break
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, file=sys.stderr, unit="cell", dynamic_ncols=True,
                desc="GPAW ELF")


def settings_from_options(preset: str = "default", **overrides: Any):
    """GpawSettings from a preset (``default``, ``training``, ``loose``) and non-``None`` overrides."""
    from elf_workflows.reference.gpaw import PRESETS

    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    values = asdict(PRESETS[preset]) | {k: v for k, v in overrides.items() if v is not None}
    from elf_workflows.reference.gpaw import GpawSettings

    return GpawSettings(**values)
