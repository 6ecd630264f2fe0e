"""Template screening: generate sublattices → SAD → ELF → attractors and score → store.

The ELF engine is pluggable: an engine is a function ``f(structure) -> (elf, density | None, info)``
with ``elf`` a grid on the unit cell, ``density`` the SCF valence density on any grid (e/Å³; ``None``
→ the SAD on the ELF grid is partitioned) and ``info`` a dict with ``settings`` and ``model_version``.
``surrogate`` (:func:`elf_workflows.surrogate.predict_elf`) and ``gpaw``
(:func:`elf_workflows.reference.gpaw.compute_gpaw_elf`) are registered; :func:`register_engine` adds
others (tests use a cheap analytic one).

Screening is resumable: templates already stored under ``(template_id, engine)`` are skipped (for the
surrogate: when stored by the same model version; documents of older weights are recomputed), each
template is stored as soon as it is scored, so an interrupted run loses at most the template in flight.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from elf_workflows.errors import EngineError, InputError

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from elf_workflows.store import TemplateStore

EngineOutput = tuple[np.ndarray, "np.ndarray | None", dict]
ElfEngine = Callable[["Structure"], EngineOutput]

_ENGINES: dict[str, ElfEngine] = {}
_MODEL_CACHE: dict[str, Any] = {}


def register_engine(name: str, function: ElfEngine) -> None:
    """Make ``function(structure) -> (elf, density | None, info)`` available as engine ``name``."""
    _ENGINES[name] = function


def engine_names() -> list[str]:
    return sorted(_ENGINES)


def get_engine(name: str) -> ElfEngine:
    try:
        return _ENGINES[name]
    except KeyError:
        raise InputError(f"unknown ELF engine {name!r}; use one of {', '.join(engine_names())}") from None


def surrogate_model(path: str | None = None):
    """The surrogate model (shipped weights unless ``path``), loaded once per process."""
    try:
        from elf_workflows.surrogate import load_model
    except ImportError as exc:
        raise EngineError(f"the surrogate is not available ({exc}); use --engine gpaw") from exc
    key = str(path or "")
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(path) if path else load_model()
    return _MODEL_CACHE[key]


def use_surrogate_model(model) -> None:
    """Make ``model`` (a loaded :class:`~elf_workflows.surrogate.SurrogateModel`) the one the engine uses."""
    _MODEL_CACHE[""] = model


def surrogate_engine(structure: Structure) -> EngineOutput:
    """ELF from the shipped surrogate on its native grid.

    No SCF density comes with it: the basins partition :func:`elf_workflows.sad.partition_density`.
    """
    from elf_workflows.surrogate import predict_elf
    from elf_workflows.surrogate.domain import extrapolation_note

    model = surrogate_model()
    elf = np.asarray(predict_elf(structure, model=model), float)
    return elf, None, {"settings": {"grid": list(elf.shape)},
                       "model_version": str(getattr(model, "version", "unknown")),
                       "extrapolation": extrapolation_note(structure, model)}


def gpaw_engine(structure: Structure, settings=None) -> EngineOutput:
    """Self-consistent GPAW ELF and pseudo valence density (default :class:`GpawSettings`)."""
    try:
        from elf_workflows.reference.gpaw import compute_gpaw_elf
    except ImportError as exc:
        raise EngineError(f"GPAW is not available: {exc}") from exc
    result = compute_gpaw_elf(structure, settings=settings)
    return (np.asarray(result.elf, float), np.asarray(result.density, float),
            {"settings": dict(getattr(result, "settings", {}) or {}), "model_version": None,
             "seconds": getattr(result, "seconds", None)})


def _prepare_gpaw() -> None:
    try:
        import gpaw  # noqa: F401
    except ImportError as exc:
        raise EngineError(f"GPAW is not available: {exc}") from exc


register_engine("surrogate", surrogate_engine)
register_engine("gpaw", gpaw_engine)
#: checks run once before a screen, so a missing model or code fails at once, not per template
_PREPARE: dict[str, Callable[[], Any]] = {"surrogate": surrogate_model, "gpaw": _prepare_gpaw}


def score_structure(structure: Structure, engine: str | ElfEngine = "surrogate",
                    elf: np.ndarray | None = None, density: np.ndarray | None = None,
                    density_source: str | None = None):
    """Score one structure: ELF from ``elf`` if given, else from the engine.

    Returns ``(TemplateScore, elf, density_used_or_None, info)``.
    """
    from elf_workflows.templates import score_template

    info: dict = {}
    if elf is None:
        function = get_engine(engine) if isinstance(engine, str) else engine
        if isinstance(engine, str) and engine in _PREPARE:
            _PREPARE[engine]()
        elf, scf_density, info = function(structure)
        if density is None and scf_density is not None:
            density, density_source = scf_density, "scf"
    result = score_template(structure, elf, density, density_source=density_source)
    return result, elf, density, info


@dataclass
class ScreenSummary:
    """What a screening run did (``extrapolated``: computed templates outside the surrogate's training volumes)."""

    engine: str
    total: int = 0
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: stored templates of an older surrogate model, computed again (their documents replaced)
    refreshed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    extrapolated: list[str] = field(default_factory=list)
    seconds: float = 0.0
    store_seconds: float = 0.0

    def counts(self) -> str:
        """``"N computed, K already stored, F failed, S s"`` (plus the refreshed ones), as the CLI prints it."""
        refreshed = (f" ({len(self.refreshed)} of them replacing documents of an older surrogate model)"
                     if self.refreshed else "")
        return (f"{len(self.computed)} computed{refreshed}, {len(self.skipped)} already stored, "
                f"{len(self.failed)} failed, {self.seconds:.1f} s")

    @property
    def throughput_per_hour(self) -> float:
        return 3600.0 * len(self.computed) / self.seconds if self.seconds > 0 else 0.0


def _structure_of(entry: dict) -> Structure:
    from pymatgen.core import Structure

    s = entry["structure"]
    return s if isinstance(s, Structure) else Structure.from_dict(s)


def _compute_entry(function: ElfEngine, entry: dict, engine: str, save_grids: bool,
                   generate_share: float | None) -> tuple:
    """ELF, score and document of one entry: ``(doc, grids, info)``, nothing stored yet."""
    from elf_workflows.documents import TemplateDoc
    from elf_workflows.templates import score_template

    t0 = time.perf_counter()
    structure = _structure_of(entry)
    elf, scf_density, info = function(structure)
    t1 = time.perf_counter()
    result = score_template(structure, elf, scf_density, density_source="scf" if scf_density is not None else "sad")
    t2 = time.perf_counter()
    doc = TemplateDoc.from_result(
        structure, result, engine, template_id=str(entry.get("template_id")), prototype=entry.get("prototype"),
        pressure_gpa=entry.get("pressure_gpa"), eos_source=entry.get("eos_source"),
        settings=info.get("settings"), model_version=info.get("model_version"),
        timings={"elf": round(t1 - t0, 4), "score": round(t2 - t1, 4),
                 "generate": round(generate_share, 4) if generate_share else None},
        grid_shape=np.shape(elf))
    grids = {}
    if save_grids:
        grids["elf"] = (np.asarray(elf), "")
        if scf_density is not None:
            grids["density"] = (np.asarray(scf_density), "e/Å³")
    doc.timings.total = round(time.perf_counter() - t0, 4)  # ELF + score (the store's own time is in the summary)
    return doc, grids, info


def _failure(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _start_worker(model_path: str | None) -> None:
    """Initialiser of a screening worker process: one thread, the parent's surrogate weights."""
    import torch

    torch.set_num_threads(1)
    if model_path:
        use_surrogate_model(surrogate_model(model_path))


def _compute_in_worker(engine: str, entry: dict, save_grids: bool, generate_share: float | None) -> tuple:
    """:func:`_compute_entry` in a worker: ``(doc, grids, info, None)`` or ``(None, None, None, reason)``."""
    try:
        return (*_compute_entry(get_engine(engine), entry, engine, save_grids, generate_share), None)
    except Exception as exc:  # noqa: BLE001 - reported by the parent, which decides whether to stop
        return None, None, None, _failure(exc)


def _worker_results(engine: str, entries: list[dict], save_grids: bool, generate_share: float | None,
                    workers: int) -> Iterator[tuple]:
    """:func:`_compute_in_worker` over ``entries`` in ``workers`` spawned processes, results in entry order."""
    from elf_workflows.parallel import single_threaded_pool

    model_path = None  # workers load the shipped weights themselves
    if engine == "surrogate":
        from elf_workflows.surrogate.infer import SHIPPED_SOURCE

        path = getattr(_MODEL_CACHE.get(""), "path", None)
        model_path = path if path != SHIPPED_SOURCE else None
    with single_threaded_pool(workers, _start_worker, (model_path,)) as pool:
        futures = [pool.submit(_compute_in_worker, engine, entry, save_grids, generate_share) for entry in entries]
        try:
            for future in futures:
                yield future.result()
        finally:  # the parent stopped early (a store error, Ctrl-C): templates not yet started are dropped
            for future in futures:
                future.cancel()


def screen_sublattices(
    entries: Iterable[dict],
    store: TemplateStore,
    engine: str = "surrogate",
    engine_fn: ElfEngine | None = None,
    save_grids: bool = True,
    progress: bool = True,
    stop_on_error: bool = False,
    generate_seconds: float | None = None,
    workers: int = 1,
) -> ScreenSummary:
    """Score and store sublattice documents (``generate_sublattices`` output), skipping stored ones.

    Args:
        entries: dicts with ``structure``, ``template_id`` and optionally ``prototype``,
            ``pressure_gpa``, ``eos_source``.
        store: a :class:`~elf_workflows.store.TemplateStore`.
        engine: engine name (key of the stored documents).
        engine_fn: the ELF function; the registered one of ``engine`` when omitted.
        save_grids: store the ELF (and SCF density) grids beside the documents.
        progress: progress bar on standard error.
        stop_on_error: raise on the first failing template instead of recording it and going on.
        generate_seconds: time spent generating ``entries`` (s), shared out in each document's timings.
        workers: processes computing templates (spawned, one thread each; engines registered at import,
            not ``engine_fn``). Documents are stored by this process, in entry order, as they arrive.
    """
    if workers < 1:
        raise InputError(f"workers must be ≥ 1, got {workers}")
    if workers > 1 and engine_fn is not None:
        raise InputError("worker processes run registered engines only; pass engine=NAME, not engine_fn")
    function = engine_fn or get_engine(engine)
    if engine_fn is None and engine in _PREPARE:
        _PREPARE[engine]()
    entries = list(entries)
    summary = ScreenSummary(engine=engine, total=len(entries))
    start = time.perf_counter()
    store.connect()
    done = {tid for tid, _ in store.stored_keys(engine)}
    stale: set[str] = set()
    if engine == "surrogate" and engine_fn is None:
        # documents of an older surrogate (other weights, or before the partition SAD) are not reused
        current = str(getattr(surrogate_model(), "version", "unknown"))
        stale = {tid for tid, version in store.stored_model_versions(engine).items() if version != current}
        done -= stale
    todo, seen = [], set()
    for entry in entries:
        tid = str(entry.get("template_id"))
        if tid in done or tid in seen:
            summary.skipped.append(tid)
        else:
            todo.append(entry)
            seen.add(tid)
    share = generate_seconds / len(entries) if generate_seconds and entries else None

    def serial() -> Iterator[tuple]:
        for entry in todo:
            try:
                yield (*_compute_entry(function, entry, engine, save_grids, share), None)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - one template failing must not stop the screen
                if stop_on_error:
                    raise
                yield None, None, None, _failure(exc)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(entries), initial=len(summary.skipped), desc=f"screen ({engine})", unit="template",
                   file=sys.stderr, dynamic_ncols=True, leave=True)
    results = serial() if workers == 1 else _worker_results(engine, todo, save_grids, share, workers)
    try:
        for entry, (doc, grids, info, reason) in zip(todo, results):
            tid = str(entry.get("template_id"))
            if reason is not None:
                if stop_on_error:
                    raise EngineError(f"{tid}: {reason}")
                summary.failed[tid] = reason
                print(f"warning: {tid}: {reason}", file=sys.stderr)
            else:
                t3 = time.perf_counter()
                store.save(doc, grids)
                summary.store_seconds += time.perf_counter() - t3
                summary.computed.append(tid)
                if tid in stale:
                    summary.refreshed.append(tid)
                if info.get("extrapolation"):
                    summary.extrapolated.append(tid)
            if bar:
                bar.update()
    finally:
        if bar:
            bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def screen(
    elements: list[str],
    prototypes: list[str],
    pressures: list[float],
    engine: str = "surrogate",
    store: TemplateStore | str | None = None,
    binaries: bool = False,
    **kwargs,
) -> ScreenSummary:
    """Generate the sublattices of ``elements × prototypes × pressures`` and screen them into ``store``."""
    from elf_workflows.store import TemplateStore

    get_engine(engine)  # unknown engine → error before any work
    try:
        from elf_workflows.sublattices import generate_sublattices
    except ImportError as exc:
        raise EngineError(f"sublattice generation is not available: {exc}") from exc
    if not isinstance(store, TemplateStore):
        store = TemplateStore.from_spec(store)
    store.connect()  # an unreachable store fails before the sublattices are built
    start = time.perf_counter()
    entries = generate_sublattices(list(elements), list(prototypes), [float(p) for p in pressures], binaries=binaries)
    kwargs.setdefault("generate_seconds", time.perf_counter() - start)
    return screen_sublattices(entries, store, engine=engine, **kwargs)


def extrapolation_warning(summary: ScreenSummary) -> str | None:
    """One line for the command line when some computed templates lie outside the surrogate's training volumes."""
    if not summary.extrapolated:
        return None
    from elf_workflows.surrogate.domain import trained_v_ratio

    lo, _ = trained_v_ratio(surrogate_model())
    return (f"warning: {len(summary.extrapolated)} of {len(summary.computed)} computed templates are more compressed "
            f"than the surrogate's training cells (V/V0 < {lo:.2f}): their scores are extrapolations; "
            "check them with --engine gpaw")
