"""A linear head over fixed features, fitted as multinomial logistic regression (or, on
request, as one-vs-rest squared-hinge classifiers, as sklearn's ``LinearSVC``).

Shared by training (the linear probe before fine-tuning, ``training/probe.py``) and
``beet mmgenre --learn`` (a head in the user's own genres over the backbone's cached
features): one fitting routine, so the two cannot drift.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


class _SparseRows:
    """A sparse block x [shape=(rows, columns)] as CSR, with its transpose kept beside it:
    autograd's backward of ``torch.sparse.mm(csr, W.T)`` transposes x on every call, 30x
    the forward's time on a 12,000-song bag of words and n-grams."""

    def __init__(self, x: torch.Tensor) -> None:
        x = (x if x.is_sparse else x.to_sparse()).coalesce()
        self.csr = x.to_sparse_csr()
        self.csr_t = x.t().coalesce().to_sparse_csr()

    def times(self, weight: torch.Tensor) -> torch.Tensor:
        """x @ weight.T [shape=(rows, n_classes)] for weight [shape=(n_classes, columns)]."""
        return _SparseTimes.apply(weight, self)


class _SparseTimes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: torch.Tensor, x: _SparseRows) -> torch.Tensor:  # type: ignore[override]
        ctx.x = x
        return torch.sparse.mm(x.csr, weight.t().contiguous())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return torch.sparse.mm(ctx.x.csr_t, grad.contiguous()).t(), None


@dataclass(frozen=True)
class Block:
    """Columns ``start:stop`` of the head's input, and whether they are probed."""

    name: str
    start: int
    stop: int
    probed: bool


#: The losses :func:`fit_head` minimises.
LOSSES = ("cross_entropy", "squared_hinge")

#: A block whose share of non-zero inputs is below this is multiplied as a sparse matrix.
SPARSE_BELOW = 0.05


def fit_head(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, *, blocks: Sequence[Block],
             l2: Sequence[float], n_classes: int, init: tuple[torch.Tensor, torch.Tensor] | None = None,
             prior: torch.Tensor | None = None, max_iter: int = 300,
             loss: str = "cross_entropy") -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression (``loss="cross_entropy"``) by L-BFGS.

    x may be a sparse COO tensor (a large bag of words).
    Minimises ``sum_i w_i L_i / sum_i w_i + sum_b l2_b / 2 * ||W_b - P_b||^2`` over
    the given blocks' columns of x [shape=(rows, head_in)] and a bias, where ``prior``
    P [shape=(n_classes, the blocks' columns)] is what the weights shrink towards
    (zero when None: plain L2), L_i the cross-entropy of row i, or with
    ``loss="squared_hinge"`` ``sum_c max(0, 1 - t_ic z_ic)^2`` (t_ic = 1 for row i's
    class, else -1; z the logits): one-vs-rest linear SVMs, whose decision values a
    temperature then turns into probabilities. Returns (weight [shape=(n_classes, the
    blocks' columns)], bias [shape=(n_classes,)]).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")
    # Each block is multiplied only on the rows where it is not all zeros: a clip has
    # no bag of words, a lyrics-only example no audio, and skipping them makes the
    # fit several times faster on collections of separate clips and lyrics.
    parts = []
    for b in blocks:
        if x.is_sparse:  # a sparse COO x (a large bag of words): its block's non-empty rows
            xb = x if (b.start, b.stop) == (0, x.shape[1]) else x.index_select(1, torch.arange(b.start, b.stop))
            xb = xb.coalesce().float()
            rows = torch.unique(xb.indices()[0])
            xb = xb.index_select(0, rows)
        else:
            xb = x[:, b.start:b.stop].float()
            rows = torch.nonzero(xb.abs().sum(dim=1) > 0).flatten()
            xb = xb[rows].contiguous()
            if not xb.numel() or (xb != 0).float().mean() >= SPARSE_BELOW:
                parts.append((rows, xb))
                continue
        # A bag of words is ~1% filled: a sparse product is several times faster.
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            parts.append((rows, _SparseRows(xb)))
    sizes = [b.stop - b.start for b in blocks]
    weight = torch.zeros((n_classes, sum(sizes))) if init is None else init[0].float().clone()
    bias = torch.zeros(n_classes) if init is None else init[1].float().clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    wn = (w / w.sum()).float()
    bounds = np.cumsum([0, *sizes])
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6,
                            tolerance_change=1e-9, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = bias.expand(len(y), -1)
        penalty = weight.new_zeros(())
        for (rows, xb), lo, hi, c in zip(parts, bounds[:-1], bounds[1:], l2):
            wb = weight[:, lo:hi]
            logits = logits.index_add(0, rows, xb.times(wb) if isinstance(xb, _SparseRows) else xb @ wb.T)
            shrink = wb if prior is None else wb - prior[:, lo:hi]
            penalty = penalty + 0.5 * float(c) * shrink.pow(2).sum()
        if loss == "squared_hinge":
            signs = F.one_hot(y, n_classes).float() * 2 - 1
            per_row = F.relu(1 - signs * logits).pow(2).sum(dim=1)
        else:
            per_row = F.cross_entropy(logits, y, reduction="none")
        total = (per_row * wn).sum() + penalty
        total.backward()
        return total

    opt.step(closure)
    return weight.detach(), bias.detach()


__all__ = ["Block", "LOSSES", "fit_head"]
