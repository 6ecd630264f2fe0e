"""The reference dataset format: ``records.jsonl`` + compressed ``shards/shard-NNNN.npz``.

A dataset is a directory::

    DATASET/
      records.jsonl          one JSON object per line: the metadata of one cell
      settings.json          per engine, the settings its records share (the first record's), so a
                             line keeps only the keys that differ (``settings_shared``: true)
      shards/shard-0000.npz  arrays "{id}.elf" (float16 ELF) and "{id}.density" (float32, e/Å³)
      shards/shard-0001.npz  ...

Record keys: ``id`` (stable hash of structure + engine + settings, see :func:`record_id`),
``status`` (``ok`` | ``failed``), ``reason`` (failures), ``formula``, ``elements`` (sorted),
``structure`` (pymatgen dict, compact: :func:`compact_structure_dict`), ``shape`` ([nx, ny, nz]), ``shard`` (file name under ``shards/``),
``engine`` (``gpaw`` | ``vasp``), ``settings`` (dict), ``energy_ev``, ``seconds``, ``split``
(``train`` | ``val`` | ``test``), ``source`` (free text), plus optional extras (``sad``,
``convergence``, ``electrons``, ``created``...).

Grids follow VASP: ``elf[i, j, k]`` sits at fractional ``(i/nx, j/ny, k/nz)``. The density is the
self-consistent *pseudo valence* density in e/Å³ on the same grid.

Durability (resumable builds): a record line is appended to ``records.jsonl`` only after its arrays
are safely in a shard, and shards are replaced atomically (write to a temporary file, then
``os.replace``). A kill at any moment therefore leaves every listed ``ok`` record loadable; a rerun
skips the ids already listed (:meth:`DatasetWriter.done_ids`). When an id appears on several lines
(a failed cell retried later), the last line wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from elf_workflows.errors import InputError

RECORDS = "records.jsonl"
#: per engine, the settings shared by the dataset's records (written once, not on every line)
SHARED_SETTINGS = "settings.json"
SHARDS = "shards"
SPLITS = ("train", "val", "test")
_SHARD_RE = re.compile(r"shard-(\d{4,})\.npz$")


def structure_key(structure: Structure, decimals: int = 5) -> dict:
    """A canonical, rounded description of a structure for hashing (lattice Å, species, fractional coords)."""
    frac = np.mod(np.round(structure.frac_coords, decimals), 1.0)
    frac = np.round(frac, decimals) % 1.0
    return {
        "lattice": np.round(structure.lattice.matrix, decimals).tolist(),
        "species": [site.species_string for site in structure],
        "frac_coords": frac.tolist(),
    }


def compact_structure_dict(structure: Structure) -> dict:
    """``structure.as_dict()`` without what ``Structure.from_dict`` re-derives: Cartesian site
    coordinates, lattice parameters and volume, default labels, empty properties, zero charge, full
    periodicity. Loads back to an equal structure at half the size of a record line."""
    d = structure.as_dict()
    lattice = {"matrix": d["lattice"]["matrix"]}
    if not all(d["lattice"].get("pbc", (True, True, True))):
        lattice["pbc"] = d["lattice"]["pbc"]
    out = {"@module": d["@module"], "@class": d["@class"], "lattice": lattice, "sites": []}
    for site, sd in zip(structure, d["sites"]):
        compact = {"species": sd["species"], "abc": sd["abc"]}
        if sd.get("properties"):
            compact["properties"] = sd["properties"]
        if sd.get("label") not in (None, site.species_string):
            compact["label"] = sd["label"]
        out["sites"].append(compact)
    if d.get("charge"):
        out["charge"] = d["charge"]
    if d.get("properties"):
        out["properties"] = d["properties"]
    return out


def record_id(structure: Structure, engine: str, settings: dict | None = None) -> str:
    """Stable 16-hex-digit id: SHA-1 of the rounded structure, the engine and its settings."""
    payload = {"structure": structure_key(structure), "engine": engine, "settings": settings or {}}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _read_shared_settings(directory: Path) -> dict[str, dict]:
    """``{engine: settings}`` of ``settings.json`` (empty when the dataset has none)."""
    path = directory / SHARED_SETTINGS
    return json.loads(path.read_text()) if path.exists() else {}


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=_json_default) == json.dumps(b, sort_keys=True, default=_json_default)


def compact_settings(record: dict, shared: dict[str, dict]) -> dict:
    """The record as stored on its line: when its ``settings`` hold every key of its engine's shared
    settings, only the keys that differ stay, and ``settings_shared`` marks the line for
    :func:`expand_settings` (the engine's fixed descriptions are then written once per dataset)."""
    base = shared.get(str(record.get("engine")))
    settings = record.get("settings")
    if not base or not isinstance(settings, dict) or not set(base) <= set(settings):
        return record
    own = {k: v for k, v in settings.items() if k not in base or not _same(v, base[k])}
    return {**record, "settings": own, "settings_shared": True}


def expand_settings(record: dict, shared: dict[str, dict]) -> dict:
    """Inverse of :func:`compact_settings`: the full ``settings`` of a stored line."""
    if not record.pop("settings_shared", False):
        return record
    record["settings"] = {**shared[str(record.get("engine"))], **record.get("settings", {})}
    return record


def _read_records(path: Path) -> "OrderedDict[str, dict]":
    """All records of ``records.jsonl``, last line per id wins; a torn last line (kill) is ignored."""
    records: OrderedDict[str, dict] = OrderedDict()
    if not path.exists():
        return records
    shared = _read_shared_settings(path.parent)
    with path.open() as handle:
        for n, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill: that record was not finished
            if not isinstance(rec, dict) or "id" not in rec:
                continue
            records.pop(rec["id"], None)
            records[rec["id"]] = expand_settings(rec, shared)
    return records


class ReferenceDataset:
    """Read a reference dataset lazily: metadata from ``records.jsonl``, arrays from shards on demand.

    Example::

        ds = ReferenceDataset("data/reference")
        for rec in ds.records(split="train"):
            structure, elf, density = ds.load(rec["id"])
    """

    def __init__(self, path: str | Path, max_open_shards: int = 4) -> None:
        self.path = Path(path)
        if not (self.path / RECORDS).exists():
            raise InputError(f"{self.path} is not a reference dataset (no {RECORDS})")
        self._all = _read_records(self.path / RECORDS)
        self._open: OrderedDict[str, Any] = OrderedDict()
        self._max_open = max(1, int(max_open_shards))

    # ----------------------------------------------------------------- metadata
    def all_records(self) -> list[dict]:
        """Every record, ``ok`` and ``failed`` (last line per id)."""
        return list(self._all.values())

    def records(self, split: str | None = None) -> Iterator[dict]:
        """The ``ok`` records, optionally of one split (``train``, ``val`` or ``test``)."""
        if split is not None and split not in SPLITS:
            raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        for rec in self._all.values():
            if rec.get("status") == "ok" and (split is None or rec.get("split") == split):
                yield rec

    def ids(self, split: str | None = None) -> list[str]:
        """Ids of the ``ok`` records (of one split)."""
        return [rec["id"] for rec in self.records(split)]

    def failed(self) -> list[dict]:
        """The ``failed`` records, each with its ``reason``."""
        return [rec for rec in self._all.values() if rec.get("status") == "failed"]

    def __len__(self) -> int:
        return sum(1 for _ in self.records())

    def __contains__(self, record_id: str) -> bool:
        rec = self._all.get(record_id)
        return rec is not None and rec.get("status") == "ok"

    def record(self, record_id: str) -> dict:
        """The metadata of one record."""
        try:
            return self._all[record_id]
        except KeyError as exc:
            raise InputError(f"no record {record_id!r} in {self.path}") from exc

    # ------------------------------------------------------------------ arrays
    def _shard(self, name: str):
        if name in self._open:
            self._open.move_to_end(name)
            return self._open[name]
        handle = np.load(self.path / SHARDS / name)
        self._open[name] = handle
        while len(self._open) > self._max_open:
            _, old = self._open.popitem(last=False)
            old.close()
        return handle

    def load(self, record_id: str) -> tuple[Structure, np.ndarray, np.ndarray]:
        """``(structure, elf, density)``: ELF and density (e/Å³) as float32 arrays of the record's ``shape``."""
        rec = self.record(record_id)
        if rec.get("status") != "ok":
            raise InputError(f"record {record_id} has status {rec.get('status')!r}: {rec.get('reason', '')}")
        shard = self._shard(rec["shard"])
        if f"{record_id}.elf" not in shard.files:  # the shard grew since it was opened (a build is running)
            self._open.pop(rec["shard"]).close()
            shard = self._shard(rec["shard"])
        elf = np.asarray(shard[f"{record_id}.elf"], dtype=np.float32)
        density = np.asarray(shard[f"{record_id}.density"], dtype=np.float32)
        return Structure.from_dict(rec["structure"]), elf, density

    def load_structure(self, record_id: str) -> Structure:
        """The structure of one record (no array is read)."""
        return Structure.from_dict(self.record(record_id)["structure"])

    def close(self) -> None:
        """Close the open shard files."""
        for handle in self._open.values():
            handle.close()
        self._open.clear()

    def __enter__(self) -> "ReferenceDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def summary(self) -> dict:
        """Counts per status, split and element, grid sizes, timings and disk size (for ``dataset info``)."""
        ok = list(self.records())
        failed = self.failed()
        elements: dict[str, int] = {}
        for rec in ok:
            for el in rec.get("elements", []):
                elements[el] = elements.get(el, 0) + 1
        seconds = np.array([rec.get("seconds") or 0.0 for rec in ok], float)
        natoms = np.array([len(rec["structure"]["sites"]) for rec in ok], int)
        voxels = np.array([int(np.prod(rec["shape"])) for rec in ok], int)
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        reasons: dict[str, int] = {}
        for rec in failed:
            key = str(rec.get("reason", ""))[:120]
            reasons[key] = reasons.get(key, 0) + 1
        return {
            "path": str(self.path),
            "ok": len(ok),
            "failed": len(failed),
            "splits": {s: sum(1 for r in ok if r.get("split") == s) for s in SPLITS},
            "engines": sorted({r.get("engine", "?") for r in ok}),
            "elements": dict(sorted(elements.items())),
            "n_elements": len(elements),
            "atoms_per_cell": {str(n): int((natoms == n).sum()) for n in sorted(set(natoms.tolist()))},
            "voxels": {"min": int(voxels.min()), "median": int(np.median(voxels)), "max": int(voxels.max())}
            if len(ok) else {},
            "seconds": {"total": float(seconds.sum()), "median": float(np.median(seconds)),
                        "max": float(seconds.max())} if len(ok) else {},
            "failure_reasons": reasons,
            "shards": len(list((self.path / SHARDS).glob("shard-*.npz"))) if (self.path / SHARDS).exists() else 0,
            "bytes": int(size),
        }


class DatasetWriter:
    """Append records to a dataset directory (created if needed); safe to kill and reopen.

    Arrays go into the open shard, which is rewritten atomically on every :meth:`add` until it holds
    ``records_per_shard`` records; then a new shard starts. One writer per dataset at a time (the
    builder's workers compute, the main process writes).
    """

    def __init__(self, path: str | Path, records_per_shard: int = 64) -> None:
        self.path = Path(path)
        self.shard_dir = self.path / SHARDS
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.records_file = self.path / RECORDS
        self.records_per_shard = int(records_per_shard)
        self._records = _read_records(self.records_file)
        self._shared = _read_shared_settings(self.path)
        self._end_torn_line()
        self._current: str | None = None
        self._arrays: dict[str, np.ndarray] = {}
        self._open_last_shard()

    # -------------------------------------------------------------- bookkeeping
    def _shard_names(self) -> list[str]:
        return sorted(p.name for p in self.shard_dir.glob("shard-*.npz") if _SHARD_RE.search(p.name))

    def _open_last_shard(self) -> None:
        names = self._shard_names()
        if names:
            last = names[-1]
            listed = {r["id"] for r in self._records.values() if r.get("shard") == last and r.get("status") == "ok"}
            try:
                with np.load(self.shard_dir / last) as data:
                    # keep only arrays whose record line was written (others are leftovers of a kill)
                    arrays = {k: np.array(data[k]) for k in data.files if k.split(".")[0] in listed}
            except (OSError, ValueError, zipfile.BadZipFile):
                arrays = None
            if arrays is not None and len(listed) < self.records_per_shard:
                self._current, self._arrays = last, arrays
                return
            number = int(_SHARD_RE.search(last).group(1)) + 1
        else:
            number = 0
        self._current, self._arrays = f"shard-{number:04d}.npz", {}

    def _end_torn_line(self) -> None:
        """After a kill mid-line, end that line so the next record starts on its own line."""
        if self.records_file.exists() and self.records_file.stat().st_size > 0:
            with self.records_file.open("rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")

    def done_ids(self, include_failed: bool = True) -> set[str]:
        """Ids already recorded (``ok``, and ``failed`` unless ``include_failed`` is False)."""
        return {i for i, r in self._records.items() if r.get("status") == "ok" or include_failed}

    def __contains__(self, record_id: str) -> bool:
        return record_id in self._records

    def _append_line(self, record: dict) -> None:
        engine, settings = str(record.get("engine")), record.get("settings")
        if engine not in self._shared and isinstance(settings, dict) and settings:
            # the first record of an engine fixes its shared settings; written before any line uses them
            self._shared[engine] = settings
            tmp = self.path / (SHARED_SETTINGS + ".tmp")
            tmp.write_text(json.dumps(self._shared, indent=1, sort_keys=True, default=_json_default))
            os.replace(tmp, self.path / SHARED_SETTINGS)
        line = json.dumps(compact_settings(record, self._shared), default=_json_default, separators=(",", ":"))
        with self.records_file.open("a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._records.pop(record["id"], None)
        self._records[record["id"]] = record

    # ------------------------------------------------------------------- writes
    def add(self, record: dict, elf: np.ndarray, density: np.ndarray) -> dict:
        """Store one ``ok`` record with its ELF (kept as float16) and density (float32, e/Å³).

        ``record`` needs at least ``id``, ``structure`` (a Structure or its dict), ``engine``; the
        format keys ``status``, ``shape``, ``shard``, ``formula``, ``elements`` are filled in here.
        """
        elf = np.asarray(elf)
        density = np.asarray(density)
        if elf.ndim != 3 or elf.shape != density.shape:
            raise InputError(f"ELF {elf.shape} and density {density.shape} must be 3D grids of one shape")
        if not np.all(np.isfinite(elf)) or not np.all(np.isfinite(density)):
            raise InputError(f"record {record.get('id')}: non-finite values in the grids")
        rec = self._complete(record, status="ok")
        rec["shape"] = list(elf.shape)
        rec["shard"] = self._current
        rid = rec["id"]
        self._arrays[f"{rid}.elf"] = elf.astype(np.float16)
        self._arrays[f"{rid}.density"] = density.astype(np.float32)
        self._write_shard()
        self._append_line(rec)
        n_in_shard = sum(1 for k in self._arrays if k.endswith(".elf"))
        if n_in_shard >= self.records_per_shard:
            number = int(_SHARD_RE.search(self._current).group(1)) + 1
            self._current, self._arrays = f"shard-{number:04d}.npz", {}
        return rec

    def add_failed(self, record: dict, reason: str) -> dict:
        """Store a ``failed`` record with its one-line ``reason`` (no arrays)."""
        rec = self._complete(record, status="failed")
        rec["reason"] = str(reason).strip().splitlines()[0] if str(reason).strip() else "unknown failure"
        rec.pop("shard", None)
        self._append_line(rec)
        return rec

    def _complete(self, record: dict, status: str) -> dict:
        rec = dict(record)
        if "id" not in rec:
            raise InputError("a record needs an 'id'")
        structure = rec.get("structure")
        if structure is not None and not isinstance(structure, Structure):
            structure = Structure.from_dict(structure)
        if structure is not None:
            rec["structure"] = compact_structure_dict(structure)
        rec["status"] = status
        if structure is not None:
            rec.setdefault("formula", structure.composition.reduced_formula)
            rec.setdefault("elements", sorted(el.symbol for el in structure.composition.elements))
        rec.setdefault("split", "train")
        if rec["split"] not in SPLITS:
            raise InputError(f"unknown split {rec['split']!r}; use one of {', '.join(SPLITS)}")
        rec.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return rec

    def _write_shard(self) -> None:
        target = self.shard_dir / self._current
        tmp = target.with_name(target.name + ".tmp.npz")
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **self._arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)

    def close(self) -> None:
        """Nothing is buffered; kept for symmetry with readers and ``with`` blocks."""

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")
