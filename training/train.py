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
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

from mmgenre_core.checkpoint import Checkpoint, save_checkpoint
from mmgenre_core.device import autocast as device_autocast
from mmgenre_core.device import autocast_dtype, resolve_device
from mmgenre_core.errors import ConfigError, MMGenreError
from mmgenre_core.storage import atomic_torch_save, atomic_write_json
from mmgenre_core.model import GenreModel
from mmgenre_core.text import Vocabulary

from training import REPO_ROOT
from training.config import TrainConfig, dump_config, load_config, model_config_for, resolve_path
from training.datasets import Dataset, build_dataset
from training.loader import FusedForward, Table, build_table, evaluate_modes, iterate_batches, predict, \
    recalibrate_batchnorm, train_batch_specs
from training.lyrics_data import build_vocabulary, tokenize_all
from training.metrics import compute_metrics, format_report
from training.prepare import prepare_dataset
from training.word_vectors import embedding_matrix, load_vectors

log = logging.getLogger("training.train")

RESUME_FORMAT = "mmgenre-train-state"


# --------------------------------------------------------------------------- #
# Distributed / device
# --------------------------------------------------------------------------- #


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def ddp(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.ddp:
            torch.distributed.barrier()


def setup_runtime(device_name: str) -> Runtime:
    """Single process, or DDP when launched by ``torchrun`` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Runtime(resolve_device(device_name))
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    base = resolve_device(device_name)
    if base.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = base, "gloo"
    dist.init_process_group(backend=backend)
    return Runtime(device, rank, local_rank, world)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=5, check=True)
        return out.stdout.strip() or None
    except Exception:  # noqa: BLE001 - no git, not a checkout...
        return None


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #


@dataclass
class TrainData:
    dataset: Dataset
    table: Table
    vocab: Vocabulary | None
    embedding: np.ndarray | None
    vector_stats: dict[str, Any]
    prepared_folder: str | None
    prepare_stats: dict[str, Any]


def load_data(cfg: TrainConfig, rt: Runtime | None = None, *, progress: bool = True) -> TrainData:
    """Dataset -> prepared log-mels -> vocabulary and vectors -> example table."""
    rt = rt or Runtime(torch.device("cpu"))
    dataset = build_dataset(cfg)
    text_config = cfg.text_config()
    prepared = None
    prepare_stats: dict[str, Any] = {}
    audio_examples = [e for e in dataset.examples if e.path]
    if audio_examples and cfg.model.get("use_audio", True):
        cache = resolve_path(cfg.prepare.cache_dir)
        kwargs = dict(name=cfg.name, workers=cfg.prepare.workers, chunk_size=cfg.prepare.chunk_size,
                      progress=progress and rt.main)
        if rt.main:
            prepared = prepare_dataset(audio_examples, cfg.prepare_audio_config(), cache, **kwargs)
        rt.barrier()
        if not rt.main:
            prepared = prepare_dataset(audio_examples, cfg.prepare_audio_config(), cache, **kwargs)
        prepare_stats = dict(prepared.stats)
    vocab = embedding = None
    vector_stats: dict[str, Any] = {}
    use_lyrics = cfg.model.get("use_lyrics", True)
    train_texts = [e.lyrics for e in dataset.examples if e.lyrics and e.split == "train"]
    if train_texts and use_lyrics:
        train_docs = tokenize_all(train_texts, text_config)
        vocab = build_vocabulary(train_docs, text_config, max_size=cfg.vectors.max_vocab,
                                 min_count=cfg.vectors.min_count)
        sentences = [line for doc in train_docs for line in doc]
        vectors = load_vectors(cfg.vectors, train_sentences=sentences, seed=cfg.seed)
        embedding, vector_stats = embedding_matrix(vocab, vectors, dim=cfg.vectors.dim, seed=cfg.seed)
        vector_stats["source"] = cfg.vectors.type if vectors is None else vectors.name
        del vectors
    table = build_table(dataset, prepared=prepared, vocab=vocab, text_config=text_config)
    for d in table.dropped:
        log.info("skipping %s: %s", d.key, d.reason)
    return TrainData(dataset, table, vocab, embedding, vector_stats,
                     str(prepared.folder) if prepared is not None else None, prepare_stats)


# --------------------------------------------------------------------------- #
# Schedules and state
# --------------------------------------------------------------------------- #


class LRSchedule:
    """Per-epoch learning rate: warmup, then none / cosine / step / plateau; state is plain values."""

    def __init__(self, cfg: TrainConfig) -> None:
        t = cfg.train
        self.t = t
        self.factor = 1.0  # plateau
        self.best: float | None = None
        self.bad = 0

    def lr(self, epoch: int) -> float:
        """Learning rate of (0-based) ``epoch``."""
        t = self.t
        if t.warmup_epochs and epoch < t.warmup_epochs:
            return t.lr * (epoch + 1) / t.warmup_epochs
        if t.schedule == "cosine":
            span = max(1, t.epochs - t.warmup_epochs)
            progress = min(1.0, (epoch - t.warmup_epochs) / span)
            return t.min_lr + (t.lr - t.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        if t.schedule == "step":
            return t.lr * t.gamma ** ((epoch - t.warmup_epochs) // max(1, t.step_size))
        if t.schedule == "plateau":
            return t.lr * self.factor
        return t.lr

    def observe(self, val_loss: float) -> None:
        if self.t.schedule != "plateau" or not math.isfinite(val_loss):
            return
        if self.best is None or val_loss < self.best - 1e-4:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
            if self.bad > self.t.plateau_patience:
                self.factor *= self.t.gamma
                self.bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {"factor": self.factor, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.factor, self.best, self.bad = float(state["factor"]), state["best"], int(state["bad"])


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
    weights = np.zeros(len(table), dtype=np.float64)
    k = len(table.genres)
    for g in np.unique(groups):
        members = groups == g
        y = table.labels[members & train_mask]
        counts = np.bincount(y, minlength=k).astype(np.float64)
        per_genre = np.where(counts > 0, len(y) / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)
        weights[members] = per_genre[table.labels[members]] ** cfg.train.class_weight_power
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


def _plain(obj: Any) -> Any:
    """Plain values a weights-only checkpoint and strict JSON accept: numpy scalars -> Python,
    tuples -> lists, NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def _compact(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without the bulky parts (for the checkpoint and the per-epoch history)."""
    return {k: v for k, v in metrics.items() if k not in ("confusion",)}


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #


def build_model(cfg: TrainConfig, data: TrainData) -> GenreModel:
    table = data.table
    use_audio = bool((table.mel_row[table.indices("train")] >= 0).any())
    use_lyrics = data.vocab is not None and bool((table.lyr_row[table.indices("train")] >= 0).any())
    if not use_audio and not use_lyrics:
        raise ConfigError("no training example has usable audio or lyrics")
    embed_dim = (int(data.embedding.shape[1]) if data.embedding is not None
                 else int(cfg.model.get("embed_dim", cfg.vectors.dim)))
    mc = model_config_for(cfg, n_genres=len(table.genres), vocab_size=len(data.vocab) if data.vocab else 2,
                          embed_dim=embed_dim, use_audio=use_audio, use_lyrics=use_lyrics)
    torch.manual_seed(cfg.seed)
    model = GenreModel(mc, cfg.audio_config())
    if mc.use_audio and mc.audio_branch == "musicnn":
        model.cnn.load_pretrained()  # the MSD-trained weights shipped in mmgenre_core/models
    if mc.use_lyrics and data.embedding is not None:
        model.han.load_embeddings(torch.from_numpy(data.embedding), freeze=cfg.vectors.freeze)
    if mc.use_lyrics and model.bow is not None:
        rows = table.lyr_row[table.indices("train")]
        ids = torch.from_numpy(np.asarray(table.lyrics_ids[rows[rows >= 0]], dtype=np.int64))
        # Document frequency of every vocabulary word over the training lyrics.
        present = torch.zeros((ids.shape[0], mc.vocab_size), dtype=torch.bool)
        present.scatter_(1, ids.flatten(1), True)
        model.bow.set_idf(present.sum(dim=0), ids.shape[0])
    return model


def param_groups(model: torch.nn.Module, lr_scale: dict[str, float]) -> list[dict[str, Any]]:
    """Trainable parameters grouped by learning-rate multiplier (``train.lr_scale``).

    A parameter takes the multiplier of the longest prefix of its name in
    ``lr_scale`` (1 without one); groups are in order of first appearance.
    """
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        matches = [k for k in lr_scale if name == k or name.startswith(k + ".")]
        scale = float(lr_scale[max(matches, key=len)]) if matches else 1.0
        groups.setdefault(scale, []).append(p)
    return [{"params": ps, "lr_scale": scale} for scale, ps in groups.items()]


def _crop_frames(cfg: TrainConfig, seconds: float | None) -> int | None:
    if seconds is None:
        return None
    a = cfg.audio_config()
    return max(1, int(round(seconds * a.sample_rate / a.hop_length)))


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
            handler = _add_log_file(out / "train.log")
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
        (out / "config.json").write_text(dump_config(cfg) + "\n", encoding="utf-8")
        print(dump_config(cfg), flush=True)
    seed_everything(cfg.seed, cfg.deterministic)
    data = data or load_data(cfg, rt, progress=progress)
    table = data.table
    if rt.main:
        _write_skipped(out / "skipped.tsv", data)
        _write_examples(out / "examples.csv", data)
        for split in ("train", "valid", "test"):
            c = table.counts(split)
            log.info("%s: %d examples (%d with audio, %d with lyrics, %d with both)", split, c["examples"],
                     c["audio"], c["lyrics"], c["both"])
        log.info("genres (%d): %s", len(table.genres), ", ".join(table.genres))
        if data.vector_stats:
            log.info("vocabulary %d words, %.0f%% with a pretrained vector (%s)", data.vector_stats["words"],
                     100 * data.vector_stats["coverage"], data.vector_stats.get("source"))
    train_idx, val_idx, test_idx = (table.indices(s) for s in ("train", "valid", "test"))
    if len(train_idx) == 0:
        raise ConfigError("the training split is empty")

    model = build_model(cfg, data).to(rt.device)
    forward = FusedForward(model)
    train_forward: torch.nn.Module = forward
    if rt.ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_forward = DDP(forward, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                            find_unused_parameters=True)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = param_groups(model, t.lr_scale)
    if t.optimizer == "adamw":
        # Beyond the paper: AdamW trains the small models of small collections far more
        # reliably than SGD (the default model uses it); the paper's runs keep SGD.
        opt = torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
    else:
        opt = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov and t.momentum > 0,
                              weight_decay=t.weight_decay)
    schedule = LRSchedule(cfg)
    amp_dtype = autocast_dtype(rt.device) if t.amp else None
    amp = (lambda: device_autocast(rt.device)) if amp_dtype is not None else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    weights = example_weights(cfg, table)
    crop = _crop_frames(cfg, t.crop_seconds)
    eval_crop = _crop_frames(cfg, t.eval_crop_seconds)

    history: list[dict[str, Any]] = []
    start_epoch, best_value, best_epoch, bad_epochs = 0, float("inf"), -1, 0
    best_val: dict[str, Any] = {}
    last_path = out / "last.pt"
    if resume:
        if not last_path.is_file():
            raise ConfigError(f"--resume: {last_path} not found")
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        if state.get("format") != RESUME_FORMAT:
            raise ConfigError(f"{last_path}: not an mmgenre training state")
        if data.vocab is not None and state["vocab"] != data.vocab.to_list():
            raise ConfigError("--resume: the data gives another vocabulary than the saved run")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        best_value, best_epoch = float(state["best_value"]), int(state["best_epoch"])
        bad_epochs, history, best_val = int(state["bad_epochs"]), list(state["history"]), dict(state["best_val"])
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(list(state["rng"]["cuda"]))
        if rt.main:
            log.info("resuming from %s after epoch %d", last_path, start_epoch)

    metadata_base = {
        "name": cfg.name, "version": cfg.version, "trained_with": "training/train.py",
        "config": _plain(cfg.to_dict()), "seed": cfg.seed, "git_commit": git_commit(),
        "dataset": _plain({s: table.counts(s) for s in ("train", "valid", "test")}),
        "vectors": _plain(data.vector_stats), "genres": list(table.genres),
    }
    stopped_early = False
    timed_out = False
    epoch_times: list[float] = []

    def validate() -> dict[str, Any]:
        # On every rank (identical results, no communication needed).
        if not len(val_idx):
            return {}
        probs, y = predict(forward, table, val_idx, mode="fused", device=rt.device,
                           batch_size=t.eval_batch_size, crop_frames=eval_crop,
                           autocast=amp if amp_dtype is not None else None)
        return _compact(compute_metrics(y, probs, table.genres))

    def save_best(epoch_number: int, val: dict[str, Any]) -> None:
        if not rt.main:
            return
        ckpt = Checkpoint.from_model(
            model, text_config=cfg.text_config(), genres=table.genres,
            vocab=data.vocab.to_list() if model.config.use_lyrics and data.vocab else [],
            metadata={**metadata_base, "epoch": epoch_number,
                      "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
            metrics=_plain({"valid": val}))
        save_checkpoint(out / "model.pt", ckpt)

    probe: dict[str, Any] = {}
    if t.linear_probe and not resume:
        from training.probe import linear_probe

        probe = linear_probe(forward, table, train_idx, val_idx, weights=weights, l2_grid=t.probe_l2,
                             crop_frames=crop, eval_crop_frames=eval_crop, max_crops=t.probe_crops,
                             max_iter=t.probe_max_iter, device=rt.device, batch_size=t.eval_batch_size,
                             select=lambda v: selection_value(cfg, v))
        metadata_base["linear_probe"] = _plain(probe)
        if probe.get("probed"):
            # The probed model is a candidate like any epoch: "epoch 0".
            val = validate()
            best_value = selection_value(cfg, val) if val else 1.0  # any epoch beats it
            best_epoch, best_val = -1, val
            save_best(0, val)
            if rt.main:
                print(f"epoch   0/{t.epochs} | linear probe of {'+'.join(probe['probed'])} | val loss "
                      f"{val.get('log_loss', float('nan')):.4f} acc {val.get('accuracy', float('nan')):.3f} *",
                      flush=True)
    for epoch in range(start_epoch, t.epochs):
        if t.patience and bad_epochs >= t.patience:
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
        train_forward.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)
        correct = torch.zeros((), dtype=torch.int64, device=rt.device)
        seen = 0
        batches = iterate_batches(table, specs, crop, num_workers=t.num_workers,
                                  pin_memory=rt.device.type == "cuda")
        for spec, batch in zip(specs, batches):  # batches come in the order of their specs
            batch = batch.to(rt.device, non_blocking=True)
            with amp():
                logits = train_forward(batch.size, batch.mel, batch.audio_pos, batch.ids, batch.lyrics_pos)
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
            train_loss, train_acc = (tot[0] / tot[2]).item(), (tot[1] / tot[2]).item()
        else:
            train_loss, train_acc = loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1)

        if t.bn_recalibrate:
            # Every rank recalibrates on the same batches, so the models stay identical.
            recalibrate_batchnorm(model, table, train_idx, device=rt.device, batch_size=t.batch_size,
                                  crop_frames=crop, rng=np.random.default_rng([cfg.seed, epoch, 1]),
                                  max_batches=t.bn_recalibrate_batches,
                                  autocast=amp if amp_dtype is not None else None)
        val = validate()
        val_loss = val.get("log_loss", float("nan"))
        schedule.observe(val_loss)
        # Without a validation split every epoch counts as the best (the last one is kept).
        value = selection_value(cfg, val) if val else float(-epoch)
        improved = value < best_value - 1e-9 or not math.isfinite(best_value)
        seconds = time.perf_counter() - t0
        epoch_times.append(seconds)
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                  "val_loss": val_loss, "val_acc": val.get("accuracy", float("nan")),
                  "val_macro_f1": val.get("macro_f1", float("nan")), "seconds": round(seconds, 3)}
        history.append(record)
        if improved:
            best_value, best_epoch, bad_epochs, best_val = value, epoch, 0, val
            save_best(epoch + 1, val)
        else:
            bad_epochs += 1
        if rt.main:
            print(f"epoch {epoch + 1:3d}/{t.epochs} | train loss {train_loss:.4f} acc {train_acc:.3f} | "
                  f"val loss {val_loss:.4f} acc {record['val_acc']:.3f} | lr {lr:.2e} | {seconds:.1f} s"
                  f"{' *' if improved else ''}", flush=True)
            state = {
                "format": RESUME_FORMAT, "epoch": epoch, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "best_value": best_value, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                "best_val": _plain(best_val), "history": _plain(history),
                "vocab": data.vocab.to_list() if data.vocab else [],
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                "config": _plain(cfg.to_dict()),
            }
            atomic_torch_save(last_path, state)
        if val and t.patience and bad_epochs >= t.patience:
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

    # Test (and final validation) metrics of the best model, every mode.
    results: dict[str, Any] = {}
    if rt.main and (out / "model.pt").is_file():
        from mmgenre_core.checkpoint import load_checkpoint

        best = load_checkpoint(out / "model.pt")
        model.load_state_dict(best.state_dict)
        amp_ctx = amp if amp_dtype is not None else None
        for split, idx in (("valid", val_idx), ("test", test_idx)):
            if len(idx):
                results[split] = evaluate_modes(forward, table, idx, device=rt.device,
                                                batch_size=t.eval_batch_size, crop_frames=eval_crop,
                                                autocast=amp_ctx)
        if "test" in results:
            print("test split:\n" + format_report(results["test"], table.genres), flush=True)
        # The checkpoint carries its own numbers (test included) for `mmgenre info`.
        best.metrics = _plain({"valid": _compact(results.get("valid", {}).get("fused", best_val)),
                               "test": {m: _compact(r) for m, r in results.get("test", {}).items()}})
        best.metadata["epochs_run"] = len(history)
        from training.model_card import stamp

        from training.calibrate import calibrate_checkpoint

        # Temperatures fitted on the validation split as inference computes; RUN_DIR/reliability.png.
        best.metadata["calibration"] = calibrate_checkpoint(best, data, out, rt.device)
        stamp(best, cfg.card)  # the text `mmgenre info` prints
        save_checkpoint(out / "model.pt", best)
    metrics = {
        "best_epoch": best_epoch + 1, "epochs_run": len(history), "stopped_early": stopped_early,
        "linear_probe": _plain(probe),
        "timed_out": timed_out, "select": t.select, "best_value": best_value,
        "seconds": round(time.perf_counter() - started, 1),
        "seconds_per_epoch": round(float(np.mean(epoch_times)), 3) if epoch_times else None,
        "dataset": _plain({s: table.counts(s) for s in ("train", "valid", "test")}),
        "genres": list(table.genres), "skipped": len(data.dataset.skipped) + len(table.dropped),
        "vectors": _plain(data.vector_stats), "prepare": _plain(data.prepare_stats),
        "prepared_folder": data.prepared_folder, "history": _plain(history),
        "valid": _plain(results.get("valid", {})), "test": _plain(results.get("test", {})),
    }
    if rt.main:
        atomic_write_json(out / "metrics.json", _plain(metrics))
        log.info("best epoch %d (%s %.4f); model: %s", best_epoch + 1, t.select, best_value, out / "model.pt")
    return metrics


def _write_examples(path: Path, data: TrainData) -> None:
    """RUN_DIR/examples.csv: every example used, its split, genre and rows in the prepared arrays."""
    import csv

    by_key = {e.key: e for e in data.dataset.examples}
    t = data.table
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "split", "genre", "artist", "path", "mel_index", "has_lyrics"])
        for i, key in enumerate(t.keys):
            e = by_key[key]
            w.writerow([key, t.splits[i], t.genres[t.labels[i]], e.artist or "", e.path or "",
                        int(t.mel_row[i]) if t.mel_row[i] >= 0 else "", int(t.lyr_row[i] >= 0)])


def _write_skipped(path: Path, data: TrainData) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for s in list(data.dataset.skipped) + list(data.table.dropped):
            fh.write(f"{s.key}\t{s.path or ''}\t{s.reason}\n")


def _add_log_file(path: Path) -> logging.Handler:
    """Log INFO and up of every logger to ``path`` as well (the run's train.log)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


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


__all__ = ["train", "load_data", "build_model", "TrainData", "LRSchedule", "main"]

if __name__ == "__main__":
    sys.exit(main())
