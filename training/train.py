"""Train the fused CNN-HAN genre model (Nandy & Agrawal 2021) on any genre-labelled data.

    python training/train.py --config training/configs/fma_medium.json --out runs/fma_medium
    python training/train.py --config FILE.json --set train.lr=0.003 --set train.epochs=20 --out RUN_DIR
    python training/train.py --resume --out RUN_DIR           # continue from RUN_DIR/last.pt
    torchrun --nproc_per_node=4 training/train.py --config FILE.json --out RUN_DIR   # multi-GPU (DDP)

Writes ``RUN_DIR/config.json`` (the resolved config), ``RUN_DIR/model.pt`` (the epoch
with the best validation loss, a checkpoint ``mmgenre predict --model`` loads),
``RUN_DIR/last.pt`` (resume state, every epoch), ``RUN_DIR/metrics.json`` (per-epoch
history, best validation and test metrics for audio only, lyrics only and fused),
``RUN_DIR/skipped.tsv`` (clips that could not be used, with the reason),
``RUN_DIR/examples.csv`` (every example used: split, genre, artist, row in the prepared
log-mel array) and ``RUN_DIR/train.log``.

Steps: build the dataset (sources, splits, genres) -> prepare the audio once into
memory-mapped log-mels (cached, resumable) -> vocabulary of the training lyrics and
word vectors -> SGD with Nesterov momentum, early stopping on validation loss.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

from mmgenre_core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mmgenre_core.device import autocast as device_autocast
from mmgenre_core.device import autocast_dtype
from mmgenre_core.errors import ConfigError, MMGenreError
from mmgenre_core.storage import atomic_write_json

from training.build import LRSchedule, TrainData, build_model, crop_frames, load_data, make_optimizer
from training.config import TrainConfig, dump_config, load_config
from training.loader import Table, evaluate_modes, iterate_batches, predict, \
    recalibrate_batchnorm, train_batch_specs
from training.metrics import compute_metrics, format_report
from training.run_folder import add_log_file, write_config, write_examples, write_skipped
from training.runtime import Runtime, git_commit, seed_everything, setup_runtime
from training.state import TrainState, load_state, plain, save_state

log = logging.getLogger("training.train")


# --------------------------------------------------------------------------- #
# Loss and model selection
# --------------------------------------------------------------------------- #


def selection_value(cfg: TrainConfig, val: dict[str, Any]) -> float:
    """Lower is better."""
    if cfg.train.select == "val_acc":
        return -val.get("accuracy", 0.0)
    if cfg.train.select == "val_macro_f1":
        return -val.get("macro_f1", 0.0)
    return val.get("log_loss", float("inf"))


def example_weights(cfg: TrainConfig, table: Table) -> np.ndarray | None:
    """Loss weight of every example [shape=(len(table),)], or None for plain cross-entropy.

    ``balanced``: ``n / (k * count)`` per genre over the training split (sklearn's
    "balanced"). ``balanced_per_modality``: the same within each group of examples
    that have the same modalities (audio only, lyrics only, both), because each group
    is its own classification problem: on a collection of audio clips and separate
    lyrics, balancing over the union would weigh a genre's lyrics by how many clips
    of it there are. ``train.class_weight_power`` raises the weights to a power
    (0.5: their square root).
    """
    mode = cfg.train.class_weights
    if mode == "none":
        return None
    train_mask = table.splits == "train"
    groups = np.zeros(len(table), dtype=np.int64)
    if mode == "balanced_per_modality":
        groups = (table.mel_row >= 0).astype(np.int64) + 2 * (table.lyr_row >= 0).astype(np.int64)
    from training.window_head import genre_weights

    weights = np.zeros(len(table), dtype=np.float64)
    for g in np.unique(groups):
        members = groups == g
        per_genre = genre_weights(table.labels[members & train_mask], len(table.genres),
                                  power=cfg.train.class_weight_power)
        weights[members] = per_genre[table.labels[members]]
    return weights


def weighted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None, *,
                           label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy averaged with per-example ``weights`` [shape=(batch,)] (None: plain mean).

    Normalised by the sum of the weights, as ``F.cross_entropy(weight=...)`` does.
    """
    if weights is None:
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    losses = F.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing)
    return (losses * weights).sum() / weights.sum().clamp_min(1e-12)


def _compact(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without the bulky parts (for the checkpoint and the per-epoch history)."""
    return {k: v for k, v in metrics.items() if k not in ("confusion",)}


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #


def train(cfg: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
          data: TrainData | None = None) -> dict[str, Any]:
    """Run (or resume) a training run into ``out_dir``; returns the metrics written to metrics.json."""
    out = Path(out_dir)
    rt = setup_runtime(cfg.device)
    # Process-wide settings this run changes, restored afterwards (train() may be called in-process).
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    handler = None
    root_level = logging.getLogger().level
    try:
        if rt.main:
            out.mkdir(parents=True, exist_ok=True)
            handler = add_log_file(out / "train.log")
        return _train(cfg, out, rt, resume=resume, progress=progress, data=data)
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
            logging.getLogger().setLevel(root_level)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        if rt.ddp:
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, out: Path, rt: Runtime, *, resume: bool, progress: bool,
           data: TrainData | None) -> dict[str, Any]:
    t = cfg.train
    started = time.perf_counter()
    if rt.main:
        write_config(out, cfg)
        print(dump_config(cfg), flush=True)
    seed_everything(cfg.seed, cfg.deterministic)
    data = data or load_data(cfg, rt, progress=progress)
    table = data.table
    if rt.main:
        _describe_run(out, data)
    train_idx, val_idx, test_idx = (table.indices(s) for s in ("train", "valid", "test"))
    if len(train_idx) == 0:
        raise ConfigError("the training split is empty")

    # The model, the optimizer, the schedule, mixed precision and the loss weights.
    model = build_model(cfg, data).to(rt.device)
    train_forward: torch.nn.Module = model
    if rt.ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_forward = DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                            find_unused_parameters=True)
    opt = make_optimizer(model, t)
    schedule = LRSchedule(cfg)
    amp_dtype = autocast_dtype(rt.device) if t.amp else None
    amp = (lambda: device_autocast(rt.device)) if amp_dtype is not None else contextlib.nullcontext
    eval_amp = amp if amp_dtype is not None else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    weights = example_weights(cfg, table)
    crop, eval_crop = crop_frames(cfg, t.crop_seconds), crop_frames(cfg, t.eval_crop_seconds)
    vocab = data.vocab.to_list() if data.vocab else []

    state = TrainState()
    last_path = out / "last.pt"
    if resume:
        state = load_state(last_path, model=model, optimizer=opt, schedule=schedule, scaler=scaler,
                           vocab=vocab if data.vocab is not None else None)
        if rt.main:
            log.info("resuming from %s after epoch %d", last_path, state.next_epoch)

    metadata_base = {
        "name": cfg.name, "version": cfg.version, "trained_with": "training/train.py",
        "config": plain(cfg.to_dict()), "seed": cfg.seed, "git_commit": git_commit(),
        "dataset": plain({s: table.counts(s) for s in ("train", "valid", "test")}),
        "vectors": plain(data.vector_stats), "genres": list(table.genres),
    }

    def validate() -> dict[str, Any]:
        # On every rank (identical results, no communication needed).
        if not len(val_idx):
            return {}
        probs, y = predict(model, table, val_idx, mode="fused", device=rt.device,
                           batch_size=t.eval_batch_size, crop_frames=eval_crop, autocast=eval_amp)
        return _compact(compute_metrics(y, probs, table.genres))

    def save_best(epoch_number: int, val: dict[str, Any]) -> None:
        if not rt.main:
            return
        ckpt = Checkpoint.from_model(
            model, text_config=cfg.text_config(), genres=table.genres,
            vocab=vocab if model.config.use_lyrics else [],
            metadata={**metadata_base, "epoch": epoch_number,
                      "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
            metrics=plain({"valid": val}))
        save_checkpoint(out / "model.pt", ckpt)

    if t.frozen_heads:
        return _train_frozen_heads(cfg, out, rt, data, model, metadata_base, started)

    # Linear probe (training/probe.py): the head fitted over the frozen inputs is "epoch 0".
    probe: dict[str, Any] = {}
    if t.linear_probe and not resume:
        from training.probe import linear_probe

        probe = linear_probe(model, table, train_idx, val_idx, weights=weights, l2_grid=t.probe_l2,
                             crop_frames=crop, eval_crop_frames=eval_crop, max_crops=t.probe_crops,
                             max_iter=t.probe_max_iter, device=rt.device, batch_size=t.eval_batch_size,
                             select=lambda v: selection_value(cfg, v))
        metadata_base["linear_probe"] = plain(probe)
        if probe.get("probed"):
            val = validate()
            state.best_value = selection_value(cfg, val) if val else 1.0  # any epoch beats it
            state.best_epoch, state.best_val = -1, val
            save_best(0, val)
            if rt.main:
                print(f"epoch   0/{t.epochs} | linear probe of {'+'.join(probe['probed'])} | val loss "
                      f"{val.get('log_loss', float('nan')):.4f} acc {val.get('accuracy', float('nan')):.3f} *",
                      flush=True)

    # The loop: an epoch of training, batch-norm recalibration, validation, the best
    # epoch saved as model.pt, the state as last.pt; early stopping and the time budget.
    stopped_early = timed_out = False
    epoch_times: list[float] = []
    for epoch in range(state.next_epoch, t.epochs):
        if t.patience and state.bad_epochs >= t.patience:
            stopped_early = True  # (only reached when resuming a run that had already stopped)
            break
        t0 = time.perf_counter()
        lr = schedule.lr(epoch)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        rng = np.random.default_rng([cfg.seed, epoch])
        specs = train_batch_specs(table, train_idx, batch_size=t.batch_size, rng=rng, crop_frames=crop,
                                  lyrics_dropout=t.lyrics_dropout, audio_dropout=t.audio_dropout,
                                  rank=rt.rank, world_size=rt.world_size, max_batches=t.max_batches)
        train_loss, train_acc = _train_epoch(train_forward, opt, scaler, amp, table, specs, weights, crop, cfg, rt)
        if t.bn_recalibrate:
            # Every rank recalibrates on the same batches, so the models stay identical.
            recalibrate_batchnorm(model, table, train_idx, device=rt.device, batch_size=t.batch_size,
                                  crop_frames=crop, rng=np.random.default_rng([cfg.seed, epoch, 1]),
                                  max_batches=t.bn_recalibrate_batches, autocast=eval_amp)
        val = validate()
        val_loss = val.get("log_loss", float("nan"))
        schedule.observe(val_loss)
        # Without a validation split every epoch counts as the best (the last one is kept).
        value = selection_value(cfg, val) if val else float(-epoch)
        improved = value < state.best_value - 1e-9 or not math.isfinite(state.best_value)
        seconds = time.perf_counter() - t0
        epoch_times.append(seconds)
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                  "val_loss": val_loss, "val_acc": val.get("accuracy", float("nan")),
                  "val_macro_f1": val.get("macro_f1", float("nan")), "seconds": round(seconds, 3)}
        state.history.append(record)
        state.epoch = epoch
        if improved:
            state.best_value, state.best_epoch, state.bad_epochs, state.best_val = value, epoch, 0, val
            save_best(epoch + 1, val)
        else:
            state.bad_epochs += 1
        if rt.main:
            print(f"epoch {epoch + 1:3d}/{t.epochs} | train loss {train_loss:.4f} acc {train_acc:.3f} | "
                  f"val loss {val_loss:.4f} acc {record['val_acc']:.3f} | lr {lr:.2e} | {seconds:.1f} s"
                  f"{' *' if improved else ''}", flush=True)
            save_state(last_path, state, model=model, optimizer=opt, schedule=schedule, scaler=scaler,
                       vocab=vocab, config=cfg.to_dict())
        if val and t.patience and state.bad_epochs >= t.patience:
            stopped_early = True
            if rt.main:
                log.info("early stop: no better %s for %d epochs", t.select, t.patience)
            break
        if t.max_minutes is not None:
            elapsed = (time.perf_counter() - started) / 60
            if elapsed + max(epoch_times[-3:]) / 60 > t.max_minutes:
                timed_out = True
                if rt.main:
                    log.info("stopping: the next epoch would overrun max_minutes=%s", t.max_minutes)
                break

    # The best model: test (and final validation) metrics, calibration, model card.
    results: dict[str, Any] = {}
    if rt.main and (out / "model.pt").is_file():
        results = _finish_best(out, model, data, cfg, rt, state, val_idx, test_idx,
                               eval_crop=eval_crop, autocast=eval_amp)
    metrics = {
        "best_epoch": state.best_epoch + 1, "epochs_run": len(state.history), "stopped_early": stopped_early,
        "linear_probe": plain(probe),
        "timed_out": timed_out, "select": t.select, "best_value": state.best_value,
        "seconds": round(time.perf_counter() - started, 1),
        "seconds_per_epoch": round(float(np.mean(epoch_times)), 3) if epoch_times else None,
        "dataset": plain({s: table.counts(s) for s in ("train", "valid", "test")}),
        "genres": list(table.genres), "skipped": len(data.dataset.skipped) + len(table.dropped),
        "vectors": plain(data.vector_stats), "prepare": plain(data.prepare_stats),
        "prepared_folder": data.prepared_folder, "history": plain(state.history),
        "valid": plain(results.get("valid", {})), "test": plain(results.get("test", {})),
    }
    if rt.main:
        atomic_write_json(out / "metrics.json", plain(metrics))
        log.info("best epoch %d (%s %.4f); model: %s", state.best_epoch + 1, t.select, state.best_value,
                 out / "model.pt")
    return metrics


def _train_frozen_heads(cfg: TrainConfig, out: Path, rt: Runtime, data: TrainData, model: torch.nn.Module,
                        metadata: dict[str, Any], started: float) -> dict[str, Any]:
    """``train.frozen_heads``: the heads fitted on all the data but a test split (training/frozen_heads.py)."""
    from training.frozen_heads import train_frozen_heads

    if not rt.main:
        return {}
    heads = train_frozen_heads(cfg, out, data, model.cpu(), metadata)
    table = data.table
    metrics = {"frozen_heads": plain(heads), "seconds": round(time.perf_counter() - started, 1),
               "dataset": plain({s: table.counts(s) for s in ("train", "valid", "test")}),
               "genres": list(table.genres), "skipped": len(data.dataset.skipped) + len(table.dropped),
               "vectors": plain(data.vector_stats), "prepare": plain(data.prepare_stats),
               "prepared_folder": data.prepared_folder}
    atomic_write_json(out / "metrics.json", plain(metrics))
    log.info("heads fitted on %d examples in %.0f s; model: %s", len(table) - heads.get("held_out_test", 0),
             metrics["seconds"], out / "model.pt")
    return metrics


def _describe_run(out: Path, data: TrainData) -> None:
    """skipped.tsv and examples.csv in the run folder; the split sizes, genres and vocabulary logged."""
    table = data.table
    write_skipped(out, data)
    write_examples(out, data)
    for split in ("train", "valid", "test"):
        c = table.counts(split)
        log.info("%s: %d examples (%d with audio, %d with lyrics, %d with both)", split, c["examples"],
                 c["audio"], c["lyrics"], c["both"])
    log.info("genres (%d): %s", len(table.genres), ", ".join(table.genres))
    if data.vector_stats:
        log.info("vocabulary %d words, %.0f%% with a pretrained vector (%s)", data.vector_stats["words"],
                 100 * data.vector_stats["coverage"], data.vector_stats.get("source"))


def _train_epoch(train_forward: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 amp: Any, table: Table, specs: list, weights: np.ndarray | None, crop: int | None,
                 cfg: TrainConfig, rt: Runtime) -> tuple[float, float]:
    """One pass over the batches ``specs``: returns the (weighted) training loss and accuracy,
    summed over every DDP rank."""
    t = cfg.train
    params = [p for p in train_forward.parameters() if p.requires_grad]  # for clipping, in model order
    train_forward.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)
    correct = torch.zeros((), dtype=torch.int64, device=rt.device)
    seen = 0
    batches = iterate_batches(table, specs, crop, num_workers=t.num_workers, pin_memory=rt.device.type == "cuda")
    for spec, batch in zip(specs, batches):  # batches come in the order of their specs
        batch = batch.to(rt.device, non_blocking=True)
        with amp():
            logits = train_forward(batch.fused())
        w = None if weights is None else torch.from_numpy(weights[spec.index]).float().to(rt.device)
        loss = weighted_cross_entropy(logits.float(), batch.y, w, label_smoothing=t.label_smoothing)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if t.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        scaler.step(opt)
        scaler.update()
        loss_sum += loss.detach().double() * batch.size
        correct += (logits.detach().argmax(-1) == batch.y).sum()
        seen += batch.size
    if rt.ddp:
        tot = torch.tensor([loss_sum.item(), float(correct.item()), float(seen)], dtype=torch.float64,
                           device=rt.device)
        torch.distributed.all_reduce(tot)
        return (tot[0] / tot[2]).item(), (tot[1] / tot[2]).item()
    return loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1)


def _finish_best(out: Path, model: torch.nn.Module, data: TrainData, cfg: TrainConfig,
                 rt: Runtime, state: TrainState, val_idx: np.ndarray, test_idx: np.ndarray, *,
                 eval_crop: int | None, autocast: Any) -> dict[str, Any]:
    """Reload model.pt, score it on every mode of the validation and test splits, calibrate it,
    stamp its card and save it again; returns the per-split results."""
    table = data.table
    best = load_checkpoint(out / "model.pt")
    model.load_state_dict(best.state_dict)
    results: dict[str, Any] = {}
    for split, idx in (("valid", val_idx), ("test", test_idx)):
        if len(idx):
            results[split] = evaluate_modes(model, table, idx, device=rt.device,
                                            batch_size=cfg.train.eval_batch_size, crop_frames=eval_crop,
                                            autocast=autocast)
    if "test" in results:
        print("test split:\n" + format_report(results["test"], table.genres), flush=True)
    # The checkpoint carries its own numbers (test included) for `mmgenre info`.
    best.metrics = plain({"valid": _compact(results.get("valid", {}).get("fused", state.best_val)),
                          "test": {m: _compact(r) for m, r in results.get("test", {}).items()}})
    best.metadata["epochs_run"] = len(state.history)
    from training.calibrate import calibrate_checkpoint
    from training.model_card import stamp

    # Temperatures fitted on the validation split as inference computes; RUN_DIR/reliability.png.
    best.metadata["calibration"] = calibrate_checkpoint(best, data, out, rt.device)
    stamp(best, cfg.card)  # the text `mmgenre info` prints
    save_checkpoint(out / "model.pt", best)
    return results


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the mmgenre CNN-HAN genre model.")
    p.add_argument("--config", help="training config (JSON); with --resume, default RUN_DIR/config.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (dotted keys, JSON values), e.g. train.lr=0.003")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("gensim").setLevel(logging.WARNING)
    try:
        config_path = args.config
        if args.resume and config_path is None:
            config_path = str(Path(args.out) / "config.json")
        if config_path is None:
            p.error("--config is required (unless --resume)")
        cfg = load_config(config_path, args.overrides)
        train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    except MMGenreError as exc:
        print(f"train.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130
    return 0


__all__ = ["train", "selection_value", "example_weights", "weighted_cross_entropy", "main"]

if __name__ == "__main__":
    sys.exit(main())
