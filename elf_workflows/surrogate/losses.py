"""Training losses: VOX (voxel error), HIST (soft histogram of ELF values), GRAD (finite-difference gradients),
balanced by learned uncertainty weights (Kendall, Gal & Cipolla, CVPR 2018): Σ_i exp(−s_i)·L_i + s_i.
"""

from __future__ import annotations

import torch
from torch import nn

TERMS = ("vox", "hist", "grad")


def vox_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute voxel error."""
    return (pred - target).abs().mean()


def soft_histogram(values: torch.Tensor, bins: int = 32, lo: float = 0.0, hi: float = 1.0,
                   width: float | None = None) -> torch.Tensor:
    """Differentiable histogram of ``values`` (per batch item, over all other axes), rows sum to 1.

    Each value spreads over the ``bins`` bin centres ``lo + (k + ½)(hi − lo)/bins`` with a Gaussian
    kernel of standard deviation ``width`` (default: one bin width); each value's weights are normalised
    to 1, so the histogram is a probability vector. Returns ``(B, bins)``.
    """
    step = (hi - lo) / bins
    width = step if width is None else width
    centres = lo + (torch.arange(bins, dtype=values.dtype, device=values.device) + 0.5) * step
    v = values.reshape(values.shape[0], -1, 1)
    w = torch.exp(-0.5 * ((v - centres) / width) ** 2)
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    return w.mean(1)


def hist_loss(pred: torch.Tensor, target: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Total-variation distance ½Σ|h_pred − h_target| between soft histograms (0 … 1), batch mean."""
    return 0.5 * (soft_histogram(pred, bins) - soft_histogram(target, bins)).abs().sum(-1).mean()


def finite_differences(x: torch.Tensor) -> list[torch.Tensor]:
    """Forward differences along the last three axes (no wrap: patches are not periodic)."""
    return [torch.diff(x, dim=d) for d in (-3, -2, -1)]


def grad_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of forward differences (per voxel step), averaged over the three axes."""
    terms = [(dp - dt).abs().mean() for dp, dt in zip(finite_differences(pred), finite_differences(target))]
    return torch.stack(terms).mean()


class UncertaintyWeighting(nn.Module):
    """Σ_i exp(−s_i)·L_i + s_i with learned log-variances s_i (one per term in :data:`TERMS`)."""

    def __init__(self, n_terms: int = len(TERMS)):
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(n_terms))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return (torch.exp(-self.log_vars) * losses + self.log_vars).sum()

    @torch.no_grad()
    def start_at(self, losses: torch.Tensor) -> None:
        """Set s_i = ln L_i, the minimum of the objective for the current losses.

        Called on the first batch of a run: the learned weights then start balanced (each term
        weighted by 1/L_i) instead of drifting there at the optimiser's step size, which takes
        hundreds of epochs when the terms differ by orders of magnitude.
        """
        self.log_vars.copy_(torch.log(losses.detach().clamp_min(1e-8)))

    def weights(self) -> list[float]:
        """The current weights exp(−s_i)."""
        return torch.exp(-self.log_vars.detach()).tolist()


def loss_terms(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The three terms (VOX, HIST, GRAD) as a tensor of shape (3,)."""
    return torch.stack([vox_loss(pred, target), hist_loss(pred, target), grad_loss(pred, target)])
