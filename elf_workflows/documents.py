"""Pydantic documents of screened templates, in the style of emmet (``Field`` descriptions, units).

A :class:`TemplateDoc` holds everything about one template computed with one ELF engine except the
grids, which live apart (GridFS on MongoDB, a blob collection on the embedded store) and are loaded
lazily through :meth:`elf_workflows.store.TemplateStore.load_grid`. Documents are keyed by
``(template_id, engine)``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal, Optional

from pydantic import BaseModel, Field


def _now() -> datetime:
    return datetime.now(timezone.utc)


def code_version() -> str:
    from elf_workflows import __version__

    return str(__version__)


class ElfSource(BaseModel):
    """Where the ELF (and the density its basins partition) came from."""

    engine: str = Field(..., description="ELF engine: surrogate, gpaw, vasp, file, or a custom engine name.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Engine settings (grid, cutoff, k-points...).")
    model_version: Optional[str] = Field(None, description="Surrogate model version (surrogate engine only).")
    density_source: str = Field("sad", description="Density the basins partition: chgcar, scf or sad (the "
                                "superposed free-atom partition densities, sad.partition_density).")
    grid_shape: Optional[list[int]] = Field(None, description="Shape [nx, ny, nz] of the ELF grid.")


class AttractorDoc(BaseModel):
    """One symmetry-distinct ELF attractor; values are per attractor, ``multiplicity`` images per cell."""

    kind: Literal["interstitial", "atomic"] = Field(..., description="Interstitial, or atomic shell (inside a core radius).")
    frac_coords: list[float] = Field(..., description="Fractional position in the template's lattice.")
    cart_coords: Optional[list[float]] = Field(None, description="Cartesian position (Å).")
    elf: float = Field(..., description="ELF at the refined maximum.")
    electrons: Optional[float] = Field(None, description="Valence electrons in its ELF basin (e).")
    volume: float = Field(..., description="ELF-basin volume (Å³).")
    multiplicity: int = Field(1, description="Symmetry-equivalent images in the cell.")
    wyckoff: str = Field("?", description="Wyckoff position (conventional multiplicity + letter), e.g. 4b.")
    site_symmetry: str = Field("?", description="Site-symmetry symbol.")
    density: Optional[float] = Field(None, description="Valence density at the maximum (e/Å³).")
    laplacian: Optional[float] = Field(None, description="∇²ρ at the maximum (e/Å⁵); negative = concentration.")
    nearest_atoms: list[dict] = Field(default_factory=list, description="First shell: element, index, distance (Å).")
    electride_site: bool = Field(False, description="ELF > 0.7, ≥ 0.9 e and ∇²ρ < −1e-3 e/bohr⁵.")
    images_found: int = Field(1, description="Images found as grid maxima (≤ multiplicity).")


class Timings(BaseModel):
    """Wall times of the pipeline steps (s)."""

    generate: Optional[float] = Field(None, description="Sublattice generation (s).")
    elf: Optional[float] = Field(None, description="ELF engine, SAD included (s).")
    score: Optional[float] = Field(None, description="Attractors, basins and score (s).")
    total: Optional[float] = Field(None, description="ELF and score of the template (s).")


class GridRef(BaseModel):
    """A grid stored apart from the document."""

    grid_id: str = Field(..., description="Key of the grid in the blob store.")
    shape: list[int] = Field(..., description="[nx, ny, nz].")
    dtype: str = Field("float32", description="Stored dtype.")
    units: str = Field("", description="Units of the values (ELF: none; density: e/Å³).")


class TemplateDoc(BaseModel):
    """A screened metal sublattice (template) with its ELF attractors and template strength."""

    template_id: str = Field(..., description="Stable id of the template (sublattice + pressure).")
    engine: str = Field(..., description="ELF engine; with template_id the key of the document.")
    formula: str = Field(..., description="Reduced formula.")
    elements: list[str] = Field(..., description="Sorted element symbols.")
    nelements: int = Field(..., description="Number of elements.")
    nsites: int = Field(..., description="Sites in the cell.")
    prototype: Optional[str] = Field(None, description="Prototype name (fcc, bcc, hcp, A15, ...).")
    spacegroup: Optional[str] = Field(None, description="Space-group symbol.")
    spacegroup_number: Optional[int] = Field(None, description="Space-group number.")
    pressure_gpa: Optional[float] = Field(None, description="Pressure of the template (GPa).")
    volume_per_atom: float = Field(..., description="Volume per atom (Å³).")
    eos_source: Optional[str] = Field(None, description="Where the pressure → volume relation came from.")
    structure: dict = Field(..., description="pymatgen Structure.as_dict().")
    elf_source: ElfSource = Field(..., description="ELF engine, settings, model version, density source.")
    score: float = Field(..., description="Template strength (localised interstitial e per metal atom).")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Ingredients of the score.")
    attractors: list[AttractorDoc] = Field(default_factory=list, description="Symmetry-distinct ELF attractors.")
    grids: dict[str, GridRef] = Field(default_factory=dict, description="Grids stored apart (elf, density).")
    timings: Timings = Field(default_factory=Timings, description="Wall times (s).")
    code_version: str = Field(default_factory=code_version, description="elf-workflows version.")
    created_at: datetime = Field(default_factory=_now, description="When computed (UTC).")
    last_updated: datetime = Field(default_factory=_now, description="When stored (UTC).")

    @classmethod
    def from_result(cls, structure, result, engine: str, *, template_id: str | None = None,
                    prototype: str | None = None, pressure_gpa: float | None = None,
                    eos_source: str | None = None, settings: dict | None = None,
                    model_version: str | None = None, timings: dict | None = None,
                    grid_shape=None) -> "TemplateDoc":
        """Build the document of ``structure`` from a :class:`elf_workflows.templates.TemplateScore`."""
        from elf_workflows.symmetry import get_space_group

        group = get_space_group(structure)
        elements = sorted({el.symbol for el in structure.composition.elements})
        return cls(
            template_id=template_id or default_template_id(structure, prototype, pressure_gpa),
            engine=engine,
            formula=structure.composition.reduced_formula,
            elements=elements,
            nelements=len(elements),
            nsites=len(structure),
            prototype=prototype,
            spacegroup=group.symbol,
            spacegroup_number=group.number,
            pressure_gpa=pressure_gpa,
            volume_per_atom=round(structure.volume / len(structure), 6),
            eos_source=eos_source,
            structure=structure.as_dict(),
            elf_source=ElfSource(engine=engine, settings=settings or {}, model_version=model_version,
                                 density_source=result.density_source,
                                 grid_shape=list(grid_shape) if grid_shape is not None else None),
            score=result.score,
            metrics=result.metrics,
            attractors=[AttractorDoc(**a.as_dict()) for a in result.attractors],
            timings=Timings(**(timings or {})),
        )

    @classmethod
    def from_dict(cls, d: dict) -> "TemplateDoc":
        """A document from a loose dict (e.g. the jobflow score job's output), derived fields filled in."""
        return _from_dict(cls, d)

    def to_structure(self):
        """The template as a pymatgen Structure."""
        from pymatgen.core import Structure

        return Structure.from_dict(self.structure)

    def summary(self) -> dict:
        """The fields ``rank`` prints."""
        return {"template_id": self.template_id, "formula": self.formula, "prototype": self.prototype,
                "pressure_gpa": self.pressure_gpa, "score": self.score, "engine": self.engine}


def default_template_id(structure, prototype: str | None, pressure_gpa: float | None) -> str:
    """``template_id`` from :mod:`elf_workflows.sublattices` when present, else a hash of the structure."""
    try:
        from elf_workflows.sublattices import template_id

        return template_id(structure, pressure_gpa)
    except ImportError:
        import hashlib
        import json

        import numpy as np

        payload = json.dumps({
            "lattice": np.round(structure.lattice.matrix, 4).tolist(),
            "species": [s.specie.symbol for s in structure],
            "frac": np.round(structure.frac_coords % 1.0, 4).tolist(),
            "prototype": prototype, "pressure": pressure_gpa,
        }, sort_keys=True)
        return f"{structure.composition.reduced_formula}-{prototype or 'x'}-" + hashlib.sha1(payload.encode()).hexdigest()[:10]


def _from_dict(cls, d: dict) -> TemplateDoc:
    """A TemplateDoc from a loose dict (e.g. the jobflow score job's output), filling derived fields."""
    from pymatgen.core import Structure

    d = dict(d)
    d.pop("_id", None)
    structure = d["structure"] if isinstance(d["structure"], Structure) else Structure.from_dict(d["structure"])
    elements = sorted({el.symbol for el in structure.composition.elements})
    engine = d.get("engine") or (d.get("elf_source") or {}).get("engine") or "unknown"
    meta = d.get("engine_metadata") or {}
    if "elf_source" not in d:
        d["elf_source"] = {"engine": engine, "settings": meta.get("settings", {}),
                           "model_version": meta.get("model_version"),
                           "density_source": d.get("density_source", "sad"),
                           "grid_shape": d.get("shape")}
    d.update(structure=structure.as_dict(), engine=engine, elements=elements, nelements=len(elements),
             nsites=len(structure))
    d.setdefault("formula", structure.composition.reduced_formula)
    d.setdefault("volume_per_atom", structure.volume / len(structure))
    if not d.get("template_id"):
        d["template_id"] = default_template_id(structure, d.get("prototype"), d.get("pressure_gpa"))
    if isinstance(d.get("spacegroup"), dict):
        d["spacegroup"] = d["spacegroup"].get("symbol")
    known = set(cls.model_fields)
    extra = {k: v for k, v in d.items() if k not in known}
    d = {k: v for k, v in d.items() if k in known}
    if extra:
        d.setdefault("metrics", {})
        d["metrics"] = {**d["metrics"], **{k: v for k, v in extra.items() if k in ("uncertainty", "seconds")}}
    return cls.model_validate(d)

