"""Inference: structure → SAD at the model's native spacing → network → symmetry pooling → requested grid.

Native grid. The network needs sizes that are multiples of ``2**(levels-1)`` (its pooling strides)
and symmetry pooling needs a grid every space-group operator maps onto itself. :func:`native_grid`
takes, per group of axes that rotations mix, the smallest FFT-friendly size with voxels no larger
than the model's spacing that is a multiple of both the pooling stride and the denominators of the
fractional translations (the rule of :func:`elf_workflows.grids.grid_for_spacing`, with the extra
factor). A model whose U-Net is dropped (the shipped one) pools nothing, so its grids drop the
stride (:func:`model_grid`; session 10: a primitive fcc cell of 4.9 Å takes 25³ voxels, not 32³).
Any requested grid is then reached by Fourier interpolation
(:func:`elf_workflows.grids.fourier_interpolate`) and clipped to [0, 1].
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch

from elf_workflows.errors import EngineError, InputError
from elf_workflows.grids import check_grid, fft_friendly, fourier_interpolate
from elf_workflows.surrogate.features import FEATURE_NAMES, N_FEATURES, cell_features
from elf_workflows.surrogate.model import (MAX_PASS_VOXELS, PeriodicUNet, UNetConfig, merge_pointwise, per_voxel_elf,
                                          predict_grid)
from elf_workflows.surrogate.symmetry_pool import pool_cell
from elf_workflows.symmetry import get_space_group, voxel_orbits

if TYPE_CHECKING:
    from pymatgen.core import Structure

FORMAT = "elf-workflows-surrogate/1"
SHIPPED_WEIGHTS = "surrogate.pt"
SHIPPED_METADATA = "surrogate.json"
#: the ``path`` of the shipped weights once loaded (a package resource, not a file to pass around)
SHIPPED_SOURCE = "package:elf_workflows/data/surrogate.pt"


@dataclass
class SurrogateModel:
    """A loaded surrogate: the network, its config and provenance.

    Attributes:
        net: the :class:`PeriodicUNet` (eval mode, CPU unless moved).
        version: identifies the weights (recorded in every output).
        metadata: what the weights were trained on, metrics, ...
        path: where they were loaded from.
    """

    net: PeriodicUNet
    version: str
    metadata: dict = field(default_factory=dict)
    path: str | None = None

    @property
    def config(self) -> UNetConfig:
        return self.net.config


def weights_digest(state_dict: dict) -> str:
    """First 10 hex digits of the SHA-256 of the weights (stable across saves)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def save_model(net: PeriodicUNet, path: str | Path, metadata: dict | None = None, name: str = "surrogate") -> str:
    """Write weights + config + metadata (a plain dict, loadable with ``weights_only=True``); return the version."""
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    version = f"{name}-{weights_digest(state)}"
    payload = {"format": FORMAT, "version": version, "config": net.config.to_dict(),
               "metadata": json.dumps(metadata or {}), "state_dict": state}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return version


def _from_payload(payload: dict, path: str | None) -> SurrogateModel:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not an elf-workflows surrogate model file")
    config = dict(payload["config"])
    config.setdefault("point_channels", 0)  # files written before the pointwise branch existed
    if config.get("in_channels") != N_FEATURES:
        raise InputError(f"{path}: the model reads {config.get('in_channels')} input channels, this version computes "
                         f"{N_FEATURES} (the last, {FEATURE_NAMES[-1]}, was added in session 8); retrain it with "
                         "elf-workflows train")
    net = PeriodicUNet(UNetConfig(**config))
    result = net.load_state_dict(payload["state_dict"], strict=False)
    if result.unexpected_keys or set(result.missing_keys) - set(PeriodicUNet.OPTIONAL_BUFFERS):
        raise InputError(f"{path}: weights do not fit the architecture {config} "
                         f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    net.eval()
    return SurrogateModel(net=net, version=str(payload["version"]), metadata=json.loads(payload.get("metadata") or "{}"),
                          path=path)


def load_model(path: str | Path | None = None) -> SurrogateModel:
    """Load a surrogate model file; without ``path`` the weights shipped in the package (no network)."""
    if path is None:
        return _load_shipped()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read model {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    if isinstance(payload, dict) and "model" in payload and payload.get("format") != FORMAT:
        payload = payload["model"]  # a training checkpoint
    return _from_payload(payload, str(path))


@lru_cache(maxsize=1)
def _load_shipped() -> SurrogateModel:
    ref = resources.files("elf_workflows.data").joinpath(SHIPPED_WEIGHTS)
    if not ref.is_file():
        raise EngineError("no surrogate weights shipped in elf_workflows/data/surrogate.pt; train one "
                          "(elf-workflows train) and pass --model")
    with ref.open("rb") as fh:
        payload = torch.load(io.BytesIO(fh.read()), map_location="cpu", weights_only=True)
    return _from_payload(payload, SHIPPED_SOURCE)


def native_grid(structure: Structure, spacing: float, multiple: int, symprec: float = 1e-3,
                group=None) -> tuple[int, int, int]:
    """Smallest FFT-friendly, symmetry-compatible grid with voxels ≤ ``spacing`` Å and sizes divisible by ``multiple``.

    ``group``: the structure's :class:`~elf_workflows.symmetry.SpaceGroup` when already known.
    """
    group = group or get_space_group(structure, symprec=symprec)
    n_min = [max(1, math.ceil(length / spacing - 1e-9)) for length in structure.lattice.abc]
    dens = group.translation_denominators()
    shape = [0, 0, 0]
    for axes in group.axis_groups():
        size = fft_friendly(max(n_min[a] for a in axes), math.lcm(multiple, *(dens[a] for a in axes)))
        for a in axes:
            shape[a] = size
    return tuple(shape)  # type: ignore[return-value]


def model_grid(structure: Structure, model: SurrogateModel, group=None) -> tuple[int, int, int]:
    """The model's native grid for ``structure``.

    A model whose U-Net is dropped has no pooling strides to respect, so its sizes need not be
    multiples of :attr:`UNetConfig.multiple` (a primitive fcc cell of 4.9 Å: 25³ voxels, not 32³).
    """
    cfg = model.config
    return native_grid(structure, cfg.spacing, 1 if _per_voxel(model) else cfg.multiple, group=group)


def _per_voxel(model: SurrogateModel) -> bool:
    """Whether the model is its per-voxel branch alone (its U-Net dropped, as in the shipped weights)."""
    return model.net.point is not None and not model.net.unet_active()


def _native_grid_and_orbits(structure: Structure, model: SurrogateModel):
    """(space group, native grid, voxel orbits) of ``structure`` for ``model``."""
    group = get_space_group(structure)
    shape = check_grid(model_grid(structure, model, group), n_arrays=12)
    return group, shape, voxel_orbits(group, shape)


def _orbit_channels(structure: Structure, model: SurrogateModel):
    """(voxel orbits, input channels at their representatives ``(C, n_orbits)``): a per-voxel model's whole input."""
    _, shape, orbits = _native_grid_and_orbits(structure, model)
    return orbits, cell_features(structure, shape=shape, at=orbits.representatives)


def predict_native(structure: Structure, model: SurrogateModel, max_voxels: int = MAX_PASS_VOXELS,
                   core: int | None = None, pool: bool = True) -> np.ndarray:
    """ELF on the model's native grid: SAD → features → network (tiled if large) → group average.

    The per-voxel branch runs once per voxel orbit of the group (:func:`~elf_workflows.surrogate.model.pointwise_on_orbits`),
    with or without ``pool``; the U-Net runs on every voxel, and ``pool`` averages its output over the group.
    A model whose U-Net is dropped (the shipped one) is its per-voxel branch alone: then the input
    channels too are formed only at the orbits' representatives (:func:`cell_features` ``at``) and the
    ELF is broadcast over each orbit, symmetric by construction (``pool`` changes nothing).
    """
    if _per_voxel(model):
        orbits, rows = _orbit_channels(structure, model)
        return orbits.broadcast(per_voxel_elf(model.net, rows))
    group, shape, orbits = _native_grid_and_orbits(structure, model)  # orbits before the features: their
    feats = cell_features(structure, shape=shape)                     # temporaries never meet the 22 channels
    out = predict_grid(model.net, feats, max_voxels=max_voxels, core=core, orbits=orbits)
    del feats
    if pool:
        out = pool_cell(out, group)
    return out


def _on_grid(native: np.ndarray, shape: Iterable[int] | None) -> np.ndarray:
    """The native-grid ELF on ``shape`` (Fourier interpolation), clipped to [0, 1], float64."""
    if shape is not None:
        shape = check_grid(shape, n_arrays=6)
        if tuple(shape) != native.shape:
            native = fourier_interpolate(native, shape)
    return np.clip(native, 0.0, 1.0).astype(np.float64)


def predict_elf(structure: Structure, shape: Iterable[int] | None = None, model: SurrogateModel | None = None,
                **kwargs) -> np.ndarray:
    """Surrogate ELF of ``structure`` on ``shape`` (default: the model's native grid), values in [0, 1].

    Args:
        structure: a periodic pymatgen structure.
        shape: output grid (nx, ny, nz); the ELF is Fourier-interpolated to it from the native grid.
        model: a :class:`SurrogateModel` (default: the shipped weights).
        **kwargs: passed to :func:`predict_native` (``max_voxels``, ``core`` of tiles, ``pool``).
    """
    model = model or load_model()
    with torch.inference_mode():
        out = predict_native(structure, model, **kwargs)
    return _on_grid(out, shape)


#: orbit representatives (rows) a batch of :func:`predict_many` gathers before running the network once
BATCH_ROWS = 2**14


def predict_many(structures: Iterable[Structure], shape: Iterable[int] | None = None,
                 model: SurrogateModel | None = None, shapes: list | None = None, **kwargs) -> list[np.ndarray]:
    """:func:`predict_elf` for many structures with one loaded model (``shape`` applies to each;
    ``shapes``: one grid per structure instead).

    A per-voxel model (the shipped one) runs its network once per batch of cells: the channels at
    every cell's orbit representatives are concatenated (up to :data:`BATCH_ROWS` rows) and the
    per-voxel branch runs once on them, which saves the per-call cost of the network for each cell;
    the ELF equals one cell at a time to a few ulps of the float32 network (< 1e-6, tested: the
    batch size and thread count choose its matrix kernels). Other models (or ``kwargs`` for
    :func:`predict_native`) go cell by cell.
    """
    model = model or load_model()
    structures = list(structures)
    grids = list(shapes) if shapes is not None else [shape] * len(structures)
    if len(grids) != len(structures):
        raise InputError(f"{len(grids)} grids for {len(structures)} structures")
    if kwargs or not _per_voxel(model):
        return [predict_elf(s, shape=g, model=model, **kwargs) for s, g in zip(structures, grids)]
    out: list[np.ndarray] = []
    pending: list[tuple] = []
    n_rows = 0

    def run() -> None:
        with torch.inference_mode():
            values = per_voxel_elf(model.net, np.concatenate([rows for _, rows in pending], axis=1))
        start = 0
        for orbits, rows in pending:
            out.append(_on_grid(orbits.broadcast(values[start:start + rows.shape[1]]), grids[len(out)]))
            start += rows.shape[1]
        pending.clear()

    for structure in structures:
        orbits, rows = _orbit_channels(structure, model)
        pending.append((orbits, rows))
        n_rows += rows.shape[1]
        if n_rows >= BATCH_ROWS:
            run()
            n_rows = 0
    if pending:
        run()
    return out


def timed_predict(structure: Structure, shape=None, model: SurrogateModel | None = None) -> tuple[np.ndarray, float]:
    """(ELF, wall seconds) of one prediction."""
    start = time.perf_counter()
    out = predict_elf(structure, shape=shape, model=model)
    return out, time.perf_counter() - start


def _training_cells(trained_on: dict | None) -> dict | None:
    """``trained_on`` metadata with its dataset named by its directory alone: members trained from
    different checkouts (models before session 15 stored the absolute path) compare equal."""
    if not trained_on or "dataset" not in trained_on:
        return trained_on
    return {**trained_on, "dataset": Path(trained_on["dataset"]).name}


def ensemble_models(members: list[SurrogateModel]) -> SurrogateModel:
    """The logit mean of per-voxel models as one model (:func:`~.model.merge_pointwise`), with its provenance.

    The members must have been trained on the same cells (equal ``trained_on`` metadata, the dataset
    compared by its directory name), which the ensemble keeps (the first member's), so its
    applicability domain (:mod:`.domain`) is theirs. ``ensemble`` lists the members' versions, training
    settings and validation MAE. Save it with :func:`save_model`.
    """
    net = merge_pointwise([m.net for m in members])  # refuses an empty list and live U-Nets
    trained_on = [m.metadata.get("trained_on") for m in members]
    if any(_training_cells(t) != _training_cells(trained_on[0]) for t in trained_on):
        raise ValueError("ensemble_models needs members trained on the same cells (their trained_on metadata differ)")
    metadata = {"trained_on": trained_on[0],
                "ensemble": {"how": "sigmoid of the mean of the members' logits, as one per-voxel branch "
                                    "(elf_workflows.surrogate.model.merge_pointwise)",
                             "members": [{"version": m.version,
                                          **{k: m.metadata[k] for k in ("created", "train_config", "val_mae")
                                             if k in m.metadata}} for m in members]},
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    net.eval()
    return SurrogateModel(net=net, version=f"surrogate-{weights_digest(net.state_dict())}", metadata=metadata)


def ship_model(src: str | Path, evaluation: dict | None = None, dest: str | Path | None = None) -> dict:
    """Copy a trained model file into the package data (``surrogate.pt``) and write ``surrogate.json``.

    The JSON holds the version, architecture, what the weights were trained on, and (optionally) the
    held-out evaluation summary. Returns that metadata.
    """
    model = load_model(src)
    dest = Path(dest) if dest is not None else Path(str(resources.files("elf_workflows.data")))
    version = save_model(model.net, dest / SHIPPED_WEIGHTS, model.metadata)
    assert version == model.version
    meta = {"version": model.version, "format": FORMAT, "config": model.config.to_dict(),
            "n_parameters": model.net.n_parameters(), **model.metadata}
    if evaluation is not None:
        meta["evaluation"] = evaluation
    (dest / SHIPPED_METADATA).write_text(json.dumps(meta, indent=1))
    _load_shipped.cache_clear()
    return meta
