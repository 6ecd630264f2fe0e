"""Flow Makers: template screening, DFT reference sets and the active-learning loop.

All three are atomate2-style ``@dataclass`` Makers whose ``make`` returns a :class:`jobflow.Flow`,
so they run the same way with ``jobflow.run_locally`` (a laptop, CI, the demo) and with
jobflow-remote (``submit_flow`` to a Slurm worker, see ``flows/jobflow_remote_project.yaml``)::

    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore
    from elf_workflows.flows import TemplateScreeningMaker

    flow = TemplateScreeningMaker().make(["La", "Y"], ["fcc", "hcp"], [150, 250])
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    run_locally(flow, store=store)
    ranked = store.get_output(flow.output.uuid)        # list of rows, best template first

Grids (SAD, ELF, SCF density) go to the JobStore's additional store ``data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from jobflow import Flow, Maker, OnMissing, Response, job

from elf_workflows.errors import InputError
from elf_workflows.jobs import (
    ElfMaker,
    GpawElfMaker,
    GridData,
    SadMaker,
    ScoreMaker,
    StoreMaker,
    SublatticesMaker,
    SurrogateElfMaker,
    rank_templates,
)

if TYPE_CHECKING:
    from pymatgen.core import Structure


def elf_maker_for(engine: str, engine_kwargs: dict | None = None) -> ElfMaker:
    """The ELF Maker of an engine name (``surrogate``, ``gpaw``, ``gradient-expansion`` or
    ``package.module:function``)."""
    kwargs = dict(engine_kwargs or {})
    if engine == "surrogate":
        return SurrogateElfMaker(engine_kwargs=kwargs)
    if engine == "gpaw":
        return GpawElfMaker(engine_kwargs=kwargs)
    if engine == "vasp":
        raise InputError("the VASP ELF runs through ReferenceSetMaker(engine='vasp') "
                         "(atomate2's VaspElfMaker); screen with 'surrogate' or 'gpaw'")
    from elf_workflows.jobs import resolve_engine

    resolve_engine(engine, **kwargs)  # fails early on an unknown name
    return ElfMaker(name=f"elf ({engine})", engine=engine, engine_kwargs=kwargs)


# --------------------------------------------------------------------------------------------------
# template screening
# --------------------------------------------------------------------------------------------------
@job
def screen_sublattices(sublattices: list[dict], sad_maker: SadMaker, elf_maker: ElfMaker,
                       score_maker: ScoreMaker, store_maker: StoreMaker) -> Response:
    """Fan out: one ``elf → sad → score → store`` branch per sublattice (known only at run time).

    This job is replaced by the branches; its output becomes the list of stored documents.
    """
    jobs, outputs = [], []
    for doc in sublattices:
        metadata = {k: v for k, v in doc.items() if k != "structure"}
        label = str(doc.get("template_id") or "").strip()
        elf = elf_maker.make(doc["structure"], metadata=metadata)
        sad = sad_maker.make(doc["structure"], shape=elf.output["shape"])
        score = score_maker.make(elf.output, sad.output)
        stored = store_maker.make(score.output, elf.output)
        for j in (elf, sad, score, stored):
            j.name = f"{j.name} {label}".strip()
        jobs.append(Flow([elf, sad, score, stored], output=stored.output, name=f"template {label}".strip()))
        outputs.append(stored.output)
    return Response(replace=Flow(jobs, output=outputs, name="templates"))


@dataclass
class TemplateScreeningMaker(Maker):
    """Screen metal sublattices as superhydride templates: sublattices → (ELF → SAD → score →
    store) per sublattice → ranking.

    Args:
        name: flow name.
        engine: default ELF engine (``surrogate``, ``gpaw``, ``gradient-expansion`` or
            ``package.module:function``); it chooses the grid.
        engine_kwargs: keyword arguments of the engine (e.g. ``{"settings": "loose"}`` for GPAW).
        binaries: also screen binary prototypes of each element pair.
        store: elf-workflows store (directory or ``mongodb://`` URI) to upsert the template
            documents into, besides the JobStore; None for the JobStore only.
        save_grids: also store the ELF (and SCF density) grids in that store, as ``screen`` does.
        top: keep only the best ``top`` rows in the ranking output (None: all).
        symprec: spglib tolerance of the attractor analysis (Å).
    """

    name: str = "template screening"
    engine: str = "surrogate"
    engine_kwargs: dict = field(default_factory=dict)
    binaries: bool = False
    store: str | None = None
    save_grids: bool = True
    top: int | None = None
    symprec: float = 1e-3

    def make(self, elements: list[str], prototypes: list[str], pressures: list[float],
             engine: str | None = None) -> Flow:
        """Flow whose output is the ranked list (rows with ``template_id``, ``formula``,
        ``prototype``, ``pressure_gpa``, ``score``, ``rank``).

        Args:
            elements: metal symbols, e.g. ``["La", "Y"]``.
            prototypes: prototype names, e.g. ``["fcc", "bcc", "hcp", "A15"]``.
            pressures: pressures in GPa.
            engine: ELF engine for this flow (default: the Maker's).
        """
        elements, prototypes, pressures = _as_list(elements), _as_list(prototypes), _as_list(pressures)
        if not elements or not prototypes or not pressures:
            raise InputError("give at least one element, one prototype and one pressure")
        elf_maker = elf_maker_for(engine or self.engine, self.engine_kwargs)
        sublattices = SublatticesMaker(binaries=self.binaries).make(elements, prototypes, pressures)
        fan_out = screen_sublattices(
            sublattices.output,
            SadMaker(),
            elf_maker,
            ScoreMaker(symprec=self.symprec),
            StoreMaker(store=self.store, save_grids=self.save_grids),
        )
        fan_out.name = "screen sublattices"
        ranking = rank_templates(fan_out.output, top=self.top)
        ranking.name = "rank"
        # a failed template branch leaves None in the list: rank the others
        ranking.config.on_missing_references = OnMissing.NONE
        return Flow([sublattices, fan_out, ranking], output=ranking.output, name=self.name)


def _as_list(value) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


# --------------------------------------------------------------------------------------------------
# reference sets (DFT ELF → dataset records)
# --------------------------------------------------------------------------------------------------
@job
def dataset_record(elf_output: dict, score_output: dict | None = None, dataset: str | None = None,
                   source: str = "flow", split: str = "train") -> dict:
    """A reference-dataset record (format of :mod:`elf_workflows.dataset`) from a DFT ELF job output;
    appended with its grids to ``dataset`` (a directory) when given. Returns the record without
    the structure, plus ``score``/``template_id`` of ``score_output`` when given."""
    from elf_workflows.dataset import DatasetWriter, record_id
    from elf_workflows.jobs import _grid, _structure

    structure = _structure(elf_output["structure"])
    elf = _grid(elf_output["elf"])
    density = _grid(elf_output.get("density"))
    if density is None:
        raise InputError(f"{structure.composition.reduced_formula}: a reference record needs the SCF "
                         "density that came with the DFT ELF (this engine gave none)")
    info = elf_output.get("info") or {}
    engine = elf_output.get("engine", "gpaw")
    settings = info.get("settings") or {}
    meta = elf_output.get("metadata") or {}
    record = {
        "id": record_id(structure, engine, settings),
        "structure": structure.as_dict(),
        "engine": engine,
        "settings": settings,
        "energy_ev": info.get("energy_ev"),
        "seconds": elf_output.get("seconds"),
        "split": split,
        "source": source + (f" {meta['template_id']}" if meta.get("template_id") else ""),
        "electrons": float(np.mean(density) * structure.volume),
    }
    if dataset is not None:
        writer = DatasetWriter(dataset)
        try:
            if record["id"] not in writer.done_ids(include_failed=False):
                record = writer.add(record, elf, density)
        finally:
            writer.close()
    out = {k: v for k, v in record.items() if k != "structure"}
    out.setdefault("formula", structure.composition.reduced_formula)
    out["shape"] = list(elf.shape)
    out["dataset"] = dataset
    if score_output is not None:
        out.update(template_id=score_output.get("template_id"), score=score_output.get("score"))
    return out


@job(data=GridData)
def vasp_elf_output(grid_doc: Any, metadata: dict | None = None) -> dict:
    """The output of atomate2's VASP ELF job (an ``ElfGridDocument`` of
    :mod:`elf_workflows.reference.vasp`: ELFCAR + CHGCAR parsed) in the ``ElfMaker`` output format,
    so scoring and dataset records treat VASP like GPAW."""
    from elf_workflows.jobs import _structure

    doc = grid_doc.model_dump() if hasattr(grid_doc, "model_dump") else dict(grid_doc)
    structure = _structure(doc["structure"])
    elf = np.asarray(doc["elf"], dtype=float)
    density = None if doc.get("density") is None else np.asarray(doc["density"], dtype=float)
    return {
        "structure": structure,
        "shape": list(elf.shape),
        "engine": doc.get("engine") or "vasp",
        "metadata": dict(metadata or {}),
        "info": {"settings": doc.get("settings") or {}, "energy_ev": doc.get("energy_ev"),
                 "dir_name": doc.get("dir_name")},
        "seconds": None,
        "elf_range": [float(elf.min()), float(elf.max())],
        "elf": GridData(elf, kind="elf"),
        "density": None if density is None else GridData(density, kind="density", units="e/Å³"),
    }


@dataclass
class ReferenceSetMaker(Maker):
    """DFT ELF (GPAW here, or VASP through atomate2) for a list of structures → scored dataset records.

    Args:
        name: flow name.
        engine: ``gpaw`` or ``vasp``.
        engine_kwargs: GPAW settings (``{"settings": "training"}`` or a dict of GpawSettings fields).
        vasp_maker: atomate2 Maker of the VASP ELF static (default
            ``elf_workflows.reference.vasp.VaspElfMaker()``).
        dataset: dataset directory the records are appended to (None: JobStore only).
        source: free-text ``source`` of the records.
        split: ``train``, ``val`` or ``test``.
        score: also score each DFT ELF (its template document then sits in the JobStore).
    """

    name: str = "reference set"
    engine: str = "gpaw"
    engine_kwargs: dict = field(default_factory=dict)
    vasp_maker: Maker | None = None
    dataset: str | None = None
    source: str = "ReferenceSetMaker"
    split: str = "train"
    score: bool = True

    def make(self, structures: list[Structure | dict], metadata: list[dict] | None = None) -> Flow:
        """Flow whose output is the list of records (one per structure)."""
        from elf_workflows.jobs import _structure

        if not structures:
            raise InputError("no structures given for the reference set")
        metadata = list(metadata) if metadata is not None else [{} for _ in structures]
        if len(metadata) != len(structures):
            raise InputError(f"{len(metadata)} metadata entries for {len(structures)} structures")
        jobs, outputs = [], []
        for structure, meta in zip(structures, metadata):
            structure = _structure(structure)
            if self.engine == "gpaw":
                elf = GpawElfMaker(engine_kwargs=dict(self.engine_kwargs)).make(structure, metadata=meta)
                steps = [elf]
            elif self.engine == "vasp":
                from elf_workflows.reference.vasp import VaspElfMaker

                vasp = (self.vasp_maker or VaspElfMaker()).make(structure)
                elf = vasp_elf_output(vasp.output, metadata=meta)
                elf.name = "vasp elf grids"
                steps = [vasp, elf]
            else:
                raise InputError(f"unknown reference engine {self.engine!r}; use gpaw or vasp")
            score = None
            if self.score:
                score = ScoreMaker().make(elf.output)
                steps.append(score)
            record = dataset_record(elf.output, None if score is None else score.output, dataset=self.dataset,
                                    source=self.source, split=self.split)
            record.name = f"dataset record {structure.composition.reduced_formula}"
            steps.append(record)
            jobs.extend(steps)
            outputs.append(record.output)
        return Flow(jobs, output=outputs, name=self.name)


@job
def reference_set_for(selected: list[dict], maker: ReferenceSetMaker) -> Response:
    """Run a :class:`ReferenceSetMaker` on template documents known only at run time."""
    if not selected:
        return Response(output=[])
    flow = maker.make([d["structure"] for d in selected],
                      metadata=[{k: d.get(k) for k in ("template_id", "prototype", "pressure_gpa", "eos_source")}
                                for d in selected])
    return Response(replace=flow)


# --------------------------------------------------------------------------------------------------
# active learning
# --------------------------------------------------------------------------------------------------
def _uncertainty(doc: dict) -> float | None:
    return (doc.get("metrics") or {}).get("uncertainty")


@job
def select_for_dft(documents: list[dict], n_top: int = 3, n_uncertain: int = 3) -> list[dict]:
    """The best ``n_top`` templates by score plus the ``n_uncertain`` least certain of the rest
    (largest surrogate ``metrics.uncertainty``); each with a ``reason`` (``top``/``uncertain``)."""
    docs = [d for d in documents if d is not None and d.get("score") is not None]
    by_score = sorted(docs, key=lambda d: (-float(d["score"]), str(d.get("template_id"))))
    chosen = [dict(d, reason="top") for d in by_score[:n_top]]
    taken = {d.get("template_id") for d in chosen}
    rest = [d for d in docs if d.get("template_id") not in taken and _uncertainty(d) is not None]
    rest.sort(key=lambda d: (-float(_uncertainty(d)), str(d.get("template_id"))))
    chosen += [dict(d, reason="uncertain") for d in rest[:n_uncertain]]
    return chosen


@job
def compare_with_dft(selected: list[dict], records: list[dict], model: str | None = None) -> list[dict]:
    """Surrogate vs DFT on the selected templates: scores side by side, and the ELF mean absolute
    error of the surrogate on the DFT grid (when the records are in a dataset)."""
    from elf_workflows.dataset import ReferenceDataset

    rows = []
    for doc, record in zip(selected, records):
        row = {
            "template_id": doc.get("template_id"),
            "formula": doc.get("formula"),
            "reason": doc.get("reason"),
            "uncertainty": (doc.get("metrics") or {}).get("uncertainty"),
            "surrogate_score": doc.get("score"),
            "dft_score": record.get("score"),
            "score_error": None if record.get("score") is None else float(doc["score"]) - float(record["score"]),
            "record_id": record.get("id"),
            "elf_mae": None,
        }
        if record.get("dataset") and record.get("id"):
            from elf_workflows.surrogate import load_model, predict_elf

            with ReferenceDataset(record["dataset"]) as data:
                structure, elf_dft, _ = data.load(record["id"])
            elf_pred = predict_elf(structure, shape=elf_dft.shape, model=load_model(model) if model else None)
            row["elf_mae"] = float(np.mean(np.abs(elf_pred - elf_dft)))
        rows.append(row)
    return rows


@dataclass
class ActiveLearningMaker(Maker):
    """Surrogate screening → DFT on the top-ranked and least certain templates → compare → add to
    the dataset → retrain: the loop that keeps the surrogate honest.

    Args:
        name: flow name.
        screening: the surrogate screening Maker.
        engine: its ELF engine; ``surrogate-uncertainty`` adds the score uncertainty (the surrogate's
            ELF error at void maxima propagated into each score, ``metrics.uncertainty``) that picks
            the least certain templates.
        model: surrogate model file for the screening and the comparison (default: the shipped one).
        reference: the DFT Maker (its ``dataset`` is set to ``dataset`` in ``make``).
        n_top: best templates recomputed with DFT.
        n_uncertain: least certain templates recomputed with DFT.
        retrain: also retrain the surrogate at the end.
        train_kwargs: fields of ``elf_workflows.surrogate.train.TrainConfig``.
    """

    name: str = "active learning"
    screening: TemplateScreeningMaker = field(default_factory=TemplateScreeningMaker)
    reference: ReferenceSetMaker = field(default_factory=ReferenceSetMaker)
    engine: str = "surrogate-uncertainty"
    model: str | None = None
    n_top: int = 3
    n_uncertain: int = 3
    retrain: bool = True
    train_kwargs: dict = field(default_factory=dict)

    def make(self, elements: list[str], prototypes: list[str], pressures: list[float],
             dataset: str, model_out: str | None = None) -> Flow:
        """Flow whose output is the comparison table (and the retrained model path, if any)."""
        from dataclasses import replace

        screening = self.screening
        if self.model:
            screening = replace(screening, engine_kwargs={**screening.engine_kwargs, "model": str(self.model)})
        screen = screening.make(elements, prototypes, pressures, engine=self.engine)
        fan_out = next(j for j in screen.jobs if j.name == "screen sublattices")
        selected = select_for_dft(fan_out.output, n_top=self.n_top, n_uncertain=self.n_uncertain)
        selected.name = "select for DFT"
        selected.config.on_missing_references = OnMissing.NONE  # failed templates are not candidates
        reference = reference_set_for(selected.output, replace(self.reference, dataset=str(dataset),
                                                                source="active learning"))
        reference.name = "DFT reference"
        compare = compare_with_dft(selected.output, reference.output, model=self.model)
        compare.name = "compare"
        jobs = [screen, selected, reference, compare]
        output: dict[str, Any] = {"ranking": screen.output, "comparison": compare.output}
        if self.retrain:
            from elf_workflows.jobs import TrainSurrogateMaker

            retrain = TrainSurrogateMaker(name="retrain", config=dict(self.train_kwargs)).make(
                str(dataset), str(model_out or "surrogate-retrained.pt"), after=compare.output)
            jobs.append(retrain)
            output["model"] = retrain.output
        return Flow(jobs, output=output, name=self.name)


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------
def jobstore_for(spec: str | None = None):
    """A JobStore beside an elf-workflows store, with the additional store ``data`` for the grids.

    ``spec``: a directory (embedded MontyStore collections ``jobflow_outputs`` and ``jobflow_data``
    in it, no server) or a ``mongodb://`` URI (``jobflow_outputs`` and the GridFS bucket
    ``jobflow_data`` in the URI's database). Default: ``$ELF_WORKFLOWS_STORE``, else ``./elf_store``.
    """
    from pathlib import Path

    from jobflow import JobStore

    from elf_workflows.store import _uri_database, default_store_spec, is_mongo_uri

    spec = str(spec) if spec is not None else default_store_spec()
    if is_mongo_uri(spec):
        from maggma.stores import GridFSStore, MongoStore

        database = _uri_database(spec)
        return JobStore(MongoStore(database, "jobflow_outputs", uri=spec),
                        additional_stores={"data": GridFSStore(database, "jobflow_data", uri=spec)})
    from maggma.stores import MontyStore

    path = Path(spec).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return JobStore(MontyStore("jobflow_outputs", database_path=str(path), key="uuid"),
                    additional_stores={"data": MontyStore("jobflow_data", database_path=str(path), key="blob_uuid")})


def run_flow(flow, store=None):
    """Run ``flow`` here with ``jobflow.run_locally`` (``store``: a JobStore or a spec for
    :func:`jobstore_for`); return the flow's resolved output.

    A failing template branch does not stop the others (the ranking skips it); if the flow's output
    job cannot run, :class:`EngineError` gives the first failure in one line.
    """
    import logging

    from jobflow import JobStore, run_locally

    from elf_workflows.errors import EngineError

    class _Failures(logging.Handler):  # jobflow reports job failures at INFO level
        def __init__(self):
            super().__init__(logging.INFO)
            self.messages: list[str] = []

        def emit(self, record):
            message = record.getMessage()
            if "failed with exception" in message:
                self.messages.append(message)

    store = store if isinstance(store, JobStore) else jobstore_for(store)
    handler = _Failures()
    logger = logging.getLogger("jobflow")
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        run_locally(flow, store=store, log=False, ensure_success=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    output = flow.output
    refs = list(output.values()) if isinstance(output, dict) else list(output) if isinstance(output, (list, tuple)) \
        else [output]
    store.connect()
    try:
        values = [store.get_output(ref.uuid) for ref in refs]
    except ValueError as exc:
        first = next((m for m in handler.messages if m.strip()), str(exc))
        lines = [line.strip() for line in first.splitlines() if line.strip()]
        raise EngineError(f"the flow did not finish: {lines[-1] if lines else first}") from exc
    if handler.messages:
        import sys

        lines = [line.strip() for line in handler.messages[0].splitlines() if line.strip()]
        print(f"warning: {len(handler.messages)} job(s) failed; first: {lines[-1] if lines else '?'}", file=sys.stderr)
    if isinstance(output, dict):
        return dict(zip(output, values))
    return values if isinstance(output, (list, tuple)) else values[0]
