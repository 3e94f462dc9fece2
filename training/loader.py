"""From examples to batches: the in-memory example table, batching, evaluation.

A :class:`Table` holds, for every example, its label, split, its row in the prepared
log-mel memory map (or -1: no audio) and its row in the encoded lyrics grid (or -1:
no lyrics). Examples may have audio, lyrics or both; a batch mixes them freely.

:meth:`Batch.fused` is the model's input (:class:`mmgenre_core.model.FusedBatch`):
``GenreModel.forward``, the one pass of training, evaluation and inference, runs the
CNN only on the rows that have audio and the HAN only on the rows that have lyrics;
the other rows get the model's learned "absent" vectors. Zero spectrograms of
lyrics-only examples therefore never reach the CNN's batch norm, and modality dropout
is simply hiding a modality of a row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from mmgenre_core.config import TextConfig
from mmgenre_core.model import FusedBatch
from mmgenre_core.text import Vocabulary

from .datasets import Dataset, Skipped
from .lyrics_data import encode_grid

log = logging.getLogger(__name__)

MODES = ("fused", "audio", "lyrics")


@dataclass
class Table:
    genres: list[str]
    keys: list[str]
    labels: np.ndarray  # int64 (n,)
    splits: np.ndarray  # str (n,)
    mel_row: np.ndarray  # int64 (n,), -1 = no audio
    lyr_row: np.ndarray  # int64 (n,), -1 = no lyrics
    mels: np.ndarray | None = None  # float16 memmap (n_clips, n_mels, frames)
    lyrics_ids: np.ndarray | None = None  # int32 (n_lyrics, max_lines, max_words)
    dropped: list[Skipped] = field(default_factory=list)
    lyrics_texts: list[str] | None = None  # (n_lyrics,): the texts of lyrics_ids' rows
    domains: np.ndarray | None = None  # object (n,): each example's Example.domain (None: none)

    def texts_of(self, rows: np.ndarray) -> list[str]:
        """The lyrics texts of ``lyrics_ids`` rows [shape=(n,)] (a bag that reads the text reads them)."""
        assert self.lyrics_texts is not None
        return [self.lyrics_texts[int(r)] for r in rows]

    def __len__(self) -> int:
        return len(self.keys)

    def indices(self, split: str | None = None, mode: str = "fused") -> np.ndarray:
        """Examples of a split (None = all) usable in ``mode`` (audio: with audio, lyrics: with lyrics)."""
        keep = np.ones(len(self), dtype=bool) if split is None else self.splits == split
        if mode == "audio":
            keep &= self.mel_row >= 0
        elif mode == "lyrics":
            keep &= self.lyr_row >= 0
        return np.flatnonzero(keep)

    @property
    def frames(self) -> int:
        return 0 if self.mels is None else int(self.mels.shape[-1])

    def counts(self, split: str | None = None) -> dict[str, int]:
        idx = self.indices(split)
        return {"examples": int(len(idx)), "audio": int((self.mel_row[idx] >= 0).sum()),
                "lyrics": int((self.lyr_row[idx] >= 0).sum()),
                "both": int(((self.mel_row[idx] >= 0) & (self.lyr_row[idx] >= 0)).sum())}


def build_table(dataset: Dataset, *, prepared=None, vocab: Vocabulary | None = None,
                text_config: TextConfig | None = None) -> Table:
    """Join examples with their prepared log-mels and encoded lyrics.

    An example whose audio failed to prepare keeps its lyrics; one left with neither
    modality is dropped (listed in ``Table.dropped`` with the reason).
    """
    genre_index = {g: i for i, g in enumerate(dataset.genres)}
    lyric_texts: list[str] = []
    rows = []
    dropped: list[Skipped] = []
    for e in dataset.examples:
        mel = -1
        reason = None
        if e.path and prepared is not None:
            i = prepared.index_of(e.path)
            if i is None:
                reason = prepared.reason(e.path) or "not prepared"
            else:
                mel = i
        lyr = -1
        if e.lyrics and vocab is not None:
            lyr = len(lyric_texts)
            lyric_texts.append(e.lyrics)
        rows.append((e, mel, lyr, reason))
    ids = has = None
    if lyric_texts:
        assert vocab is not None and text_config is not None
        ids, has = encode_grid(lyric_texts, vocab, text_config)
    keys, labels, splits, mel_rows, lyr_rows, domains = [], [], [], [], [], []
    for e, mel, lyr, reason in rows:
        if lyr >= 0 and not has[lyr]:
            lyr = -1  # nothing usable left after cleaning
        if mel < 0 and lyr < 0:
            dropped.append(Skipped(e.key, e.path, reason or "no usable audio or lyrics"))
            continue
        keys.append(e.key)
        labels.append(genre_index[e.genre])
        splits.append(e.split or "train")
        mel_rows.append(mel)
        lyr_rows.append(lyr)
        domains.append(e.domain)
    return Table(genres=list(dataset.genres), keys=keys, labels=np.asarray(labels, dtype=np.int64),
                 splits=np.asarray(splits, dtype=object), mel_row=np.asarray(mel_rows, dtype=np.int64),
                 lyr_row=np.asarray(lyr_rows, dtype=np.int64),
                 mels=prepared.mels if prepared is not None else None, lyrics_ids=ids, dropped=dropped,
                 lyrics_texts=lyric_texts if lyric_texts else None, domains=np.asarray(domains, dtype=object))


# --------------------------------------------------------------------------- #
# Batches
# --------------------------------------------------------------------------- #


@dataclass
class BatchSpec:
    """Everything random about a batch, drawn in the main process (so workers are deterministic)."""

    index: np.ndarray  # example indices
    offsets: np.ndarray  # crop start frame per example (0 when not cropping)
    hide_audio: np.ndarray  # bool
    hide_lyrics: np.ndarray  # bool


@dataclass
class Batch:
    y: torch.Tensor  # (batch,)
    mel: torch.Tensor  # (n_audio, n_mels, frames)
    audio_pos: torch.Tensor  # (n_audio,) positions in the batch
    ids: torch.Tensor  # (n_lyrics, max_lines, max_words)
    lyrics_pos: torch.Tensor  # (n_lyrics,)
    texts: list[str] | None = None  # (n_lyrics,): the lyrics texts, for a bag that reads the text

    @property
    def size(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in
                       (self.y, self.mel, self.audio_pos, self.ids, self.lyrics_pos)), texts=self.texts)

    def pin_memory(self, device=None) -> "Batch":  # DataLoader's pin_memory calls this too
        return Batch(*(t.pin_memory() for t in (self.y, self.mel, self.audio_pos, self.ids, self.lyrics_pos)),
                     texts=self.texts)

    def __iter__(self):  # so torch's collate/pin utilities can treat it as a plain record
        return iter((self.y, self.mel, self.audio_pos, self.ids, self.lyrics_pos))

    def fused(self) -> FusedBatch:
        """The model's input: each row reads its own clip (audio_pos) and lyrics (lyrics_pos)."""
        return FusedBatch(self.size, self.audio_pos, mel=self.mel, lyrics_pos=self.lyrics_pos, ids=self.ids,
                          lyrics_texts=self.texts)


def collate(table: Table, spec: BatchSpec, crop_frames: int | None) -> Batch:
    idx = spec.index
    mel_rows = table.mel_row[idx]
    lyr_rows = table.lyr_row[idx]
    audio_pos = np.flatnonzero((mel_rows >= 0) & ~spec.hide_audio)
    lyrics_pos = np.flatnonzero((lyr_rows >= 0) & ~spec.hide_lyrics)
    if len(audio_pos):
        assert table.mels is not None
        n_mels, frames = table.mels.shape[1:]
        width = frames if crop_frames is None else min(crop_frames, frames)
        mel = np.empty((len(audio_pos), n_mels, width), dtype=np.float32)
        for j, p in enumerate(audio_pos):
            start = int(spec.offsets[p])
            mel[j] = table.mels[mel_rows[p], :, start:start + width]
        mel_t = torch.from_numpy(mel)
    else:
        mel_t = torch.zeros((0, 1, 1))
    if len(lyrics_pos):
        assert table.lyrics_ids is not None
        ids_t = torch.from_numpy(table.lyrics_ids[lyr_rows[lyrics_pos]].astype(np.int64))
    else:
        ids_t = torch.zeros((0, 1, 1), dtype=torch.long)
    texts = table.texts_of(lyr_rows[lyrics_pos]) if table.lyrics_texts is not None else None
    return Batch(y=torch.from_numpy(table.labels[idx].copy()), mel=mel_t,
                 audio_pos=torch.from_numpy(audio_pos.astype(np.int64)),
                 ids=ids_t, lyrics_pos=torch.from_numpy(lyrics_pos.astype(np.int64)), texts=texts)


def train_batch_specs(table: Table, indices: np.ndarray, *, batch_size: int, rng: np.random.Generator,
                      crop_frames: int | None, lyrics_dropout: float, audio_dropout: float,
                      rank: int = 0, world_size: int = 1, max_batches: int | None = None) -> list[BatchSpec]:
    """One epoch of shuffled training batches; this rank's share under DDP.

    The permutation, crops and modality dropout come from ``rng`` (seeded per epoch),
    identically on every rank; each rank takes every ``world_size``-th example.
    """
    order = rng.permutation(indices)
    n = len(order)
    frames = table.frames
    offsets = np.zeros(n, dtype=np.int64)
    if crop_frames is not None and frames > crop_frames:
        offsets = rng.integers(0, frames - crop_frames + 1, size=n)
    both = (table.mel_row[order] >= 0) & (table.lyr_row[order] >= 0)
    u = rng.random((n, 2))
    hide_lyrics = both & (u[:, 0] < lyrics_dropout)
    hide_audio = both & ~hide_lyrics & (u[:, 1] < audio_dropout)
    if world_size > 1:
        n = n // world_size * world_size  # same number of batches on every rank
        sl = slice(rank, n, world_size)
        order, offsets, hide_audio, hide_lyrics = order[sl], offsets[sl], hide_audio[sl], hide_lyrics[sl]
        batch_size = max(1, -(-batch_size // world_size))
    specs = []
    for start in range(0, len(order), batch_size):
        sl = slice(start, start + batch_size)
        specs.append(BatchSpec(order[sl], offsets[sl], hide_audio[sl], hide_lyrics[sl]))
    if max_batches is not None:
        specs = specs[:max_batches]
    return specs


def eval_batch_specs(table: Table, indices: np.ndarray, *, batch_size: int, mode: str,
                     crop_frames: int | None) -> list[BatchSpec]:
    """In-order batches; ``mode`` hides lyrics (audio) or audio (lyrics); centre crops when cropping."""
    n = len(indices)
    frames = table.frames
    start = max(0, (frames - crop_frames) // 2) if crop_frames is not None else 0
    hide_audio = np.full(n, mode == "lyrics")
    hide_lyrics = np.full(n, mode == "audio")
    offsets = np.full(n, start, dtype=np.int64)
    return [BatchSpec(indices[s:s + batch_size], offsets[s:s + batch_size], hide_audio[s:s + batch_size],
                      hide_lyrics[s:s + batch_size]) for s in range(0, n, batch_size)]


class SpecDataset(torch.utils.data.Dataset):
    """Batch specs as a map-style dataset, so a DataLoader can collate them in workers."""

    def __init__(self, table: Table, specs: Sequence[BatchSpec], crop_frames: int | None) -> None:
        self.table, self.specs, self.crop_frames = table, list(specs), crop_frames

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i: int) -> Batch:
        return collate(self.table, self.specs[i], self.crop_frames)


def iterate_batches(table: Table, specs: Sequence[BatchSpec], crop_frames: int | None, *,
                    num_workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
    if num_workers <= 0:
        for spec in specs:
            batch = collate(table, spec, crop_frames)
            yield batch.pin_memory() if pin_memory else batch
        return
    loader = torch.utils.data.DataLoader(SpecDataset(table, specs, crop_frames), batch_size=None,
                                         shuffle=False, num_workers=num_workers, pin_memory=pin_memory,
                                         collate_fn=_identity, persistent_workers=False)
    yield from loader


def _identity(batch: Batch) -> Batch:
    return batch


# --------------------------------------------------------------------------- #
# Batch-norm statistics and evaluation
# --------------------------------------------------------------------------- #


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, table: Table, indices: np.ndarray, *, device: torch.device,
                          batch_size: int, crop_frames: int | None, rng: np.random.Generator,
                          max_batches: int | None = None, autocast=None) -> int:
    """Re-estimate every batch-norm layer's running statistics with dropout off.

    In training, each conv block's batch norm sees the previous block's output through
    dropout (p=0.5 in the paper), so the running variances it records are those of
    dropped-out activations; at inference there is no dropout and the statistics no
    longer fit, a shift that compounds block after block (the "disharmony" of dropout
    and batch norm, Li et al., CVPR 2019). Running the audio of training examples
    through the network in eval mode, with only the batch-norm layers updating their
    (cumulative, exact-average) statistics, makes them match what inference sees.
    Returns the number of batches used.
    """
    import contextlib

    bns = model.trainable_batchnorms()  # a pretrained backbone's statistics stay as shipped
    if not bns or table.mels is None or not getattr(model.config, "use_audio", False):
        return 0
    audio_idx = indices[table.mel_row[indices] >= 0]
    if len(audio_idx) == 0:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
        m.train()
    order = rng.permutation(audio_idx)
    frames = table.frames
    offsets = np.zeros(len(order), dtype=np.int64)
    if crop_frames is not None and frames > crop_frames:
        offsets = rng.integers(0, frames - crop_frames + 1, size=len(order))
    no = np.zeros(len(order), dtype=bool)
    n = 0
    for start in range(0, len(order), batch_size):
        if max_batches is not None and n >= max_batches:
            break
        sl = slice(start, start + batch_size)
        if len(order[sl]) < 2 and n:
            break  # a batch of one would give a degenerate variance
        batch = collate(table, BatchSpec(order[sl], offsets[sl], no[sl], no[sl]), crop_frames)
        with autocast() if autocast is not None else contextlib.nullcontext():
            model.encode_audio(batch.mel.to(device))
        n += 1
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.train(was_training)
    return n


@torch.no_grad()
def predict(model: nn.Module, table: Table, indices: np.ndarray, *, mode: str, device: torch.device,
            batch_size: int = 64, crop_frames: int | None = None, autocast=None,
            num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Genre probabilities [shape=(n, n_genres)] and labels of ``indices`` in ``mode``.

    ``mode``: ``fused`` (every modality an example has), ``audio`` (examples with
    audio, lyrics hidden) or ``lyrics`` (examples with lyrics, audio hidden).
    ``autocast``: None, or a callable returning a context manager (mixed precision).
    """
    import contextlib

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    mask = np.ones(len(indices), dtype=bool)
    if mode == "audio":
        mask = table.mel_row[indices] >= 0
    elif mode == "lyrics":
        mask = table.lyr_row[indices] >= 0
    indices = np.asarray(indices)[mask]
    was_training = model.training
    model.eval()
    out = []
    specs = eval_batch_specs(table, indices, batch_size=batch_size, mode=mode, crop_frames=crop_frames)
    for batch in iterate_batches(table, specs, crop_frames, num_workers=num_workers,
                                 pin_memory=device.type == "cuda"):
        batch = batch.to(device, non_blocking=True)
        with autocast() if autocast is not None else contextlib.nullcontext():
            logits = model(batch.fused())
        out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    model.train(was_training)
    n_genres = len(table.genres)
    probs = np.concatenate(out) if out else np.zeros((0, n_genres), dtype=np.float32)
    return probs, table.labels[indices]


def evaluate_modes(model: nn.Module, table: Table, indices: np.ndarray, *, device: torch.device,
                   batch_size: int = 64, crop_frames: int | None = None, autocast=None,
                   modes: Sequence[str] = MODES) -> dict[str, dict[str, Any]]:
    """:func:`~training.metrics.compute_metrics` of each mode that has examples."""
    from .metrics import compute_metrics

    results = {}
    for mode in modes:
        probs, y = predict(model, table, indices, mode=mode, device=device, batch_size=batch_size,
                           crop_frames=crop_frames, autocast=autocast)
        if len(y):
            results[mode] = compute_metrics(y, probs, table.genres)
    return results


__all__ = [
    "MODES",
    "Table",
    "build_table",
    "BatchSpec",
    "Batch",
    "collate",
    "train_batch_specs",
    "eval_batch_specs",
    "iterate_batches",
    "recalibrate_batchnorm",
    "predict",
    "evaluate_modes",
]
