"""jobflow jobs and atomate2-style Makers for the single steps of a template screening.

Every step is a :class:`jobflow.Maker` dataclass whose ``make`` is a ``@job``: the settings live in
the Maker (serialisable, so jobflow-remote can ship it to a cluster), the inputs are job arguments.

=====================  =====================================================================
Maker                  output of its job
=====================  =====================================================================
``SublatticesMaker``   list of sublattice documents (``elf_workflows.sublattices``)
``ElfMaker``           ``{"structure", "shape", "engine", "info", "elf": GridData,
                       "density": GridData | None}`` (density: SCF valence density, e/Å³)
``SurrogateElfMaker``  ``ElfMaker`` with ``engine="surrogate"`` (the shipped U-Net)
``GpawElfMaker``       ``ElfMaker`` with ``engine="gpaw"`` (DFT here, ``GpawSettings``)
``SadMaker``           ``{"shape", "kind", "electrons", "sad": GridData}`` on the ELF grid (e/Å³)
``ScoreMaker``         the :class:`~elf_workflows.documents.TemplateDoc` (attractors + score, no grids)
``StoreMaker``         the same document, upserted into an elf-workflows store
=====================  =====================================================================

The ELF engines are those of :mod:`elf_workflows.screening` (``elf-workflows screen`` uses the same
functions, so a flow and the command line give the same documents).

Grids travel as :class:`GridData` objects, and every job that makes one routes it to the JobStore's
additional store ``data`` (``@job(data=GridData)``): the main ``docs`` collection stays small and
queryable; ``MontyDecoder().process_decoded(store.get_output(uuid, load=True))`` brings the grids
back as :class:`GridData` objects (``.values``: numpy; ``.to_volumetric(structure)``: pymatgen
``Elfcar``/``Chgcar``). The VASP ELF Maker is atomate2's, in :mod:`elf_workflows.reference.vasp`.
"""

from __future__ import annotations

import base64
import importlib
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from jobflow import Maker, job
from monty.json import MSONable

from elf_workflows.errors import EngineError, InputError

if TYPE_CHECKING:
    from pymatgen.core import Structure

Shape = tuple[int, int, int]

# --------------------------------------------------------------------------------------------------
# grids in the data store
# --------------------------------------------------------------------------------------------------
class GridData(MSONable):
    """A scalar field on the periodic unit-cell grid, stored compactly in a JobStore.

    ``values[i, j, k]`` sits at fractional ``(i/nx, j/ny, k/nz)`` (VASP order). Serialised as
    zlib-compressed float32 bytes in base64 (a 64³ grid: ~1 MB, far below MongoDB's 16 MB document
    limit, where nested lists of doubles would take ~4 MB).

    Args:
        values: the grid (converted to float32).
        kind: what it is: ``"sad"`` (superposed atomic valence density), ``"density"`` (SCF valence
            density), ``"elf"``.
        units: ``"e/Å³"`` for densities, ``""`` for the ELF.
    """

    def __init__(self, values: np.ndarray, kind: str = "elf", units: str = "") -> None:
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 3:
            raise InputError(f"GridData needs a 3D grid, got shape {values.shape}")
        self.values = values
        self.kind = kind
        self.units = units

    @property
    def shape(self) -> Shape:
        """(nx, ny, nz)."""
        return tuple(int(n) for n in self.values.shape)

    def as_dict(self) -> dict[str, Any]:
        blob = zlib.compress(np.ascontiguousarray(self.values, dtype="<f4").tobytes(), level=6)
        return {
            "@module": type(self).__module__,
            "@class": type(self).__name__,
            "kind": self.kind,
            "units": self.units,
            "shape": list(self.shape),
            "dtype": "float32",
            "encoding": "zlib+base64",
            "data": base64.b64encode(blob).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GridData:
        raw = zlib.decompress(base64.b64decode(d["data"]))
        values = np.frombuffer(raw, dtype="<f4").reshape(d["shape"]).copy()
        return cls(values, kind=d.get("kind", "elf"), units=d.get("units", ""))

    def to_volumetric(self, structure: Structure):
        """The grid as a pymatgen ``Elfcar`` (ELF) or ``Chgcar`` (densities, stored as ρ·V like VASP)."""
        from pymatgen.io.vasp.outputs import Chgcar, Elfcar

        data = np.asarray(self.values, float)
        if self.kind == "elf":
            return Elfcar(structure, {"total": data})
        return Chgcar(structure, {"total": data * structure.volume})

    def __repr__(self) -> str:
        return f"GridData(kind={self.kind!r}, shape={self.shape}, units={self.units!r})"


def _structure(obj) -> Structure:
    """A pymatgen Structure from a Structure or its dict (job outputs may carry either)."""
    from pymatgen.core import Structure

    if isinstance(obj, Structure):
        return obj
    if isinstance(obj, dict):
        return Structure.from_dict(obj)
    raise InputError(f"expected a structure, got {type(obj).__name__}")


def _grid(obj) -> np.ndarray | None:
    if obj is None:
        return None
    if isinstance(obj, GridData):
        return obj.values
    if isinstance(obj, dict) and obj.get("@class") == "GridData":
        return GridData.from_dict(obj).values
    return np.asarray(obj, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# sublattices
# --------------------------------------------------------------------------------------------------
@dataclass
class SublatticesMaker(Maker):
    """Metal sublattices of the given prototypes at the given pressures.

    Args:
        name: job name.
        binaries: also build the binary prototypes of each element pair.
    """

    name: str = "sublattices"
    binaries: bool = False

    @job
    def make(self, elements: list[str], prototypes: list[str], pressures: list[float]) -> list[dict]:
        """Documents with ``structure`` (pymatgen dict), ``prototype``, ``pressure_gpa`` (GPa),
        ``volume_per_atom`` (Å³), ``spacegroup``, ``template_id``."""
        from elf_workflows.sublattices import generate_sublattices

        docs = generate_sublattices(list(elements), list(prototypes), [float(p) for p in pressures],
                                    binaries=self.binaries)
        return [_jsonable_sublattice(d) for d in docs]


def _jsonable_sublattice(doc: dict) -> dict:
    doc = dict(doc)
    if not isinstance(doc.get("structure"), dict):
        doc["structure"] = doc["structure"].as_dict()
    return doc


# --------------------------------------------------------------------------------------------------
# ELF engines (the registry of elf_workflows.screening, so `screen` and the flows agree)
# --------------------------------------------------------------------------------------------------
#: surrogate models loaded from files, by path (one load per process)
_MODELS: dict[str, Any] = {}


def gradient_expansion_engine(structure: Structure, spacing: float = 0.15):
    """A cheap, DFT-free ELF engine: the gradient-expansion (Kirzhnits) ELF of the SAD density.

    Qualitative only (it knows no shell structure beyond the SAD's); useful for quick looks, tests
    and dry runs of a flow. Engine signature of :mod:`elf_workflows.screening`:
    ``(elf, density | None, info)``.
    """
    from elf_workflows.grids import grid_for_spacing
    from elf_workflows.sad import sad_density
    from elf_workflows.surrogate.features import gradient_expansion_elf

    shape = grid_for_spacing(structure, spacing)
    rho = sad_density(structure, shape)
    elf = gradient_expansion_elf(rho, structure.lattice)
    return elf, None, {"settings": {"grid": list(shape), "spacing": spacing,
                                    "elf": "gradient expansion of the SAD"}, "model_version": None}


def surrogate_uncertainty_engine(structure: Structure, model: str | None = None):
    """The surrogate ELF plus what the score job needs for an uncertainty of the template's score.

    ``info["elf_sigma"]``: the ELF error to propagate into the score (:func:`elf_workflows.templates.score.score_uncertainty`,
    done by :class:`ScoreMaker`, stored as ``metrics.uncertainty`` in e per metal atom): the surrogate's
    error at void maxima of unseen elements, :data:`~elf_workflows.templates.score.SURROGATE_VOID_SIGMA`,
    plus ``info["symmetry_spread"]``, the RMS difference between the raw prediction and its group
    average. The SAD input is invariant under the space group, so a perfect model's raw output would
    be too; only a U-Net can break that symmetry, so the spread is 0 for the shipped weights (their
    U-Net was dropped, docs/surrogate.md). The ELF equals ``predict_elf(structure)``.
    """
    import torch

    from elf_workflows.surrogate.infer import load_model, predict_native
    from elf_workflows.surrogate.symmetry_pool import pool_cell
    from elf_workflows.symmetry import get_space_group

    if model is None:
        loaded = load_model()  # cached by the surrogate module
    else:
        if model not in _MODELS:
            _MODELS[model] = load_model(model)
        loaded = _MODELS[model]
    with torch.inference_mode():
        raw = predict_native(structure, loaded, pool=False)
    pooled = pool_cell(raw, get_space_group(structure))
    spread = float(np.sqrt(np.mean((np.asarray(raw, float) - pooled) ** 2)))
    elf = np.clip(pooled, 0.0, 1.0).astype(np.float64)
    from elf_workflows.templates.score import SURROGATE_VOID_SIGMA

    return elf, None, {"settings": {"grid": list(elf.shape), **({"model": model} if model else {})},
                       "model_version": str(loaded.version), "symmetry_spread": spread,
                       "elf_sigma": SURROGATE_VOID_SIGMA + spread}


#: short names of engines defined outside :mod:`elf_workflows.screening`'s registry
ENGINE_ALIASES = {"gradient-expansion": "elf_workflows.jobs:gradient_expansion_engine",
                  "surrogate-uncertainty": "elf_workflows.jobs:surrogate_uncertainty_engine"}


def resolve_engine(engine: str, **engine_kwargs) -> Callable:
    """The ELF function ``f(structure) -> (elf, density | None, info)`` of ``engine``.

    ``engine``: a name registered in :mod:`elf_workflows.screening` (``surrogate``, ``gpaw``), an
    alias of :data:`ENGINE_ALIASES` (``gradient-expansion``), or ``"package.module:function"``
    (importable on the worker that runs the job). ``engine_kwargs`` are bound to the function;
    for ``gpaw``, ``settings`` may be a preset name (``default``, ``training``, ``loose``) or a dict of
    :class:`~elf_workflows.reference.gpaw.GpawSettings` fields; for ``surrogate``, ``model`` is a
    model file.
    """
    import functools

    from elf_workflows import screening

    engine = ENGINE_ALIASES.get(engine, engine)
    if engine == "gpaw" and "settings" in engine_kwargs:
        engine_kwargs = dict(engine_kwargs, settings=gpaw_settings(engine_kwargs["settings"]))
    if engine == "surrogate" and engine_kwargs.get("model"):
        return functools.partial(_surrogate_with_model, model=str(engine_kwargs["model"]))
    if engine in screening.engine_names():
        function = screening.get_engine(engine)
    elif ":" in engine:
        module_name, _, attr = engine.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"unknown ELF engine {engine!r}: {exc}") from exc
    else:
        names = screening.engine_names() + sorted(ENGINE_ALIASES)
        raise InputError(f"unknown ELF engine {engine!r}; use one of {', '.join(names)} "
                         "or 'package.module:function'")
    return functools.partial(function, **engine_kwargs) if engine_kwargs else function


def gpaw_settings(settings):
    """GpawSettings from a preset name, a dict of fields, or a GpawSettings (returned as is)."""
    from elf_workflows.reference.gpaw import PRESETS, GpawSettings

    if settings is None or isinstance(settings, GpawSettings):
        return settings
    if isinstance(settings, str):
        try:
            return PRESETS[settings]
        except KeyError:
            raise InputError(f"unknown GPAW preset {settings!r}; use one of {', '.join(PRESETS)}") from None
    if isinstance(settings, dict):
        return GpawSettings(**{k: v for k, v in settings.items() if not k.startswith("@")})
    raise InputError(f"GPAW settings must be a preset name or a dict, got {type(settings).__name__}")


def _surrogate_with_model(structure: Structure, model: str):
    from elf_workflows.surrogate import load_model, predict_elf

    if model not in _MODELS:
        _MODELS[model] = load_model(model)
    loaded = _MODELS[model]
    elf = np.asarray(predict_elf(structure, model=loaded), float)
    return elf, None, {"settings": {"grid": list(elf.shape), "model": model},
                       "model_version": str(getattr(loaded, "version", "unknown"))}


@dataclass
class ElfMaker(Maker):
    """ELF of a structure with the engine named in ``engine`` (grids to the ``data`` store).

    The behaviour lives here once; :class:`SurrogateElfMaker` and :class:`GpawElfMaker` only change
    the defaults. The engine chooses the grid (the surrogate's, GPAW's native grid...).

    Args:
        name: job name.
        engine: ``surrogate``, ``gpaw``, ``gradient-expansion`` or ``package.module:function``
            (see :func:`resolve_engine`).
        engine_kwargs: keyword arguments of the engine (JSON-friendly: jobflow-remote ships them).
    """

    name: str = "elf"
    engine: str = "surrogate"
    engine_kwargs: dict = field(default_factory=dict)

    def compute(self, structure: Structure) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Run the engine (no jobflow): ``(elf, scf_density | None, info)``."""
        elf, density, info = resolve_engine(self.engine, **self.engine_kwargs)(structure)
        elf = np.asarray(elf, dtype=float)
        if elf.ndim != 3:
            raise EngineError(f"ELF engine {self.engine!r} returned an array of shape {elf.shape}, not a 3D grid")
        if not np.all(np.isfinite(elf)):
            raise EngineError(f"ELF engine {self.engine!r} returned non-finite values")
        if density is not None and np.shape(density) != elf.shape:
            from elf_workflows.grids import fourier_interpolate

            density = fourier_interpolate(np.asarray(density, float), elf.shape)
        return elf, density, dict(info or {})

    @job(data=GridData)
    def make(self, structure: Structure | dict, metadata: dict | None = None) -> dict:
        """ELF (and the SCF density that came with it, if any) of ``structure``.

        ``metadata`` (the sublattice document minus its structure: ``template_id``, ``prototype``,
        ``pressure_gpa``, ``eos_source``...) is passed through to the output.
        """
        structure = _structure(structure)
        start = time.perf_counter()
        elf, density, info = self.compute(structure)
        return {
            "structure": structure,
            "shape": list(elf.shape),
            "engine": self.engine,
            "metadata": dict(metadata or {}),
            "info": info,
            "seconds": round(time.perf_counter() - start, 4),
            "elf_range": [float(elf.min()), float(elf.max())],
            "elf": GridData(elf, kind="elf"),
            "density": None if density is None else GridData(density, kind="density", units="e/Å³"),
        }


@dataclass
class SurrogateElfMaker(ElfMaker):
    """ELF from the shipped 3D U-Net surrogate (``engine_kwargs={"model": PATH}`` for another)."""

    name: str = "surrogate elf"
    engine: str = "surrogate"


@dataclass
class GpawElfMaker(ElfMaker):
    """Self-consistent GPAW ELF and pseudo valence density (``engine_kwargs={"settings": "loose"}``
    or a dict of :class:`~elf_workflows.reference.gpaw.GpawSettings` fields)."""

    name: str = "gpaw elf"
    engine: str = "gpaw"


# --------------------------------------------------------------------------------------------------
# SAD
# --------------------------------------------------------------------------------------------------
@dataclass
class SadMaker(Maker):
    """Superposition of atomic densities (e/Å³) on the grid of an ELF job.

    This is the density whose ELF basins are integrated when the ELF engine brings no SCF density
    (the surrogate). Stored in the ``data`` store with the ELF.

    Args:
        name: job name.
        spacing: largest voxel edge (Å) when :meth:`make` gets no grid.
        kind: ``"partition"`` (default): free-atom pseudo valence + PAW compensation charges, the
            density basin electrons are counted in; ``"valence"``: the smooth valence SAD the
            surrogate reads; ``"pseudo"``: the free pseudo atoms of GPAW's ELF, smooth core included
            (:mod:`elf_workflows.sad`).
    """

    name: str = "sad"
    spacing: float = 0.1
    kind: str = "partition"

    @job(data=GridData)
    def make(self, structure: Structure | dict, shape: list[int] | None = None) -> dict:
        """SAD of ``structure`` on ``shape`` (e.g. ``elf_job.output["shape"]``)."""
        from elf_workflows.grids import check_grid, grid_for_spacing
        from elf_workflows.sad import DENSITY_KINDS, integrate, superpose

        if self.kind not in DENSITY_KINDS:
            raise InputError(f"SadMaker(kind={self.kind!r}): use one of {', '.join(DENSITY_KINDS)}")
        structure = _structure(structure)
        shape = check_grid(tuple(shape) if shape is not None else grid_for_spacing(structure, self.spacing))
        start = time.perf_counter()
        rho = superpose(structure, shape, self.kind)
        return {
            "shape": list(shape),
            "kind": self.kind,
            "electrons": integrate(rho, structure),
            "seconds": round(time.perf_counter() - start, 4),
            "sad": GridData(rho, kind="sad", units="e/Å³"),
        }


# --------------------------------------------------------------------------------------------------
# score and store
# --------------------------------------------------------------------------------------------------
@dataclass
class ScoreMaker(Maker):
    """Interstitial ELF attractors, their basins and the template score
    (:func:`elf_workflows.templates.score_template`).

    The basins partition the SCF density that came with the ELF, else the SAD. The output is the
    :class:`~elf_workflows.documents.TemplateDoc` as a JSON dict (no grids), the same document
    ``elf-workflows screen`` stores.

    Args:
        name: job name.
        symprec: spglib tolerance (Å).
    """

    name: str = "score"
    symprec: float = 1e-3

    @job
    def make(self, elf_output: dict, sad_output: dict | None = None) -> dict:
        """Template document of the output of an :class:`ElfMaker` job (and its :class:`SadMaker` job)."""
        from elf_workflows.documents import TemplateDoc
        from elf_workflows.templates import score_template

        structure = _structure(elf_output["structure"])
        elf = _grid(elf_output["elf"])
        density = _grid(elf_output.get("density"))
        source = "scf"
        if density is None and sad_output is not None:
            density, source = _grid(sad_output["sad"]), "sad"
        start = time.perf_counter()
        result = score_template(structure, elf, density, density_source=source if density is not None else None,
                                symprec=self.symprec)
        meta = elf_output.get("metadata") or {}
        info = elf_output.get("info") or {}
        doc = TemplateDoc.from_result(
            structure, result, elf_output.get("engine", "unknown"), template_id=meta.get("template_id"),
            prototype=meta.get("prototype"), pressure_gpa=meta.get("pressure_gpa"),
            eos_source=meta.get("eos_source"), settings=info.get("settings"),
            model_version=info.get("model_version"),
            timings={"elf": elf_output.get("seconds"), "score": round(time.perf_counter() - start, 4)},
            grid_shape=elf.shape)
        out = doc.model_dump(mode="json")
        if info.get("elf_sigma") is not None:  # the engine's ELF error, propagated into the score
            from elf_workflows.templates.score import score_uncertainty

            out["metrics"]["uncertainty"] = round(score_uncertainty(structure, result.attractors,
                                                                    float(info["elf_sigma"])), 6)
        elif info.get("uncertainty") is not None:  # an engine's own uncertainty, as it gives it
            out["metrics"]["uncertainty"] = float(info["uncertainty"])
        return out


@dataclass
class StoreMaker(Maker):
    """Upsert template documents into an elf-workflows store (:class:`elf_workflows.store.TemplateStore`).

    Args:
        name: job name.
        store: a directory (embedded MontyStore) or a ``mongodb://`` URI; None keeps the documents
            in the JobStore only (the job then passes its input through).
        save_grids: also store the ELF (and SCF density) beside the document, as ``screen`` does.
    """

    name: str = "store"
    store: str | None = None
    save_grids: bool = True

    @job
    def make(self, document: dict, elf_output: dict | None = None) -> dict:
        """The document as stored, keyed by ``(template_id, engine)``: reruns never duplicate."""
        if self.store is None:
            return dict(document)
        from elf_workflows.documents import TemplateDoc
        from elf_workflows.store import open_store

        doc = TemplateDoc.from_dict(document)
        grids = {}
        if self.save_grids and elf_output is not None:
            grids["elf"] = (_grid(elf_output["elf"]), "")
            if elf_output.get("density") is not None:
                grids["density"] = (_grid(elf_output["density"]), "e/Å³")
        with open_store(self.store) as store:
            store.save(doc, grids)
        return doc.model_dump(mode="json")


# --------------------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------------------
RANK_KEYS = ("template_id", "formula", "prototype", "pressure_gpa", "score", "engine")


@job
def rank_templates(documents: list[dict], top: int | None = None) -> list[dict]:
    """Templates by descending ``score`` (ties by ``template_id``): the rows of ``elf-workflows rank``
    plus ``rank`` (1-based), ``max_interstitial_elf`` and ``interstitial_electrons``."""
    rows = [d for d in documents if d is not None and d.get("score") is not None]
    rows.sort(key=lambda d: (-float(d["score"]), str(d.get("template_id"))))
    ranked = []
    for i, d in enumerate(rows[:top] if top else rows, 1):
        metrics = d.get("metrics") or {}
        row = {k: d.get(k) for k in RANK_KEYS}
        row.update(rank=i, max_interstitial_elf=metrics.get("max_interstitial_elf"),
                   interstitial_electrons=metrics.get("interstitial_electrons"),
                   uncertainty=metrics.get("uncertainty"))
        ranked.append(row)
    return ranked


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainSurrogateMaker(Maker):
    """Train the surrogate on a reference dataset (:func:`elf_workflows.surrogate.train.train`).

    Args:
        name: job name.
        config: fields of :class:`~elf_workflows.surrogate.train.TrainConfig` (``epochs``,
            ``device`` = ``cuda`` on a GPU worker, ``model`` = U-Net config...).
    """

    name: str = "train surrogate"
    config: dict = field(default_factory=dict)

    @job
    def make(self, dataset: str, out: str, resume: bool = False, after: Any = None) -> dict:
        """Train on ``dataset`` (directory), write the best model to ``out``; return the metrics.

        ``after`` only orders the job (e.g. after the jobs that add records to the dataset)."""
        from pathlib import Path

        from elf_workflows.surrogate.train import TrainConfig, train

        metrics = train(dataset, out, TrainConfig(**self.config), resume=resume, progress=False)
        return {"model": str(Path(out).resolve()), "dataset": str(dataset), "metrics": metrics}
