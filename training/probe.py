"""Linear probe before fine-tuning (LP-FT: Kumar et al., "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution", ICLR 2022).

The fused head is one linear layer over ``[audio vector, HAN vector, bag of words]``.
Some of those inputs are fixed functions of the data when training starts: the
pretrained musicnn's features (frozen, or at their pretrained values before
fine-tuning) and the TF-IDF bag of words. Over them the best head is a convex problem,
multinomial logistic regression, which mini-batch training with early stopping solves
poorly on a few hundred examples: on the default model's lyrics, a head trained with
AdamW on the bag alone reached 49-51% validation accuracy where the same features
fitted to convergence reach 54%. So before the first epoch :func:`linear_probe` fits
the head's columns over those inputs by full-batch L-BFGS, with an L2 penalty per
block of columns chosen on the validation split. Columns over inputs that start
random and are trained (the paper's CNN, the HAN) start at zero, so the model
begins as the probe, and training fine-tunes everything from there; the probe is
also a candidate for the best epoch ("epoch 0").
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mmgenre_core.head import Block, fit_head

from .loader import BatchSpec, Table, eval_batch_specs, iterate_batches
from .metrics import compute_metrics

log = logging.getLogger(__name__)


@torch.no_grad()
def head_inputs(model: torch.nn.Module, table: Table, specs: Sequence[BatchSpec], *, crop_frames: int | None,
                device: torch.device) -> torch.Tensor:
    """What the head sees for each row of ``specs``, in eval mode: [shape=(rows, head_in)]."""
    captured: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        for batch in iterate_batches(table, specs, crop_frames):
            batch = batch.to(device)
            captured.append(model.head_inputs(batch.fused()).detach().float().cpu())
    finally:
        model.train(was_training)
    width = model.classifier.in_features
    return torch.cat(captured) if captured else torch.zeros((0, width))


def train_rows(table: Table, indices: np.ndarray, *, crop_frames: int | None, max_crops: int,
               batch_size: int) -> tuple[list[BatchSpec], np.ndarray]:
    """Batches of probe rows and the example of each row.

    An example with audio gives up to ``max_crops`` rows, crops of the training crop
    length spread evenly over its prepared log-mel (what training sees, without the
    randomness); one without audio gives one row.
    """
    frames = table.frames
    n_crops = 1
    if crop_frames is not None and frames > crop_frames:
        n_crops = max(1, min(max_crops, frames // crop_frames))
    starts = np.linspace(0, max(0, frames - (crop_frames or frames)), n_crops).round().astype(np.int64)
    rows, offsets = [], []
    for i in indices:
        for s in (starts if table.mel_row[i] >= 0 else starts[:1]):
            rows.append(i)
            offsets.append(s)
    rows_a, offsets_a = np.asarray(rows, dtype=np.int64), np.asarray(offsets, dtype=np.int64)
    no = np.zeros(len(rows_a), dtype=bool)
    specs = [BatchSpec(rows_a[s:s + batch_size], offsets_a[s:s + batch_size], no[s:s + batch_size],
                       no[s:s + batch_size]) for s in range(0, len(rows_a), batch_size)]
    return specs, rows_a


def linear_probe(model: torch.nn.Module, table: Table, train_idx: np.ndarray, val_idx: np.ndarray, *,
                 weights: np.ndarray | None, l2_grid: Sequence[float], crop_frames: int | None,
                 eval_crop_frames: int | None, max_crops: int, max_iter: int, device: torch.device,
                 batch_size: int, select: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
    """Fit the head's probed columns (see the module docstring) and write them into the model.

    ``weights``: per-example loss weights [shape=(len(table),)] or None; ``select``:
    validation metrics -> value to minimise (the training run's own selection rule).
    Each probed block's L2 penalty is chosen from ``l2_grid`` by coordinate search on
    the validation value (fits warm started); without a validation split the middle
    of the grid is used. Returns what was chosen and measured.
    """
    started = time.perf_counter()
    blocks = [b for b in model.head_blocks() if b.probed]
    if not blocks:
        return {"probed": []}
    specs, rows = train_rows(table, train_idx, crop_frames=crop_frames, max_crops=max_crops,
                             batch_size=batch_size)
    x = head_inputs(model, table, specs, crop_frames=crop_frames, device=device)
    y = torch.from_numpy(table.labels[rows])
    per_example = np.ones(len(table)) if weights is None else weights
    # An example's rows share its weight, so clips count as much as lyrics, not ten times more.
    share = 1.0 / np.bincount(rows)[rows]
    w = torch.from_numpy(per_example[rows] * share)
    n_classes = len(table.genres)

    x_val = y_val = None
    if len(val_idx):
        val_specs = eval_batch_specs(table, val_idx, batch_size=batch_size, mode="fused", crop_frames=eval_crop_frames)
        x_val = head_inputs(model, table, val_specs, crop_frames=eval_crop_frames, device=device)
        y_val = table.labels[val_idx]
    grid = sorted(float(v) for v in l2_grid)
    cols = torch.cat([torch.arange(b.start, b.stop) for b in blocks])
    fits: dict[tuple[float, ...], tuple[float, torch.Tensor, torch.Tensor, dict[str, Any]]] = {}
    last: tuple[torch.Tensor, torch.Tensor] | None = None

    def fit(l2: tuple[float, ...]) -> float:
        nonlocal last
        if l2 not in fits:
            weight, bias = fit_head(x, y, w, blocks=blocks, l2=l2, n_classes=n_classes, init=last,
                                    max_iter=max_iter)
            last = (weight, bias)  # warm start for the next penalty
            val: dict[str, Any] = {}
            value = 0.0
            if x_val is not None:
                probs = torch.softmax(x_val[:, cols].float() @ weight.T + bias, dim=-1).numpy()
                val = compute_metrics(y_val, probs, table.genres)
                value = select(val)
            log.debug("probe l2=%s: validation %s", l2, {k: val.get(k) for k in ("log_loss", "accuracy")})
            fits[l2] = (value, weight, bias, val)
        return fits[l2][0]

    # Coordinate search: one block's penalty at a time over the grid, the others fixed,
    # until nothing changes (blocks barely interact: their rows mostly differ).
    current = [grid[len(grid) // 2]] * len(blocks)
    fit(tuple(current))
    for _ in range(3 if x_val is not None else 0):
        before = list(current)
        for i in range(len(blocks)):
            current[i] = min(grid, key=lambda c: fit(tuple(current[:i] + [c] + current[i + 1:])))
        if current == before:
            break
    l2 = tuple(current)
    _, weight, bias, val = fits[l2]
    with torch.no_grad():
        head = model.classifier
        head.weight.zero_()
        head.weight[:, cols.to(head.weight.device)] = weight.to(head.weight)
        head.bias.copy_(bias.to(head.bias))
    summary = {
        "probed": [b.name for b in blocks], "l2": {b.name: c for b, c in zip(blocks, l2)},
        "train_rows": int(len(rows)), "fits": len(fits),
        "valid_accuracy": val.get("accuracy"), "valid_log_loss": val.get("log_loss"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("linear probe of %s: l2 %s chosen in %d fits on %d rows (%.1f s); validation "
             "accuracy %s, log loss %s", "+".join(summary["probed"]), summary["l2"], len(fits), len(rows),
             summary["seconds"], _fmt(val.get("accuracy")), _fmt(val.get("log_loss")))
    return summary


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


__all__ = ["Block", "head_inputs", "train_rows", "fit_head", "linear_probe"]
