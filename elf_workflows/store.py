"""Template stores through maggma: embedded MontyStore (default, no server) or MongoDB.

``TemplateStore.from_spec(S)``:

* a directory (default ``$ELF_WORKFLOWS_STORE``, else ``./elf_store``) → two ``MontyStore``
  collections in it: ``templates`` (documents) and ``template_grids`` (grids as compressed blobs,
  chunked below BSON's 16 MB);
* ``mongodb://`` / ``mongodb+srv://`` URI → ``MongoURIStore`` (``templates``) and ``GridFSURIStore``
  (``template_grids``). The server is pinged with a short ``serverSelectionTimeoutMS`` so an
  unreachable one fails at once with one :class:`StoreError` line, before anything is written.

Documents are upserted keyed by ``(template_id, engine)``, so reruns never duplicate. Grids are written
before the document that refers to them: a document in the store always has its grids. Indexes on
``score``, ``pressure_gpa``, ``elements`` (and the key) are made on MongoDB (montydb has none).
"""

from __future__ import annotations

import base64
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from elf_workflows.errors import StoreError

if TYPE_CHECKING:
    from maggma.core import Store

    from elf_workflows.documents import TemplateDoc

DEFAULT_STORE = "./elf_store"
KEY = ["template_id", "engine"]
DOCS_COLLECTION = "templates"
GRIDS_COLLECTION = "template_grids"
#: the ping to a MongoDB server gives up after this (ms)
SERVER_TIMEOUT_MS = 2500
#: largest base64 text per blob document (BSON documents stop at 16 MB)
_CHUNK = 8_000_000


def default_store_spec() -> str:
    """``$ELF_WORKFLOWS_STORE`` if set, else ``./elf_store``."""
    return os.environ.get("ELF_WORKFLOWS_STORE") or DEFAULT_STORE


def is_mongo_uri(spec: str) -> bool:
    return str(spec).startswith(("mongodb://", "mongodb+srv://"))


def encode_grid(array: np.ndarray, dtype: str = "float32") -> str:
    """Grid → base64 of zlib-compressed C-order bytes."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(array, dtype=dtype).tobytes(), 6)).decode("ascii")


def decode_grid(text: str, shape, dtype: str = "float32") -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype).reshape(tuple(shape)).copy()


class TemplateStore:
    """Documents (:class:`~elf_workflows.documents.TemplateDoc`) and their grids in two maggma stores.

    Args:
        docs: maggma store of the documents.
        grids: maggma store of the grids (a plain collection of chunked blobs, or a GridFS store).
        description: how the store was given (for messages).
    """

    def __init__(self, docs: Store, grids: Store, description: str = "store"):
        self.docs = docs
        self.grids = grids
        self.description = description
        self._gridfs = type(grids).__name__.startswith("GridFS")
        self._connected = False

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def from_spec(cls, spec: str | os.PathLike | None = None) -> "TemplateStore":
        """A store from a directory or a MongoDB URI (default :func:`default_store_spec`); not yet connected."""
        spec = str(spec) if spec is not None else default_store_spec()
        if not spec.strip():
            raise StoreError("empty store given; use a directory or a mongodb:// URI")
        if is_mongo_uri(spec):
            from maggma.stores import MongoURIStore
            from maggma.stores.gridfs import GridFSURIStore

            kwargs = {"mongoclient_kwargs": {"serverSelectionTimeoutMS": SERVER_TIMEOUT_MS,
                                             "connectTimeoutMS": SERVER_TIMEOUT_MS}}
            database = _uri_database(spec)
            docs = MongoURIStore(spec, DOCS_COLLECTION, database=database, key="template_id", **kwargs)
            grids = GridFSURIStore(spec, GRIDS_COLLECTION, database=database, key="grid_id", **kwargs)
            return cls(docs, grids, description=_redact(spec))
        if "://" in spec:
            raise StoreError(f"unsupported store {spec!r}: give a directory or a mongodb:// / mongodb+srv:// URI")
        path = Path(spec).expanduser()
        if path.exists() and not path.is_dir():
            raise StoreError(f"store {path} exists and is not a directory")
        from maggma.stores import MontyStore

        return cls(MontyStore(DOCS_COLLECTION, database_path=str(path), key="template_id"),
                   MontyStore(GRIDS_COLLECTION, database_path=str(path), key="grid_id"),
                   description=str(path))

    def connect(self, create: bool = True) -> "TemplateStore":
        """Connect both stores (creating the directory of an embedded store when ``create``)."""
        if self._connected:
            return self
        if not self._is_mongo() and hasattr(self.docs, "database_path"):
            path = Path(self.docs.database_path)
            if not path.exists():
                if not create:
                    raise StoreError(f"no store at {path}")
                try:
                    path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create store directory {path}: {exc.strerror or exc}") from exc
        try:
            self.docs.connect()
            self.grids.connect()
            if self._is_mongo():
                self.docs._collection.database.client.admin.command("ping")
                self._ensure_indexes()
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - pymongo/montydb raise many kinds
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if len(reason) > 160:
                reason = reason[:160] + "..."
            raise StoreError(f"cannot reach store {self.description}: {reason}") from exc
        self._connected = True
        return self

    def close(self) -> None:
        for store in (self.docs, self.grids):
            try:
                store.close()
            except Exception:  # noqa: BLE001
                pass
        self._connected = False

    def __enter__(self) -> "TemplateStore":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    def _is_mongo(self) -> bool:
        return type(self.docs).__name__ in {"MongoURIStore", "MongoStore"}

    def _ensure_indexes(self) -> None:
        for field in ("score", "pressure_gpa", "elements", "template_id", "engine"):
            try:
                self.docs.ensure_index(field)
            except Exception:  # noqa: BLE001 - montydb has no index support
                pass

    # ------------------------------------------------------------------------------------------ writes
    def save(self, doc: TemplateDoc, grids: dict[str, tuple[np.ndarray, str]] | None = None) -> None:
        """Upsert ``doc`` keyed by (template_id, engine); grids (name → (array, units)) are written first."""
        from elf_workflows.documents import GridRef

        self.connect()
        try:
            for name, (array, units) in (grids or {}).items():
                grid_id = f"{doc.template_id}:{doc.engine}:{name}"
                self._put_grid(grid_id, np.asarray(array), doc.template_id, doc.engine, name)
                doc.grids[name] = GridRef(grid_id=grid_id, shape=list(np.shape(array)), dtype="float32", units=units)
            self.docs.update([doc.model_dump(mode="json")], key=KEY)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"store {self.description} refused the write of {doc.template_id}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc

    def _put_grid(self, grid_id: str, array: np.ndarray, template_id: str, engine: str, name: str) -> None:
        text = encode_grid(array)
        meta = {"grid_id": grid_id, "template_id": template_id, "engine": engine, "name": name,
                "shape": list(array.shape), "dtype": "float32", "encoding": "zlib+base64"}
        if self._gridfs:
            self.grids.update([{**meta, "data": text}], key="grid_id")
            return
        chunks = [text[i:i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
        self.grids.update([{**meta, "chunk": c, "n_chunks": len(chunks), "data": part}
                           for c, part in enumerate(chunks)], key=["grid_id", "chunk"])
        self.grids.remove_docs({"grid_id": grid_id, "chunk": {"$gte": len(chunks)}})

    # ------------------------------------------------------------------------------------------- reads
    def has(self, template_id: str, engine: str) -> bool:
        self.connect()
        return self.docs.count({"template_id": template_id, "engine": engine}) > 0

    def stored_keys(self, engine: str | None = None) -> set[tuple[str, str]]:
        """(template_id, engine) of every stored document (of ``engine`` when given)."""
        self.connect()
        criteria = {"engine": engine} if engine else {}
        return {(d["template_id"], d["engine"]) for d in self.docs.query(criteria, properties=KEY)}

    def stored_model_versions(self, engine: str) -> dict[str, str | None]:
        """template_id → ``elf_source.model_version`` of every stored document of ``engine``."""
        self.connect()
        docs = self.docs.query({"engine": engine}, properties=["template_id", "elf_source.model_version"])
        return {d["template_id"]: (d.get("elf_source") or {}).get("model_version") for d in docs}

    def count(self, criteria: dict | None = None) -> int:
        self.connect()
        return self.docs.count(criteria or {})

    def get(self, template_id: str, engine: str | None = None) -> TemplateDoc:
        """The document of ``template_id`` (the best-scored engine when ``engine`` is None)."""
        from elf_workflows.documents import TemplateDoc

        self.connect()
        criteria: dict[str, Any] = {"template_id": template_id}
        if engine:
            criteria["engine"] = engine
        docs = list(self.docs.query(criteria, sort={"score": -1}, limit=1))
        if not docs:
            raise StoreError(f"no template {template_id!r}{f' with engine {engine}' if engine else ''} in {self.description}")
        doc = docs[0]
        doc.pop("_id", None)
        return TemplateDoc.model_validate(doc)

    def load_grid(self, doc: TemplateDoc, name: str = "elf") -> np.ndarray:
        """Load one grid (``elf`` or ``density``) of ``doc`` from the blob store."""
        self.connect()
        ref = doc.grids.get(name)
        if ref is None:
            raise StoreError(f"template {doc.template_id} has no stored {name} grid")
        parts = sorted(self.grids.query({"grid_id": ref.grid_id}), key=lambda d: d.get("chunk", 0))
        if not parts:
            raise StoreError(f"grid {ref.grid_id} is missing from {self.description}")
        text = "".join(p["data"] if isinstance(p["data"], str) else p["data"].decode() for p in parts)
        return decode_grid(text, ref.shape, ref.dtype)

    def rank(self, *, top: int | None = None, elements: Iterable[str] | None = None,
             min_pressure: float | None = None, max_pressure: float | None = None,
             engine: str | None = None, only_elements: bool = False) -> list[dict]:
        """Templates by descending score (ties: higher interstitial ELF maximum first), filtered.

        ``elements``: templates containing all of them (``only_elements``: made of no others).
        """
        self.connect()
        criteria = rank_criteria(elements=elements, min_pressure=min_pressure, max_pressure=max_pressure,
                                 engine=engine, only_elements=only_elements)
        props = ["template_id", "engine", "formula", "prototype", "pressure_gpa", "score", "elements",
                 "spacegroup", "volume_per_atom", "metrics"]
        out = []
        for d in self.docs.query(criteria, properties=props):
            metrics = d.get("metrics") or {}
            out.append({
                "template_id": d["template_id"], "formula": d.get("formula"), "prototype": d.get("prototype"),
                "pressure_gpa": d.get("pressure_gpa"), "score": d.get("score"), "engine": d.get("engine"),
                "spacegroup": d.get("spacegroup"), "volume_per_atom": d.get("volume_per_atom"),
                "max_interstitial_elf": metrics.get("max_interstitial_elf"),
                "interstitial_electrons": metrics.get("interstitial_electrons"),
            })
        # sorted here, not by the server: montydb mis-orders multi-key sorts on missing nested fields
        out.sort(key=lambda r: (-(r["score"] if r["score"] is not None else -np.inf),
                                -(r["max_interstitial_elf"] if r["max_interstitial_elf"] is not None else -np.inf),
                                str(r["template_id"]), str(r["engine"])))
        return out[: int(top)] if top else out


def rank_criteria(elements=None, min_pressure=None, max_pressure=None, engine=None, only_elements=False) -> dict:
    """The MongoDB filter of a ``rank`` query (also shown in plain pymongo in docs/templates.md)."""
    criteria: dict[str, Any] = {}
    if elements:
        elements = sorted({str(e).strip() for e in elements if str(e).strip()})
        criteria["elements"] = {"$all": elements}
        if only_elements:
            criteria["nelements"] = len(elements)
    pressure: dict[str, float] = {}
    if min_pressure is not None:
        pressure["$gte"] = float(min_pressure)
    if max_pressure is not None:
        pressure["$lte"] = float(max_pressure)
    if pressure:
        criteria["pressure_gpa"] = pressure
    if engine:
        criteria["engine"] = engine
    return criteria


def _uri_database(uri: str) -> str:
    """Database named in the URI path, else ``elf_workflows``."""
    rest = uri.split("://", 1)[1]
    path = rest.split("/", 1)[1] if "/" in rest else ""
    name = path.split("?", 1)[0]
    return name or "elf_workflows"


def _redact(uri: str) -> str:
    """The URI without its password."""
    scheme, rest = uri.split("://", 1)
    if "@" in rest:
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return uri


# ------------------------------------------------------------------------------- helpers for the jobs
def open_store(spec: str | os.PathLike | None = None) -> TemplateStore:
    """A connected :class:`TemplateStore` (use as a context manager to close it)."""
    return TemplateStore.from_spec(spec).connect()


def upsert_templates(store: TemplateStore, documents: Iterable[dict | TemplateDoc]) -> int:
    """Upsert template documents (``TemplateDoc`` or plain dicts as the jobflow jobs make them); count."""
    from elf_workflows.documents import TemplateDoc

    n = 0
    for d in documents:
        doc = d if isinstance(d, TemplateDoc) else TemplateDoc.from_dict(d)
        store.save(doc)
        n += 1
    return n
