"""A lean periodic 3D U-Net: every convolution pads circularly.

Stride-1 convolutions with circular padding commute with any periodic translation of the grid;
2×2×2 average pooling and 2×2×2 transposed convolutions commute with translations by even numbers
of voxels at their level. The whole network is therefore *exactly* equivariant to periodic shifts
by multiples of ``2**(levels-1)`` voxels along each axis (the "grid-commensurate" shifts), on any
grid whose sizes are multiples of ``2**(levels-1)``. There are no normalisation layers (batch or
group statistics would couple distant voxels and break both the tiled = untiled identity and
locality); inputs are bounded by construction (:mod:`.features`).

The output is an ELF in [0, 1] (sigmoid).

Signal propagation. With no normalisation layers, the U-Net keeps its activations at unit scale by
two means: its input is standardised channel by channel (``input_shift``/``input_scale``, buffers
set from the training cells, :meth:`PeriodicUNet.set_input_statistics`; the pointwise branch reads
the raw features), and every convolution starts with weights of standard deviation
``gain/√fan_in``, ``gain = 1/√E[SiLU(z)²] ≈ 1.68`` for z ~ N(0, 1) (the SiLU analogue of He
initialisation; 1 for the linear transposed convolutions). PyTorch's default initialisation (a
standard deviation of 1/√(3·fan_in)) shrank the signal about threefold per layer: the features that
reach the head of a fresh 16-channel U-Net varied by 0.003 for inputs varying by 0.17, too little for
the head to learn from (docs/surrogate.md, session 6).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from elf_workflows.surrogate.features import N_FEATURES

if TYPE_CHECKING:
    from elf_workflows.symmetry import VoxelOrbits


@dataclass(frozen=True)
class UNetConfig:
    """Architecture and grid conventions of a surrogate model.

    Attributes:
        in_channels: input feature channels.
        base_channels: channels at full resolution (doubled per level).
        levels: resolution levels (``levels - 1`` poolings by 2).
        convs_per_level: 3×3×3 convolutions per block.
        spacing: native voxel spacing (Å) the model was trained at.
        point_channels: width of the pointwise (1×1×1) branch added to the U-Net logits (0: none).
        point_groups: independent blocks of the branch's hidden layer (1: dense). An ensemble merged by
            :func:`merge_pointwise` keeps one block per member, so its hidden layer costs the sum of
            the members' and not the square of its width.
    """

    in_channels: int = N_FEATURES
    base_channels: int = 16
    levels: int = 3
    convs_per_level: int = 2
    spacing: float = 0.2
    point_channels: int = 128
    point_groups: int = 1

    @property
    def multiple(self) -> int:
        """Grid sizes must be multiples of this (the product of the pooling strides)."""
        return 2 ** (self.levels - 1)

    def receptive_radius(self) -> int:
        """A bound (voxels) on how far an output voxel's dependence reaches into the input."""
        r = 0
        for level in range(self.levels):
            stride = 2**level
            blocks = 1 if level == self.levels - 1 else 2  # encoder + decoder, bottleneck once
            r += blocks * self.convs_per_level * stride
            if level < self.levels - 1:
                r += 2 * stride  # pooling down + transposed conv up
        return r

    def halo(self) -> int:
        """Tile overlap (voxels): the receptive radius rounded up to a multiple of :attr:`multiple`."""
        m = self.multiple
        return int(math.ceil(self.receptive_radius() / m) * m)

    def to_dict(self) -> dict:
        return asdict(self)


#: 1/√E[SiLU(z)²] for z ~ N(0, 1): keeps unit-variance activations through a SiLU layer
SILU_GAIN = 1.6776


def _init_conv(conv: nn.Module, gain: float) -> None:
    """Weights N(0, gain²/fan_in), where fan_in counts the inputs summed into one output voxel; zero bias."""
    w = conv.weight
    if isinstance(conv, nn.ConvTranspose3d):  # stride = kernel: one input voxel per output voxel
        fan_in = w.shape[0]
    else:
        fan_in = w.shape[1] * math.prod(w.shape[2:])
    nn.init.normal_(w, 0.0, gain / math.sqrt(fan_in))
    nn.init.zeros_(conv.bias)


def _onednn_inference(x: torch.Tensor) -> bool:
    """Whether :func:`circular_conv` may call oneDNN directly: CPU float32 without autograd."""
    return (not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and hasattr(torch, "mkldnn_convolution"))


def circular_conv(conv: nn.Conv3d, x: torch.Tensor, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """``conv(x)`` for a stride-1 Conv3d with circular padding, the same numbers to float rounding.

    At CPU inference it pads and calls oneDNN itself: PyTorch's dispatch sends one small 3D input
    (batch 1, few channels) to its native im2col kernel, which is 1.4–2.3× slower here on the
    shipped U-Net (docs/surrogate.md, speed). Training batches and other devices take ``conv``.
    ``weight``/``bias``: used instead of the module's (the standardisation folded into the first
    convolution, :meth:`PeriodicUNet.unet_features`).
    """
    if weight is None and (conv.kernel_size == (1, 1, 1) or not _onednn_inference(x)):
        return conv(x)
    weight = conv.weight if weight is None else weight
    bias = conv.bias if bias is None else bias
    pad = [p for size in reversed(conv.kernel_size) for p in (size // 2, size // 2)]
    padded = nn.functional.pad(x, pad, mode="circular")
    if _onednn_inference(x):
        return torch.mkldnn_convolution(padded, weight, bias, (0, 0, 0), conv.stride, conv.dilation, conv.groups)
    return nn.functional.conv3d(padded, weight, bias, conv.stride, 0, conv.dilation, conv.groups)


def run_block(block: nn.Sequential, x: torch.Tensor, first: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """A :func:`_block` applied to ``x``, its convolutions through :func:`circular_conv` (``first``: the
    first convolution's weight and bias instead of its own)."""
    for i, layer in enumerate(block):
        if isinstance(layer, nn.Conv3d):
            x = circular_conv(layer, x, *(first if first is not None and i == 0 else (None, None)))
        else:
            x = layer(x)
    return x


def _block(c_in: int, c_out: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv3d(c_in if i == 0 else c_out, c_out, 3, padding=1, padding_mode="circular"), nn.SiLU()]
    return nn.Sequential(*layers)


class PeriodicUNet(nn.Module):
    """3D U-Net on periodic grids; ``forward`` maps features ``(B, C, nx, ny, nz)`` to ELF ``(B, 1, nx, ny, nz)``."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config or UNetConfig()
        c, n = self.config.base_channels, self.config.convs_per_level
        chans = [c * 2**i for i in range(self.config.levels)]
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        c_prev = self.config.in_channels
        for ch in chans:
            self.down.append(_block(c_prev, ch, n))
            c_prev = ch
        for i in range(self.config.levels - 2, -1, -1):
            self.up.append(nn.ConvTranspose3d(chans[i + 1], chans[i], 2, stride=2))
            self.dec.append(_block(2 * chans[i], chans[i], n))
        self.head = nn.Conv3d(chans[0], 1, 1)
        p, groups = self.config.point_channels, self.config.point_groups
        if p % groups:
            raise ValueError(f"point_channels {p} is not a multiple of point_groups {groups}")
        self.point = (nn.Sequential(nn.Conv3d(self.config.in_channels, p, 1), nn.SiLU(), nn.Conv3d(p, p, 1, groups=groups),
                                    nn.SiLU(), nn.Conv3d(p, 1, 1)) if p else None)
        if self.point is not None:  # start from the U-Net alone; the branch grows in smoothly
            nn.init.zeros_(self.point[-1].weight)
            nn.init.zeros_(self.point[-1].bias)
        self.pool = nn.AvgPool3d(2)
        for module in [*self.down.modules(), *self.dec.modules()]:
            if isinstance(module, nn.Conv3d):
                _init_conv(module, SILU_GAIN)
        for module in self.up:
            _init_conv(module, 1.0)
        self.register_buffer("input_shift", torch.zeros(self.config.in_channels))
        self.register_buffer("input_scale", torch.ones(self.config.in_channels))

    #: buffers that model files written before session 6 lack (loaded as the identity)
    OPTIONAL_BUFFERS = ("input_shift", "input_scale")

    @torch.no_grad()
    def set_input_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardise the U-Net's input: channel c enters as (x_c − mean_c)/std_c (std floored at 1e-6)."""
        self.input_shift.copy_(torch.as_tensor(np.asarray(mean, np.float32)))
        self.input_scale.copy_(torch.as_tensor(np.maximum(np.asarray(std, np.float32), 1e-6)))

    def logits(self, x: torch.Tensor, point: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-sigmoid output ``(B, 1, ...)``; ``point``: the per-voxel branch's output when already known
        (:func:`predict_grid` evaluates it once per voxel orbit)."""
        m = self.config.multiple
        inputs = x
        runs_unet = torch.is_grad_enabled() or self.unet_active()
        if runs_unet and any(s % m for s in x.shape[2:]):
            raise ValueError(f"grid {tuple(x.shape[2:])} is not a multiple of {m} along every axis")
        if torch.is_grad_enabled():
            x = (x - self.input_shift[:, None, None, None]) / self.input_scale[:, None, None, None]
            out = self.head(self.unet_features(x))
        elif not runs_unet:  # the head reads nothing: the U-Net's output is the head's bias, exactly
            out = self.head.bias.reshape(1, 1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        else:  # inference: no standardised copy of the input (a 128³ tile's is 0.18 GB)
            out = self.head(self.unet_features(x, raw=True))
        if self.point is None:
            return out
        return out + (self.pointwise(inputs) if point is None else point)

    def unet_active(self) -> bool:
        """Whether the U-Net's head reads its features (a head with all-zero weights outputs its bias alone)."""
        return bool(self.head.weight.detach().any())

    @torch.no_grad()
    def drop_unet(self) -> float:
        """Zero the head's weights, leaving the per-voxel branch plus a constant; return the largest |weight| removed.

        For weights whose U-Net stage learned nothing (sessions 9–13's shipped ones: its output varied
        by < 1e-6 in logit over a cell, docs/surrogate.md), inference then skips the U-Net; models trained
        with ``--epochs 0`` (the shipped ones since) keep the zero head they start with. Training still runs it.
        """
        largest = float(self.head.weight.abs().max())
        self.head.weight.zero_()
        return largest

    @torch.no_grad()
    def unet_alive_fraction(self, x: torch.Tensor) -> float:
        """Fraction of the U-Net's last-layer features (what the head reads) with |value| > 1e-3, for raw input ``x``.

        Its blocks end in SiLU: a unit pushed far negative outputs ≈ 0 and passes no gradient, so a U-Net
        whose fraction reaches 0 is dead for good and outputs the head's bias alone (what happened to
        sessions 9–13's shipped weights at ``--lr 2e-3``, docs/surrogate.md). 1 for a fresh U-Net.
        """
        return float((self.unet_features(x, raw=True).abs() > 1e-3).float().mean())

    def _standardising_first_conv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first convolution's (weight, bias) acting on raw input as it acts on standardised input.

        conv((x − μ)/σ) = conv'(x) with W' = W/σ and b' = b − Σ W μ/σ (sum over input channels and the
        kernel): exact, because circular padding pads with the field itself (never with zeros).
        """
        conv = self.down[0][0]
        scale = self.input_scale[None, :, None, None, None]
        shift = self.input_shift[None, :, None, None, None]
        return conv.weight / scale, conv.bias - (conv.weight * shift / scale).sum(dim=(1, 2, 3, 4))

    def unet_features(self, x: torch.Tensor, raw: bool = False) -> torch.Tensor:
        """The U-Net's last decoder output ``(B, base_channels, ...)`` for standardised input ``x``: what the head reads.

        ``raw``: ``x`` is the raw input, standardised inside the first convolution (:meth:`_standardising_first_conv`).
        """
        skips = []
        first = self._standardising_first_conv() if raw else None
        for i, block in enumerate(self.down):
            x = run_block(block, x, first if i == 0 else None)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, dec in zip(self.up, self.dec):
            x = up(x)
            x = run_block(dec, torch.cat([x, skips.pop()], dim=1))
        return x

    def pointwise(self, x: torch.Tensor, chunk_voxels: int = 2**12) -> torch.Tensor:
        """The per-voxel branch; without autograd it runs in slabs of ≤ ``chunk_voxels`` voxels.

        Its ``point_channels``-wide hidden layers would otherwise dominate inference memory on big
        grids (128 channels × 4 B per voxel each), and slabs that stay in cache are 1.3–1.6× faster
        from 20³ voxels up (docs/surrogate.md, speed); slabs give the identical result since every
        layer is 1×1×1.
        """
        run = self.point if self.config.point_groups == 1 else self._grouped_pointwise
        per_slab = x.shape[0] * math.prod(x.shape[3:])
        if torch.is_grad_enabled() or per_slab * x.shape[2] <= chunk_voxels:
            return run(x)
        step = max(1, chunk_voxels // per_slab)
        return torch.cat([run(x[:, :, i:i + step]) for i in range(0, x.shape[2], step)], dim=2)

    def _grouped_pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """The branch on ``(B, C, ...)`` as row-wise matrix products, :func:`pointwise_rows` (a grouped
        1×1×1 convolution is several times slower on CPU than its blocks' products)."""
        rows = pointwise_rows(self.point, x.movedim(1, -1).reshape(-1, x.shape[1]), self.config.point_groups)
        return rows.reshape(x.shape[0], *x.shape[2:], 1).movedim(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def pointwise_rows(point: nn.Sequential, rows: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """The 1×1×1-convolution branch ``point`` applied to rows ``(n, C)`` of voxel features, ``(n, 1)``.

    As matrix products (several times faster than 1×1×1 convolutions on rows). A hidden layer of
    ``groups`` blocks (:attr:`UNetConfig.point_groups`) runs block by block on column slices of the
    first layer's output, each block's output going straight into the last layer: no block-diagonal
    zeros, no copies (2–2.5× faster on CPU than a batched product of the blocks, which transposes).
    """
    first, hidden, last = point[0], point[2], point[4]
    inplace = not torch.is_grad_enabled()  # autograd keeps each SiLU's input
    silu = nn.functional.silu
    x = silu(nn.functional.linear(rows, first.weight.flatten(1), first.bias), inplace=inplace)
    if groups == 1:
        x = silu(nn.functional.linear(x, hidden.weight.flatten(1), hidden.bias), inplace=inplace)
        return nn.functional.linear(x, last.weight.flatten(1), last.bias)
    k = x.shape[1] // groups
    w_hidden, w_last = hidden.weight.flatten(1), last.weight.flatten(1)  # (p, k): block j is rows j·k…; (1, p)
    out = None
    for j in range(groups):  # one block per ensemble member
        cols = slice(j * k, (j + 1) * k)
        h = silu(nn.functional.linear(x[:, cols], w_hidden[cols], hidden.bias[cols]), inplace=inplace)
        term = nn.functional.linear(h, w_last[:, cols])
        out = term if out is None else out + term
    return out + last.bias


def periodic_tiles(shape: tuple[int, int, int], core: int, halo: int):
    """Yield ``(src_index, dst_slices)`` covering a periodic grid with overlapping tiles.

    ``src_index`` is an ``np.ix_`` tuple of wrapped indices (core + halo on both sides, a tile may
    wrap around a small cell more than once); ``dst_slices`` the core region it fills.
    """
    starts = [range(0, n, core) for n in shape]
    for ox in starts[0]:
        for oy in starts[1]:
            for oz in starts[2]:
                origin = (ox, oy, oz)
                sizes = [min(core, n - o) for n, o in zip(shape, origin)]
                idx = [np.arange(o - halo, o + s + halo) % n for o, s, n in zip(origin, sizes, shape)]
                yield np.ix_(*idx), tuple(slice(o, o + s) for o, s in zip(origin, sizes))


#: voxels of one network pass at inference (bigger cells run in tiles): 128³ keeps a 256³ cell in 4 GB
MAX_PASS_VOXELS = 128**3


def pointwise_on_orbits(model: PeriodicUNet, x: torch.Tensor, orbits: VoxelOrbits) -> torch.Tensor:
    """The per-voxel branch of ``x`` ``(C, nx, ny, nz)`` run once per voxel orbit, ``(1, 1, nx, ny, nz)``.

    The features are fields with the structure's symmetry (:mod:`.features`), so every voxel of an
    orbit has the same feature vector (to float rounding) and the branch, which reads one voxel,
    the same output: it runs on the orbits' representatives (1/48 of a cubic grid) and is broadcast.
    """
    reps = torch.from_numpy(orbits.representatives)
    values = model.pointwise(x.reshape(x.shape[0], -1)[:, reps][None, :, :, None, None]).reshape(-1)
    return values[torch.from_numpy(orbits.labels)].reshape(1, 1, *x.shape[1:])


@torch.no_grad()
def per_voxel_elf(model: PeriodicUNet, rows: np.ndarray) -> np.ndarray:
    """ELF of a model whose U-Net is dropped (:meth:`PeriodicUNet.drop_unet`) from feature columns ``(C, n)``, ``(n,)``.

    sigmoid(head bias + per-voxel branch): the whole network's output at those voxels, exactly.
    """
    if model.unet_active() or model.point is None:
        raise ValueError("per_voxel_elf needs a model whose U-Net is dropped and which has a per-voxel branch")
    x = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))[None, :, :, None, None]
    return torch.sigmoid(model.head.bias + model.pointwise(x)).reshape(-1).numpy()


@torch.no_grad()
def predict_grid(model: PeriodicUNet, features: np.ndarray, max_voxels: int = MAX_PASS_VOXELS,
                 core: int | None = None, orbits: VoxelOrbits | None = None) -> np.ndarray:
    """Run the network on a whole periodic cell, ``features`` ``(C, nx, ny, nz)`` → ELF ``(nx, ny, nz)``.

    Cells up to ``max_voxels`` run in one pass (circular padding = exact periodicity). Larger ones
    run in overlapping periodic tiles of ``core`` voxels plus a halo of :meth:`UNetConfig.halo` on
    each side; tile origins are multiples of the pooling stride, so every core voxel sees exactly the
    receptive field it sees untiled and the result equals untiled inference to float rounding.
    ``orbits``: the voxel orbits of the structure's group on this grid (:func:`elf_workflows.symmetry.voxel_orbits`),
    for features with that symmetry; the per-voxel branch then runs once per orbit
    (:func:`pointwise_on_orbits`), the same numbers to float rounding.
    """
    cfg = model.config
    shape = features.shape[1:]
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    point = None
    if orbits is not None and model.point is not None and len(orbits) < math.prod(shape):
        point = pointwise_on_orbits(model, x, orbits)
    if core is None and math.prod(shape) <= max_voxels:
        return torch.sigmoid(model.logits(x[None], point))[0, 0].numpy()
    halo = cfg.halo()
    if core is None:
        side = int(round(max_voxels ** (1 / 3)))
        core = max(cfg.multiple, (side - 2 * halo) // cfg.multiple * cfg.multiple)
    if core % cfg.multiple:
        raise ValueError(f"tile core {core} is not a multiple of {cfg.multiple}")
    out = np.empty(shape, dtype=np.float32)
    for src, dst in periodic_tiles(shape, core, halo):
        tile = x[(slice(None),) + src]
        pred = torch.sigmoid(model.logits(tile[None], None if point is None else point[(slice(None), slice(None)) + src]))[0, 0]
        sizes = [d.stop - d.start for d in dst]
        out[dst] = pred[halo:halo + sizes[0], halo:halo + sizes[1], halo:halo + sizes[2]].numpy()
    return out


@torch.no_grad()
def merge_pointwise(members: list[PeriodicUNet]) -> PeriodicUNet:
    """One per-voxel model whose logit is the mean of the members' logits: an ensemble as a single branch.

    Each member must be a per-voxel model (U-Net dropped, :meth:`PeriodicUNet.drop_unet`) of the same
    input channels and spacing. The merged branch stacks the members' hidden units side by side
    (first layer concatenated, hidden layer one block per member, last layer and biases averaged), so
    its width is the sum of theirs and its output is sigmoid(mean of the members' logits), exactly up
    to float rounding (tested); the file format is that of any per-voxel model. Members whose hidden
    blocks are all of one size give a grouped hidden layer (:attr:`UNetConfig.point_groups`, the sum of
    theirs), which :meth:`PeriodicUNet.pointwise` runs block by block (:func:`pointwise_rows`) at the
    sum of the members' cost; others a dense block-diagonal one. The U-Net weights (unused) and input statistics come from the first member.
    """
    if not members:
        raise ValueError("merge_pointwise needs at least one model")
    first = members[0]
    for m in members:
        if m.point is None or m.unet_active():
            raise ValueError("merge_pointwise needs per-voxel models (U-Net dropped, per-voxel branch present)")
        if (m.config.in_channels, m.config.spacing) != (first.config.in_channels, first.config.spacing):
            raise ValueError("merge_pointwise needs members of the same input channels and spacing")
    widths = [m.config.point_channels for m in members]
    blocks = {m.config.point_channels // m.config.point_groups for m in members}
    groups = sum(m.config.point_groups for m in members) if len(blocks) == 1 else 1
    merged = PeriodicUNet(replace(first.config, point_channels=sum(widths), point_groups=groups))
    merged.load_state_dict({k: v for k, v in first.state_dict().items() if not k.startswith("point.")}, strict=False)
    n = len(members)
    layers = [[m.point[i] for m in members] for i in (0, 2, 4)]
    merged.point[0].weight.copy_(torch.cat([c.weight for c in layers[0]], 0))
    merged.point[0].bias.copy_(torch.cat([c.bias for c in layers[0]]))
    if groups > 1:  # the members' blocks, one after the other
        merged.point[2].weight.copy_(torch.cat([c.weight for c in layers[1]], 0))
    else:
        merged.point[2].weight.zero_()
        start = 0
        for m, w in zip(members, widths):
            merged.point[2].weight[start:start + w, start:start + w] = _dense_hidden_weight(m)
            start += w
    merged.point[2].bias.copy_(torch.cat([c.bias for c in layers[1]]))
    merged.point[4].weight.copy_(torch.cat([c.weight for c in layers[2]], 1) / n)
    merged.point[4].bias.copy_(sum(c.bias for c in layers[2]) / n)
    merged.head.weight.zero_()
    merged.head.bias.copy_(sum(m.head.bias for m in members) / n)
    return merged


def _dense_hidden_weight(net: PeriodicUNet) -> torch.Tensor:
    """The per-voxel branch's hidden-layer weight as a dense ``(p, p, 1, 1, 1)`` block-diagonal matrix."""
    weight, groups = net.point[2].weight, net.config.point_groups
    if groups == 1:
        return weight
    k = weight.shape[0] // groups
    return torch.block_diag(*weight.reshape(groups, k, k)).reshape(groups * k, groups * k, 1, 1, 1)
