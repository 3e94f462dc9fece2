"""One run of the plugin: its settings and running state, in one object passed to each step.

:class:`Run` bundles what every step of tagging needs (the tagging options, the
:class:`RunMode`, the summaries, the progress display, the model id and the buffered
database writes) instead of passing them one by one through four methods.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from beets.library import Library

    from .tagging import TaggingOptions


class Progress:
    """A progress bar on a terminal (tqdm, on stderr), else a log line every ``interval`` s."""

    def __init__(self, total: int, log: Any, *, unit: str = "track", interval: float = 30.0,
                 enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.unit = unit
        self.log = log
        self.interval = interval
        self.started = time.perf_counter()
        self._last_report = self.started
        self.bar = None
        from mmgenre_core.native_stderr import stderr_columns, stderr_is_terminal

        # The run's stderr may be the decoder-noise filter's pipe: ask where it really goes.
        if enabled and total > 1 and stderr_is_terminal():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit=unit, desc="mmgenre", file=sys.stderr, ncols=stderr_columns(),
                                leave=False, smoothing=0.1)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self.bar = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        return self.done / max(self.elapsed, 1e-9)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last_report >= self.interval and self.done < self.total:
            self._last_report = now
            self.log.info("{}/{} {}s, {:.1f} {}s/s", self.done, self.total, self.unit, self.rate, self.unit)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Print around the bar without tearing it."""
        if self.bar is None:
            yield
        else:
            with self.bar.external_write_mode():
                yield

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Summary:
    """Counts of one run: tagged, unchanged, skipped (with reasons), failed (with reasons)."""

    def __init__(self, kind: str = "track") -> None:
        self.kind = kind
        self.classified = 0
        self.tagged = 0
        self.unchanged = 0
        self.skipped: Counter = Counter()
        self.failed: Counter = Counter()

    @property
    def total(self) -> int:
        return self.tagged + self.unchanged + sum(self.skipped.values()) + sum(self.failed.values())

    def add(self, status: str, reason: str | None = None) -> None:
        from . import tagging

        if status == tagging.TAGGED:
            self.tagged += 1
        elif status == tagging.UNCHANGED:
            self.unchanged += 1
        elif status == tagging.SKIPPED:
            self.skipped[reason or "skipped"] += 1
        else:
            self.failed[reason or "failed"] += 1

    def describe(self, *, pretend: bool = False) -> str:
        n = self.total
        parts = [f"{self.tagged} {'would be tagged' if pretend else 'tagged'}", f"{self.unchanged} unchanged"]
        n_skipped = sum(self.skipped.values())
        if n_skipped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in self.skipped.most_common())
            parts.append(f"{n_skipped} skipped ({reasons})")
        else:
            parts.append("0 skipped")
        parts.append(f"{sum(self.failed.values())} failed")
        return f"{n} {self.kind}{'' if n == 1 else 's'}: " + ", ".join(parts)


@dataclass(frozen=True)
class RunMode:
    """How one run treats the library and the files.

    write: write changed genres to the files; pretend: change nothing, show what
    would change; show: print each change; stage: inside ``beet import`` (log at
    info, no progress bar); mark_unwritten: an as-is import, whose files beets will
    not write: rows are marked for ``write_imported``.
    """

    write: bool = False
    pretend: bool = False
    show: bool = False
    stage: bool = False
    mark_unwritten: bool = False


#: Rows stored per database transaction (at most every 2 s). Independent of the model's
#: ``batch_size``: a transaction is cheap whatever its size, and a bigger model batch
#: should not hold changed rows back longer.
STORE_BATCH = 64


class StoreBuffer:
    """Stores changed objects in groups: one database transaction per ``size`` objects.

    Objects wait at most ``max_wait`` seconds; nothing holds the database lock
    while the model computes.
    """

    def __init__(self, lib: Library, size: int, max_wait: float = 2.0) -> None:
        self.lib = lib
        self.size = max(1, size)
        self.max_wait = max_wait
        self._pending: list[Any] = []
        self._since = 0.0

    def add(self, obj: Any) -> None:
        if not self._pending:
            self._since = time.perf_counter()
        self._pending.append(obj)
        if len(self._pending) >= self.size or time.perf_counter() - self._since >= self.max_wait:
            self.flush()

    def flush(self) -> None:
        from beets.library import Album

        if not self._pending:
            return
        pending, self._pending = self._pending, []
        with self.lib.transaction():
            for obj in pending:
                if isinstance(obj, Album):
                    # No inheritance: the album's genres must not overwrite its tracks' own.
                    obj.store(inherit=False)
                else:
                    obj.store()


@dataclass
class Run:
    """What one run of ``beet mmgenre`` (or one import task) works with."""

    options: TaggingOptions
    mode: RunMode
    summary: Summary  # the tracks'
    album_summary: Summary | None = None  # with -a, and album imports
    model_id: str = ""
    progress: Progress | None = None
    store: StoreBuffer | None = None

    def open(self, lib: Library, total: int, log: Any, model_id: str) -> None:
        """Start the progress display and the buffered stores for ``total`` tracks."""
        self.model_id = model_id
        self.progress = Progress(total, log, enabled=not self.mode.stage)
        self.store = StoreBuffer(lib, STORE_BATCH)

    def close(self) -> None:
        """Store what is buffered and close the progress display."""
        if self.store is not None:
            self.store.flush()
        if self.progress is not None:
            self.progress.close()


__all__ = ["Progress", "Summary", "RunMode", "StoreBuffer", "STORE_BATCH", "Run"]
