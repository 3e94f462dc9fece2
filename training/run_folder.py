"""The files of a run folder besides the model: config.json, examples.csv, skipped.tsv, train.log."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from mmgenre_core.storage import atomic_write

from training.build import TrainData
from training.config import TrainConfig, dump_config


def write_config(folder: Path, cfg: TrainConfig) -> None:
    """RUN_DIR/config.json: the resolved config (``--resume`` reads it back)."""
    with atomic_write(folder / "config.json", text=True) as fh:
        fh.write(dump_config(cfg) + "\n")


def write_examples(folder: Path, data: TrainData) -> None:
    """RUN_DIR/examples.csv: every example used, its split, genre and rows in the prepared arrays."""
    by_key = {e.key: e for e in data.dataset.examples}
    t = data.table
    with atomic_write(folder / "examples.csv", text=True) as fh:
        w = csv.writer(fh)
        w.writerow(["key", "split", "genre", "artist", "path", "mel_index", "has_lyrics"])
        for i, key in enumerate(t.keys):
            e = by_key[key]
            w.writerow([key, t.splits[i], t.genres[t.labels[i]], e.artist or "", e.path or "",
                        int(t.mel_row[i]) if t.mel_row[i] >= 0 else "", int(t.lyr_row[i] >= 0)])


def write_skipped(folder: Path, data: TrainData) -> None:
    """RUN_DIR/skipped.tsv: key, path and reason of every clip that could not be used."""
    with atomic_write(folder / "skipped.tsv", text=True) as fh:
        for s in list(data.dataset.skipped) + list(data.table.dropped):
            fh.write(f"{s.key}\t{s.path or ''}\t{s.reason}\n")


def add_log_file(path: Path) -> logging.Handler:
    """Log INFO and up of every logger to ``path`` as well (the run's train.log)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


__all__ = ["write_config", "write_examples", "write_skipped", "add_log_file"]
