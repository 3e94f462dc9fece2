"""``beet mmgenre --learn [QUERY]``: a model in the user's own genres, from their library.

Reads the tracks that have genres mmgenre did not write (their own, or their
album's when only the album has them), their audio features through the feature
cache, and fits a head with :func:`mmgenre_core.learn.learn_genre_head`. Nothing in
the library or the files changes; the model is saved as a normal checkpoint (with
``--pretend``: not at all).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beets import config, ui

if TYPE_CHECKING:
    from beets.library import Item, Library

DEFAULT_LEARNT_MODEL = "mmgenre-learnt.pt"


def labelled_items(plugin: Any, items: Sequence["Item"]) -> tuple[list[tuple["Item", list[str]]], int]:
    """(item, genres) for each item with genres its user owns (its own, else its album's),
    and how many items had only genres mmgenre wrote itself.

    Ownership is the tagging rules' (:func:`.tagging.user_genres`): exact, so a genre
    the user confirmed or corrected (mmgenre's "Classical" turned into "classical")
    counts, and mmgenre's untouched guesses never do.
    """
    from .tagging import user_genres

    albums: dict[int, Any] = {}
    out = []
    only_ours = 0
    for item in items:
        current, ours = plugin._previous(item)
        genres = user_genres(current, ours)
        if not current and item.album_id is not None:  # album-level genres only
            if item.album_id not in albums:
                albums[item.album_id] = item.get_album()
            album = albums[item.album_id]
            if album is not None:
                current, ours = plugin._previous(album)
                genres = user_genres(current, ours)
        if genres:
            out.append((item, genres))
        elif current:
            only_ours += 1
    return out, only_ours


def learnt_model_path(plugin: Any) -> Path:
    """Where the learnt model goes: ``learn_path``, relative to the beets config folder."""
    value = plugin.settings.learn_path
    path = Path(os.path.expanduser(value)) if value else Path(DEFAULT_LEARNT_MODEL)
    return path if path.is_absolute() else Path(config.config_dir()) / path


def run_learn(plugin: Any, lib: "Library", query: list[str], *, pretend: bool) -> None:
    import numpy as np
    import torch

    from mmgenre_core.checkpoint import save_checkpoint
    from mmgenre_core.learn import LabelledTrack, LearnError, learn_genre_head
    from . import tagging

    from .run import Progress

    options = plugin.tagging_options()
    min_tracks = plugin.settings.learn_min_tracks
    labelled, only_ours = labelled_items(plugin, list(lib.items(query)))
    left_out = (f"{only_ours} track(s) whose genres are mmgenre's own guesses were left out (a genre counts "
                "once you set or correct it, e.g. `beet modify genres=...`; `beet modify 'mmgenre_genres!'` "
                "makes a track's current genres yours)") if only_ours else ""
    if not labelled:
        raise ui.UserError("mmgenre --learn: no track matching the query has genres to learn from "
                           "(genres mmgenre wrote itself do not count)" + (f"; {left_out}" if left_out else ""))
    clf = plugin.classifier
    if not clf.checkpoint.model_config.use_audio:
        raise ui.UserError("mmgenre --learn: the configured model has no audio branch to learn over")
    present = [(item, genres) for item, genres in labelled if os.path.isfile(os.fsdecode(item.path))]
    missing = len(labelled) - len(present)
    ui.print_(f"mmgenre --learn: {len(present)} tagged tracks" + (f" ({missing} without a file, skipped)"
                                                                   if missing else ""))
    if left_out:
        plugin._log.warning("--learn: {}", left_out)
    progress = Progress(len(present), plugin._log)
    tracks, failed = [], 0
    try:
        for (item, genres), (features, error) in zip(present, clf.iter_features(
                [os.fsdecode(item.path) for item, _ in present],
                batch_size=plugin.settings.batch_size)):
            progress.update()
            if error is not None:
                failed += 1
                plugin._log.warning("mmgenre --learn: skipping {}: {}", item, error)
                continue
            artist = item.get("artist") or item.get("albumartist") or ""
            tracks.append(LabelledTrack(features, tuple(genres), artist or f"unknown:{item.id}"))
    finally:
        progress.close()

    def baseline(valid: Sequence[LabelledTrack]) -> list[str | None]:
        """The configured model's best genre per track, through genre_map and whitelist."""
        out: list[str | None] = []
        for start in range(0, len(valid), 256):
            part = valid[start:start + 256]
            probs, _ = clf._probabilities([torch.from_numpy(np.ascontiguousarray(t.features)) for t in part],
                                          [None] * len(part), False)
            for p in probs:
                ranked = tagging.rank_genres(dict(zip(clf.genres, map(float, p))), options)
                out.append(ranked[0][0] if ranked else None)
        return out

    try:
        checkpoint, report = learn_genre_head(tracks, base=clf.checkpoint, min_tracks=min_tracks,
                                              baseline=baseline)
    except LearnError as exc:
        raise ui.UserError(f"mmgenre --learn: {exc}; no model was saved") from exc
    ui.print_(report.describe(baseline_name=f"{clf.model_id} through genre_map"))
    if failed:
        ui.print_(f"{failed} track(s) could not be decoded and were left out")
    if pretend:
        ui.print_("mmgenre --learn (pretend): nothing saved")
        return
    path = learnt_model_path(plugin)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, checkpoint)  # atomic: an old model there stays whole if this fails
    except OSError as exc:
        raise ui.UserError(f"mmgenre --learn: cannot save the model to {path}: {exc.strerror or exc} "
                           "(set learn_path to a writable place)") from exc
    ui.print_(f"saved {path}\nto tag with it, set in your beets config:\n  mmgenre:\n    model: {path}")
