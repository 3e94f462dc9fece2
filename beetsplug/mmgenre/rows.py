"""A track's library row and its file, kept in step.

mmgenre stores the new genres in the row first, marked ``mmgenre_unwritten``, then
writes the file, then clears the mark. A kill anywhere in between leaves a marked row,
and the next run writes its file before anything else (:func:`pending_items`). A file
that cannot be written puts the row back as it was. After Ctrl-C during a write, the
file decides: new genres in it keep the row, old ones put it back.

Ctrl-C elsewhere (between a row and its file; or during ``beet import``, whose pipeline
stops before the files of rows already tagged are written) is settled before the
process exits: :data:`MARKED_HERE` knows the rows this process marked and has not
finished, and :func:`finish_marked_here` writes their files (the command calls it on
the interrupt, an ``atexit`` hook after beets' own handling of Ctrl-C in an import).
Only this process's rows: another run's marks are that run's to finish.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from beets.dbcore import types

if TYPE_CHECKING:
    from beets.library import Item, Library

#: Set on a track whose row holds new genres that are not yet in its file: written
#: (or retried) by the next run. A kill between the two writes leaves it behind.
PENDING = "mmgenre_unwritten"

_MISSING = object()


class MarkedRows:
    """The rows this process marked ``mmgenre_unwritten`` and has not finished yet."""

    def __init__(self) -> None:
        self.lib: Library | None = None
        self.ids: set[int] = set()

    def add(self, item: Item) -> None:
        self.lib = item._db
        self.ids.add(item.id)

    def discard(self, item: Item) -> None:
        self.ids.discard(item.id)


MARKED_HERE = MarkedRows()


def pending_items(lib: Library) -> list[Item]:
    """The tracks a killed or failed run left marked: their files still need the row's genres."""
    return [it for it in lib.items(f"{PENDING}:true") if it.get(PENDING, False, with_album=False)]


def finish_pending(item: Item, *, write_file: Callable[[Item], bool]) -> bool:
    """Write a marked row's genres to its file and clear the mark; False (mark kept) on failure."""
    if not write_file(item):
        return False
    clear_mark(item)
    return True


def clear_mark(item: Item) -> None:
    """Remove the ``mmgenre_unwritten`` mark from the row (its file holds the row's genres)."""
    if PENDING in item:
        del item[PENDING]
    item.store()
    MARKED_HERE.discard(item)


def finish_marked_here(*, write_file: Callable[[Item], bool]) -> tuple[int, int]:
    """Write the files of the rows this process marked and did not finish (after an
    interrupt); returns (written, still marked). Rows another process changed since
    (no longer marked) are left alone.

    Works on a second handle on the library: the interrupt may have struck inside one of
    beets' transactions and left its lock taken for good (see :func:`_second_handle`).
    """
    lib = MARKED_HERE.lib
    if lib is None or not MARKED_HERE.ids:
        return 0, 0
    fresh = _second_handle(lib)
    written = failed = 0
    try:
        for item_id in sorted(MARKED_HERE.ids):
            item = fresh.get_item(item_id)
            if item is None or not item.get(PENDING, False, with_album=False):
                continue
            if finish_pending(item, write_file=write_file):
                written += 1
            else:
                failed += 1
    finally:
        MARKED_HERE.ids.clear()
        if fresh is not lib:
            fresh._close()
    return written, failed


def _second_handle(lib: Library) -> Library:
    """A new :class:`Library` on ``lib``'s database file, after rolling back whatever
    transaction an interrupt left open on ``lib``'s connection.

    beets' ``Transaction.__exit__`` commits and then releases a non-reentrant lock; Ctrl-C
    between the two (or between its ``__enter__``'s acquire and return) leaves that lock
    held with no one to release it, and any later transaction on ``lib`` waits forever.
    An uncommitted transaction is rolled back, as closing the process would.
    """
    from beets.library import Library

    if os.fsdecode(lib.path) == ":memory:":  # no file to open twice (tests)
        return lib
    try:
        connection = lib._connection()
        if connection.in_transaction:
            connection.rollback()
    except sqlite3.Error:
        pass
    return Library(lib.path, os.fsdecode(lib.directory), set_music_dir=False)


def commit_mark(item: Item) -> None:
    """Commit the ``mmgenre_unwritten`` mark alone, before the row's new values.

    beets commits a transaction even when an exception (Ctrl-C) leaves it half-done,
    and ``store()`` writes the fixed fields (``genres``) before the flexible ones: in one
    store, an interrupt could commit the new genres without the mark. On its own, the
    mark is one atomic statement, so whatever is interrupted later is still marked.
    """
    item[PENDING] = True
    MARKED_HERE.add(item)  # first: an interrupt after the commit must find it
    with item._db.transaction() as tx:
        tx.mutate(f"INSERT OR REPLACE INTO {item._flex_table} (entity_id, key, value) VALUES (?, ?, ?)",
                  (item.id, PENDING, types.BOOLEAN.to_sql(True)))


def snapshot_fields(item: Item, fields: tuple[str, ...]) -> dict[str, Any]:
    """The item's own values of ``fields`` and its mtime (``_MISSING``: not set)."""
    # mtime last: beets zeroes it whenever a tag field is set, so it is put back after them.
    return {key: item.get(key, _MISSING, with_album=False) for key in (*fields, "mtime")}


def restore_fields(item: Item, before: dict[str, Any]) -> None:
    """Put back what :func:`snapshot_fields` took."""
    for key, value in before.items():
        if value is _MISSING:
            if key in item:
                del item[key]
        else:
            item[key] = value


def settle_interrupted_write(item: Item, before: dict[str, Any]) -> None:
    """After an interrupted write, make the row match what the file now holds.

    The file has the new genres: keep the new row, clear the mark. It has the old
    ones: put the row back. It cannot be read: leave the mark for the next run.
    """
    from .filewrite import read_genres

    in_file = read_genres(item.path)
    wanted = list(item.get("genres", with_album=False) or [])
    if in_file is None:
        return
    if in_file == wanted:
        del item[PENDING]
        item.mtime = item.current_mtime()
    else:
        restore_fields(item, before)
    item.store()
    MARKED_HERE.discard(item)


def store_and_write(item: Item, before: dict[str, Any], *, write_file: Callable[[Item], bool]) -> bool:
    """Store ``item``'s new row, write its file, and keep the two in step.

    First the mark ``mmgenre_unwritten`` (its own commit), then the row's new
    values, then the file, then the mark is cleared (the last statement of the last
    commit). Why this order: the row is the cheap, transactional side; if the
    process dies anywhere in between, the mark tells the next run to write the
    file, so a kill at any point leaves either both sides old, or a marked row that
    the next run finishes. If the file cannot be written, the row is put back as it
    was and the track counts as failed (the caller counts it): library and file never
    disagree.
    """
    commit_mark(item)
    item.store()
    try:
        written = write_file(item)
    except BaseException:
        # Ctrl-C during the write. A write cut short is undone (filewrite), but the
        # interrupt may also land just after the file was written: the file decides.
        settle_interrupted_write(item, before)
        raise
    if written:
        del item[PENDING]
    else:
        restore_fields(item, before)
    item.store()
    MARKED_HERE.discard(item)
    return written


__all__ = ["PENDING", "MARKED_HERE", "pending_items", "finish_pending", "finish_marked_here", "clear_mark",
           "commit_mark", "snapshot_fields", "restore_fields", "settle_interrupted_write", "store_and_write"]
