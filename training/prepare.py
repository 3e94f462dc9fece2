"""Prepare once, train fast: decode every clip once into memory-mapped log-mels.

Every audio file of a dataset is decoded with :func:`mmgenre_core.audio.load_windows`
(the analysed window: ``window_seconds`` from the middle of the track, as FMA's
clips) and turned into a log-mel spectrogram by :class:`mmgenre_core.audio.LogMel`,
the model's own front end, so training and inference see the same features. The
results go into one float16 ``.npy`` memory map [shape=(n_clips, n_mels, frames)].

Layout of a prepared folder ``CACHE_DIR/<name>-<hash>/`` (the hash covers the audio
config, the decoding code and libraries, and the list of files with their sizes and
modification times, so a changed config, decoder, file or file list gets a new folder)::

    prepare.json   format, audio config, shape, chunk size, complete flag
    clips.csv      index, path, expected sha1
    mels.npy       float16 log-mels (rows of failed clips stay zero)
    chunks/NNNNNN.json   per finished chunk: the status of each of its clips
    skipped.tsv    path <TAB> reason, for every clip that could not be used

Work is split into chunks of ``chunk_size`` clips spread over a process pool (one
process per core, one torch thread each). A chunk's status file is written only
after its rows are flushed to disk, so an interrupted run resumes with the chunks
that have no status file; a rerun of a complete folder does nothing. Broken,
missing, silent or mismatching (sha1) files are skipped with a log line, never a
crash.

Command line: ``python training/prepare.py --config FILE.json [--set key=value ...]``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from mmgenre_core.config import AudioConfig
from mmgenre_core.storage import atomic_write_json

log = logging.getLogger("training.prepare")

FORMAT = "mmgenre-prepared"
FORMAT_VERSION = 1


def feature_config(audio: AudioConfig) -> AudioConfig:
    """The audio config features are prepared with: one (centre) window per clip."""
    return dataclasses.replace(audio, num_windows=1)


def _stat_of(path: str) -> list[int] | None:
    """[size, mtime_ns] of a file, None when it cannot be read (it is skipped later)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def cache_key(audio: AudioConfig, items: Sequence[tuple[str, str | None]]) -> str:
    """What a prepared folder holds: the audio config, how decoding is done
    (:func:`~mmgenre_core.audio.decoding_fingerprint`: the decoding code and libraries)
    and each file's path, expected sha1, size and modification time. A file edited in
    place, or a change to the decoder, gives a new folder instead of stale log-mels."""
    from mmgenre_core.audio import decoding_fingerprint

    payload = json.dumps({"format": FORMAT_VERSION, "audio": feature_config(audio).to_dict(),
                          "decoding": decoding_fingerprint(),
                          "items": [[p, s, _stat_of(p)] for p, s in items]}, sort_keys=True)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()


@dataclass
class Prepared:
    """A prepared folder: log-mels of every clip and the status of each."""

    folder: Path
    mels: np.ndarray  # memmap float16 [shape=(n, n_mels, frames)]
    paths: list[str]
    status: list[str | None]  # "ok", a reason, or None (not processed yet)
    audio_config: AudioConfig
    complete: bool
    stats: dict

    def __post_init__(self) -> None:
        self._index = {p: i for i, p in enumerate(self.paths)}

    def index_of(self, path: str) -> int | None:
        """Row of ``path`` when it was prepared successfully, else None."""
        i = self._index.get(os.path.abspath(path))
        return i if i is not None and self.status[i] == "ok" else None

    def reason(self, path: str) -> str | None:
        i = self._index.get(os.path.abspath(path))
        return None if i is None else self.status[i]

    @property
    def n_ok(self) -> int:
        return sum(s == "ok" for s in self.status)

    def skipped(self) -> list[tuple[str, str]]:
        return [(p, s) for p, s in zip(self.paths, self.status) if s not in ("ok", None)]


# --------------------------------------------------------------------------- #
# Worker side
# --------------------------------------------------------------------------- #

_WORKER: dict = {}


def _init_worker(mels_path: str, audio: dict) -> None:
    import torch

    from mmgenre_core.audio import LogMel

    torch.set_num_threads(1)
    _WORKER["mels"] = np.load(mels_path, mmap_mode="r+")
    _WORKER["config"] = AudioConfig.from_dict(audio)
    _WORKER["logmel"] = LogMel(_WORKER["config"]).eval()


def _sha1_of(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _process_one(path: str, sha1: str | None) -> tuple[np.ndarray | None, str]:
    import torch

    from mmgenre_core.audio import load_windows
    from mmgenre_core.errors import AudioError

    try:
        if sha1:
            got = _sha1_of(path)
            if got != sha1.lower():
                return None, f"{path}: sha1 mismatch (expected {sha1}, got {got})"
        windows = load_windows(path, config=_WORKER["config"])
        with torch.inference_mode():
            mel = _WORKER["logmel"](torch.from_numpy(np.ascontiguousarray(windows[:1])))[0]
        mel = mel.numpy()
        if not np.isfinite(mel).all():
            return None, "log-mel has non-finite values"
        return mel.astype(np.float16), "ok"
    except AudioError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    except FileNotFoundError as exc:
        return None, f"file not found: {exc}"
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad file never ends the run
        return None, f"{type(exc).__name__}: {exc}"


def _process_chunk(task: tuple[int, list[tuple[int, str, str | None]]]) -> tuple[int, list[tuple[int, str]]]:
    chunk_id, items = task
    mels = _WORKER["mels"]
    out = []
    for index, path, sha1 in items:
        mel, status = _process_one(path, sha1)
        if mel is not None:
            mels[index] = mel
        out.append((index, status))
    mels.flush()
    return chunk_id, out


# --------------------------------------------------------------------------- #
# Parent side
# --------------------------------------------------------------------------- #


def _start_method() -> str:
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return "spawn"  # CUDA state does not survive fork
    except Exception:  # noqa: BLE001
        pass
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def prepare(
    items: Sequence[tuple[str, str | None]] | Sequence[str],
    audio: AudioConfig,
    cache_dir: str | os.PathLike,
    *,
    name: str = "clips",
    workers: int = 0,
    chunk_size: int = 32,
    progress: bool = True,
    max_chunks: int | None = None,
) -> Prepared:
    """Prepare log-mels of ``items`` (paths, or (path, expected sha1) pairs); resumable.

    ``workers``: processes (0 = every core; 1 = in this process). ``max_chunks``:
    process at most this many chunks, then return (the folder stays resumable).
    """
    norm: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for item in items:
        path, sha1 = (item, None) if isinstance(item, (str, os.PathLike)) else item
        path = os.path.abspath(os.fspath(path))
        if path not in seen:
            seen.add(path)
            norm.append((path, sha1))
    audio = feature_config(audio)
    key = cache_key(audio, norm)
    folder = Path(os.path.expanduser(os.fspath(cache_dir))) / f"{name}-{key[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chunks").mkdir(exist_ok=True)
    meta_path = folder / "prepare.json"
    shape = (len(norm), audio.n_mels, audio.window_frames)
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != key or tuple(meta.get("shape", ())) != shape:
            raise RuntimeError(f"{folder}: prepared for another config or file list; remove it")
        chunk_size = int(meta["chunk_size"])
    else:
        with open(folder / "clips.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["index", "path", "sha1"])
            for i, (p, s) in enumerate(norm):
                w.writerow([i, p, s or ""])
        tmp = folder / "mels.npy.tmp"
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        del arr
        os.replace(tmp, folder / "mels.npy")
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "key": key, "name": name,
                "audio_config": audio.to_dict(), "shape": list(shape), "dtype": "float16",
                "chunk_size": int(chunk_size), "complete": False}
        atomic_write_json(meta_path, meta, indent=1)

    n_chunks = -(-len(norm) // chunk_size) if norm else 0

    def chunk_file(cid: int) -> Path:
        return folder / "chunks" / f"{cid:06d}.json"

    def chunk_items(cid: int) -> list[tuple[int, str, str | None]]:
        return [(i, norm[i][0], norm[i][1]) for i in range(cid * chunk_size, min(len(norm), (cid + 1) * chunk_size))]

    pending = [cid for cid in range(n_chunks) if not chunk_file(cid).is_file()]
    done_before = n_chunks - len(pending)
    initial = len(norm) - sum(len(chunk_items(c)) for c in pending)
    if max_chunks is not None:
        pending = pending[:max_chunks]
    tasks = [(cid, chunk_items(cid)) for cid in pending]
    n_workers = workers if workers > 0 else (os.cpu_count() or 1)
    n_workers = max(1, min(n_workers, len(tasks)))
    clips_todo = sum(len(t[1]) for t in tasks)
    started = time.perf_counter()
    if tasks:
        from tqdm import tqdm

        import mmgenre_core.audio  # noqa: F401 - imported once here, inherited by forked workers

        log.info("preparing %d of %d clips in %s with %d process(es)", clips_todo, len(norm), folder, n_workers)
        bar = tqdm(total=len(norm), initial=initial, unit="clip", desc=f"prepare {name}",
                   disable=not progress, dynamic_ncols=True)
        try:
            if n_workers == 1:
                import torch

                threads = torch.get_num_threads()
                try:
                    _init_worker(str(folder / "mels.npy"), audio.to_dict())  # sets 1 torch thread
                    _record(map(_process_chunk, tasks), folder, chunk_file, bar)
                finally:
                    _WORKER.clear()
                    torch.set_num_threads(threads)
            else:
                ctx = mp.get_context(_start_method())
                with ctx.Pool(n_workers, initializer=_init_worker,
                              initargs=(str(folder / "mels.npy"), audio.to_dict())) as pool:
                    _record(pool.imap_unordered(_process_chunk, tasks), folder, chunk_file, bar)
        finally:
            bar.close()
    elapsed = time.perf_counter() - started
    result = open_prepared(folder)
    if result.complete and not meta.get("complete"):
        skipped = result.skipped()
        with open(folder / "skipped.tsv", "w", encoding="utf-8") as fh:
            for p, reason in skipped:
                fh.write(f"{p}\t{reason}\n")
        meta["complete"] = True
        atomic_write_json(meta_path, meta, indent=1)
        result.complete = True
    result.stats = {"clips": len(norm), "processed_now": clips_todo, "chunks_done_before": done_before,
                    "seconds": round(elapsed, 3),
                    "clips_per_second": round(clips_todo / elapsed, 2) if clips_todo and elapsed > 0 else None,
                    "workers": n_workers if tasks else 0, "ok": result.n_ok, "skipped": len(result.skipped())}
    if clips_todo:
        log.info("prepared %d clips in %.1f s (%.1f clips/s); %d of %d usable", clips_todo, elapsed,
                 clips_todo / max(elapsed, 1e-9), result.n_ok, len(norm))
    return result


def _record(results: Iterable, folder: Path, chunk_file, bar) -> None:
    for cid, statuses in results:
        for index, status in statuses:
            if status != "ok":
                log.warning("skipping clip %d: %s", index, status)
        atomic_write_json(chunk_file(cid), {"chunk": cid, "status": [[i, s] for i, s in statuses]}, indent=1)
        bar.update(len(statuses))


def open_prepared(folder: str | os.PathLike) -> Prepared:
    """Open a prepared folder read-only (complete or not)."""
    folder = Path(folder)
    meta = json.loads((folder / "prepare.json").read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise RuntimeError(f"{folder}: not a prepared-features folder")
    with open(folder / "clips.csv", newline="", encoding="utf-8") as fh:
        paths = [row["path"] for row in csv.DictReader(fh)]
    status: list[str | None] = [None] * len(paths)
    for f in sorted((folder / "chunks").glob("*.json")):
        for i, s in json.loads(f.read_text(encoding="utf-8"))["status"]:
            status[i] = s
    mels = np.load(folder / "mels.npy", mmap_mode="r")
    return Prepared(folder=folder, mels=mels, paths=paths, status=status,
                    audio_config=AudioConfig.from_dict(meta["audio_config"]),
                    complete=all(s is not None for s in status), stats={})


def prepare_dataset(examples, audio: AudioConfig, cache_dir, *, name: str = "clips", workers: int = 0,
                    chunk_size: int = 32, progress: bool = True) -> Prepared:
    """Prepare the audio of a list of :class:`~training.datasets.Example`."""
    items = [(e.path, e.sha1) for e in examples if e.path]
    return prepare(items, audio, cache_dir, name=name, workers=workers, chunk_size=chunk_size,
                   progress=progress)


def main(argv: Sequence[str] | None = None) -> int:
    from training.config import load_config, resolve_path
    from training.datasets import build_dataset

    p = argparse.ArgumentParser(description="Decode every clip of a training config once into log-mel arrays.")
    p.add_argument("--config", required=True, help="training config (JSON)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the config's, 0 = every core)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(args.config, args.overrides)
    dataset = build_dataset(cfg)  # exactly the examples train.py will use (lyrics decide the genres too)
    result = prepare_dataset(dataset.examples, cfg.prepare_audio_config(), resolve_path(cfg.prepare.cache_dir),
                             name=cfg.name, workers=cfg.prepare.workers if args.workers is None else args.workers,
                             chunk_size=cfg.prepare.chunk_size)
    print(json.dumps({"folder": str(result.folder), **result.stats}, indent=1))
    return 0


__all__ = ["Prepared", "prepare", "prepare_dataset", "open_prepared", "feature_config", "cache_key"]

if __name__ == "__main__":
    sys.exit(main())
