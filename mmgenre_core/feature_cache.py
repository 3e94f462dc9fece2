"""The embedding cache: a frozen audio backbone's features, computed once per file.

Decoding a track and running the backbone (musicnn) is nearly all of inference's
cost; the head over the features is a single linear layer. Rerunning a library with
another ``min_confidence``, ``genre_map``, ``count`` or a new head only needs the
features, so they are kept in one SQLite file (WAL journal, one transaction per
batch) keyed by

* the file: its resolved path plus size and modification time (``identity="stat"``,
  the default; a changed file is a miss and is recomputed), or a SHA-256 of its bytes
  (``identity="content"``: survives renames and moves, costs a read of every file);
* the backbone: a hash of everything that turns a file into features (the audio
  settings, the audio branch's configuration and weights; see :func:`backbone_id`),
  so two checkpoints with different heads over the same backbone share entries and
  a different backbone never reads another's.

Features are stored per analysed window, [shape=(windows, dim)] float32, not
averaged: the model calibrates and soft-maxes each window before averaging, so only
the per-window vectors reproduce its predictions exactly.

Nothing here can end a run: a cache file that is not a database (a crash of the
disk, a stray file) is moved aside and rebuilt, a locked or read-only one is used
without writing, and any other SQLite error turns the cache off for the rest of the
run with one warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CACHE_FILE = "features.sqlite3"
SCHEMA_VERSION = "1"
IDENTITIES = ("stat", "content")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS features (
    backbone TEXT NOT NULL,
    file_key BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    windows INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    data BLOB NOT NULL,
    stored REAL NOT NULL,
    PRIMARY KEY (backbone, file_key)
) WITHOUT ROWID;
"""


def default_cache_path() -> Path:
    """``features.sqlite3`` in the user's cache folder (``platformdirs``), shared by
    ``mmgenre predict`` and ``beet mmgenre``."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mmgenre")) / CACHE_FILE


@dataclass(frozen=True)
class FileIdentity:
    """What a cache entry is valid for: the key, and the size and mtime it was read at."""

    key: bytes
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class CacheStats:
    path: str
    bytes_on_disk: int
    entries: int
    #: backbone id -> (entries, windows)
    backbones: dict[str, tuple[int, int]]
    #: entries whose file is gone or changed (None when not checked)
    stale: int | None = None


_PATH_PREFIX = b"path:"


def _path_key(path: str | os.PathLike) -> bytes:
    """The ``stat`` identity's key: the resolved path, as bytes (any file name fits)."""
    return _PATH_PREFIX + os.fsencode(os.path.realpath(path))


def file_identity(path: str | os.PathLike, *, identity: str = "stat") -> FileIdentity:
    """The cache identity of an audio file (raises OSError when it cannot be read).

    The stat is taken before any hashing or decoding, so a file that changes while it
    is read is recorded with its old stat and recomputed next time, never the reverse.
    """
    st = os.stat(path)
    if identity == "stat":
        key = _path_key(path)
    elif identity == "content":
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        key = b"sha256:" + digest.hexdigest().encode()
    else:
        raise ValueError(f"identity must be one of {IDENTITIES}, not {identity!r}")
    return FileIdentity(key, int(st.st_size), int(st.st_mtime_ns))


def update_with_tensors(digest, module, *, prefix: str = "") -> None:
    """Feed every tensor of ``module`` (name, dtype, shape, bytes; any dtype) into ``digest``."""
    import torch  # here, not at the top: the plugin uses this module without torch

    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{prefix}{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def backbone_id(model, audio_config) -> str:
    """A hash of everything that maps a waveform window to the model's audio features.

    The audio settings (sample rate, windows, mel scale), how files are decoded (the
    decoding code and libraries, :func:`~mmgenre_core.audio.decoding_fingerprint`), the
    audio branch's configuration, and every tensor of the front end and the audio
    branch (``model.frontend``, ``model.cnn``): a checkpoint that only differs in its
    head or lyrics branch gets the same id; any change to how audio is heard, an
    upgrade that decodes differently included, gets another.
    """
    import json

    from .audio import decoding_fingerprint

    cfg = model.config
    digest = hashlib.sha256()
    branch = {"audio_branch": cfg.audio_branch, "musicnn_features": cfg.musicnn_features,
              "audio_dim": cfg.audio_vector_dim}
    digest.update(json.dumps({"audio": audio_config.to_dict(), "decoding": decoding_fingerprint(),
                              "branch": branch}, sort_keys=True).encode())
    for prefix, module in (("frontend.", model.frontend), ("cnn.", model.cnn)):
        update_with_tensors(digest, module, prefix=prefix)
    return digest.hexdigest()[:32]


def bytes_on_disk(path: str | os.PathLike) -> int:
    """The size of a cache file with its WAL and shared-memory files (0 when absent)."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(os.fspath(path) + suffix).st_size
        except OSError:
            pass
    return total


class FeatureCache:
    """A SQLite file of per-window backbone features; safe to share between threads.

    >>> cache = FeatureCache(default_cache_path())            # doctest: +SKIP
    >>> ident = file_identity("song.mp3")                      # doctest: +SKIP
    >>> cache.get(backbone, ident, dim=200)                    # None, or (windows, 200) float32
    """

    def __init__(self, path: str | os.PathLike, *, identity: str = "stat", timeout: float = 10.0) -> None:
        if identity not in IDENTITIES:
            raise ValueError(f"identity must be one of {IDENTITIES}, not {identity!r}")
        self.path = Path(path)
        self.identity = identity
        self.timeout = timeout
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._read_only = False
        self.hits = self.misses = self.writes = 0
        self._open()

    # --------------------------------------------------------------- opening
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=self.timeout, check_same_thread=False,
                             isolation_level=None)  # explicit transactions only
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a power cut may lose the last transactions, never corrupt.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version}, expected {SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("feature cache %s: cannot create its folder (%s); running without it", self.path, exc)
            return
        try:
            self._db = self._connect()
            return
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc) or "read-only" in str(exc) or "unable to open" in str(exc):
                self._open_read_only(exc)
                return
            if "locked" in str(exc):
                log.warning("feature cache %s is locked by another process (%s); running without it",
                            self.path, exc)
                return
            broken: sqlite3.Error = exc
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed", schema
            broken = exc
        self._rebuild(broken)

    def _open_read_only(self, exc: Exception) -> None:
        if not self.path.is_file():
            log.warning("feature cache %s cannot be created (%s); running without it", self.path, exc)
            return
        try:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self.timeout,
                                       check_same_thread=False, isolation_level=None)
            self._db.execute("SELECT count(*) FROM features").fetchone()
            self._read_only = True
            log.warning("feature cache %s is read-only: it is used, new features are not stored", self.path)
        except sqlite3.Error as exc2:
            log.warning("feature cache %s cannot be read (%s); running without it", self.path, exc2)
            self._db = None

    def _rebuild(self, exc: Exception) -> None:
        aside = self.path.with_name(self.path.name + f".broken-{int(time.time())}")
        log.warning("feature cache %s is unusable (%s): moved to %s and rebuilt", self.path, exc, aside.name)
        try:
            for suffix in ("", "-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                if side.exists():
                    os.replace(side, Path(str(aside) + suffix))
            self._db = self._connect()
        except (OSError, sqlite3.Error) as exc2:
            log.warning("feature cache %s cannot be rebuilt (%s); running without it", self.path, exc2)
            self._db = None

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def _failed(self, what: str, exc: Exception) -> None:
        """Any unexpected SQLite error: warn once and go on without the cache."""
        log.warning("feature cache %s: %s failed (%s); features are computed without it for the rest "
                    "of this run", self.path, what, exc)
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:
                pass

    # ----------------------------------------------------------- reading/writing
    def identify(self, path: str | os.PathLike) -> FileIdentity:
        """:func:`file_identity` in this cache's identity mode."""
        return file_identity(path, identity=self.identity)

    def get(self, backbone: str, ident: FileIdentity, *, dim: int) -> np.ndarray | None:
        """The stored features [shape=(windows, dim)] float32, or None (absent, stale, damaged)."""
        with self._lock:
            if self._db is None:
                return None
            try:
                row = self._db.execute(
                    "SELECT size, mtime_ns, windows, dim, data FROM features WHERE backbone = ? AND file_key = ?",
                    (backbone, ident.key)).fetchone()
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc):
                    self.misses += 1
                    return None
                self._failed("a lookup", exc)
                return None
            except sqlite3.Error as exc:
                self._failed("a lookup", exc)
                return None
        if row is None:
            self.misses += 1
            return None
        size, mtime_ns, windows, stored_dim, data = row
        fresh = self.identity == "content" or (size == ident.size and mtime_ns == ident.mtime_ns)
        if not fresh or stored_dim != dim or windows < 1 or len(data) != windows * dim * 4:
            self.misses += 1  # changed file, other feature size or a damaged row: recompute, overwrite
            return None
        self.hits += 1
        return np.frombuffer(data, dtype=np.float32).reshape(windows, dim).copy()

    def put_many(self, backbone: str, rows: Sequence[tuple[FileIdentity, np.ndarray]]) -> int:
        """Store features [shape=(windows, dim)] per file in one transaction; returns rows stored.

        A locked database (another process writing) skips this batch: the features are
        recomputed next time, nothing is lost.
        """
        if not rows:
            return 0
        with self._lock:
            if self._db is None or self._read_only:
                return 0
            now = time.time()
            values = []
            for ident, feats in rows:
                arr = np.ascontiguousarray(feats, dtype=np.float32)
                values.append((backbone, ident.key, ident.size, ident.mtime_ns, int(arr.shape[0]),
                               int(arr.shape[1]), arr.tobytes(), now))
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    log.debug("feature cache %s is busy; %d entries not stored this time", self.path, len(rows))
                    return 0
                self._failed("a write", exc)
                return 0
            except sqlite3.Error as exc:
                self._failed("a write", exc)
                return 0
            self.writes += len(values)
            return len(values)

    # ------------------------------------------------- files that keep their audio
    def refresh(self, path: str | os.PathLike, before: FileIdentity) -> int:
        """After a write that changed only a file's tags: entries that matched the file as
        it was (``before``, taken just before the write) now match it as it is.

        Returns the entries updated. A content-identity cache hashes the whole file,
        tags included, so there is nothing to carry over.
        """
        if self.identity != "stat":
            return 0
        try:
            after = file_identity(path)
        except OSError:
            return 0
        return self._update("UPDATE features SET size = ?, mtime_ns = ? WHERE file_key = ? AND size = ? "
                            "AND mtime_ns = ?", (after.size, after.mtime_ns, before.key, before.size,
                                                 before.mtime_ns))

    def follow(self, source: str | os.PathLike, destination: str | os.PathLike) -> int:
        """A file moved, copied or linked elsewhere (same audio): its entries also serve
        the new path. Only entries of the same size as the destination are carried over.
        Returns the entries added."""
        if self.identity != "stat":
            return 0
        try:
            dest = file_identity(destination)
        except OSError:
            return 0
        src_key = _path_key(source)
        if src_key == dest.key:
            return 0
        return self._update(
            "INSERT OR REPLACE INTO features SELECT backbone, ?, ?, ?, windows, dim, data, stored "
            "FROM features WHERE file_key = ? AND size = ?",
            (dest.key, dest.size, dest.mtime_ns, src_key, dest.size))

    def _update(self, sql: str, params: tuple) -> int:
        with self._lock:
            if self._db is None or self._read_only:
                return 0
            try:
                cur = self._db.execute(sql, params)  # one statement: its own transaction
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    return 0  # the entry is recomputed next time
                self._failed("an update", exc)
                return 0
            except sqlite3.Error as exc:
                self._failed("an update", exc)
                return 0
            return max(cur.rowcount, 0)

    # ----------------------------------------------------------------- upkeep
    def bytes_on_disk(self) -> int:
        """The cache's size: the database plus its WAL and shared-memory files."""
        return bytes_on_disk(self.path)

    def _stale_keys(self) -> list[tuple[str, bytes]]:
        """Entries of ``stat`` identity whose file is gone or has another size or mtime."""
        assert self._db is not None
        stale = []
        for backbone, key, size, mtime_ns in self._db.execute(
                "SELECT backbone, file_key, size, mtime_ns FROM features"):
            if not key.startswith(_PATH_PREFIX):
                continue  # content-addressed entries stay valid wherever the file went
            try:
                st = os.stat(os.fsdecode(key[len(_PATH_PREFIX):]))
            except OSError:
                stale.append((backbone, key))
                continue
            if st.st_size != size or st.st_mtime_ns != mtime_ns:
                stale.append((backbone, key))
        return stale

    def stats(self, *, check_files: bool = True) -> CacheStats:
        """Entries per backbone, size on disk and (``check_files``) how many are stale."""
        with self._lock:
            if self._db is None:
                return CacheStats(str(self.path), self.bytes_on_disk(), 0, {}, None)
            rows = self._db.execute(
                "SELECT backbone, count(*), sum(windows) FROM features GROUP BY backbone").fetchall()
            stale = len(self._stale_keys()) if check_files else None
        backbones = {b: (int(n), int(w or 0)) for b, n, w in rows}
        return CacheStats(str(self.path), self.bytes_on_disk(), sum(n for n, _ in backbones.values()),
                          backbones, stale)

    def prune(self, *, keep_backbones: Iterable[str] | None = None) -> int:
        """Delete stale entries (file gone or changed) and, when ``keep_backbones`` is
        given, every entry of another backbone; then reclaim the space. Returns the
        number of entries deleted."""
        with self._lock:
            if self._db is None or self._read_only:
                return 0
            doomed = self._stale_keys()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM features WHERE backbone = ? AND file_key = ?", doomed)
                removed = len(doomed)
                if keep_backbones is not None:
                    keep = sorted(set(keep_backbones))
                    marks = ",".join("?" * len(keep))
                    cur = self._db.execute(f"DELETE FROM features WHERE backbone NOT IN ({marks})", keep)
                    removed += max(cur.rowcount, 0)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._compact()
            return removed

    def clear(self) -> int:
        """Delete every entry and reclaim the space; returns the number deleted."""
        with self._lock:
            if self._db is None or self._read_only:
                return 0
            cur = self._db.execute("DELETE FROM features")
            self._compact()
            return max(cur.rowcount, 0)

    def _compact(self) -> None:
        assert self._db is not None
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._db.close()
                except sqlite3.Error:
                    pass
                self._db = None

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
