"""A track's library row and its file, kept in step.

mmgenre stores the new genres in the row first, marked ``mmgenre_unwritten``, then
writes the file, then clears the mark. A kill anywhere in between leaves a marked row,
and the next run writes its file before anything else (:func:`pending_items`). A file
that cannot be written puts the row back as it was. After Ctrl-C during a write, the
file decides: new genres in it keep the row, old ones put it back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from beets.dbcore import types

if TYPE_CHECKING:
    from beets.library import Item, Library

#: Set on a track whose row holds new genres that are not yet in its file: written
#: (or retried) by the next run. A kill between the two writes leaves it behind.
PENDING = "mmgenre_unwritten"

_MISSING = object()


def pending_items(lib: Library) -> list[Item]:
    """The tracks a killed or failed run left marked: their files still need the row's genres."""
    return [it for it in lib.items(f"{PENDING}:true") if it.get(PENDING, False, with_album=False)]


def finish_pending(item: Item, *, write_file: Callable[[Item], bool]) -> bool:
    """Write a marked row's genres to its file and clear the mark; False (mark kept) on failure."""
    if not write_file(item):
        return False
    del item[PENDING]
    item.store()
    return True


def commit_mark(item: Item) -> None:
    """Commit the ``mmgenre_unwritten`` mark alone, before the row's new values.

    beets commits a transaction even when an exception (Ctrl-C) leaves it half-done,
    and ``store()`` writes the fixed fields (``genres``) before the flexible ones: in one
    store, an interrupt could commit the new genres without the mark. On its own, the
    mark is one atomic statement, so whatever is interrupted later is still marked.
    """
    item[PENDING] = True
    with item._db.transaction() as tx:
        tx.mutate(f"INSERT INTO {item._flex_table} (entity_id, key, value) VALUES (?, ?, ?)",
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
    return written


__all__ = ["PENDING", "pending_items", "finish_pending", "commit_mark", "snapshot_fields", "restore_fields",
           "settle_interrupted_write", "store_and_write"]
