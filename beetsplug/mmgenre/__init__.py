"""Tags genres by listening to the audio and reading the lyrics (mmgenre).

``beet mmgenre [-f] [-k] [-p] [-a] [--no-lyrics] [QUERY]`` classifies the matching
tracks (or albums) with the fused CNN + HAN model of mmgenre, and imports are
tagged automatically (``auto: yes``). Per track it sets the list field
``genres`` and the typed flexible attributes ``mmgenre_genre`` (best genre),
``mmgenre_confidence`` (its probability), ``mmgenre_lyrics`` (whether lyrics were
used), ``mmgenre_model`` (model id) and ``mmgenre_genres`` (the genres mmgenre
wrote, so a rerun replaces its own guesses and never, without ``--force``, the
user's).

Nothing heavy is imported at module level: torch and the model load on the first
classification, so enabling the plugin does not slow down ``beet ls``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, ClassVar

from beets import config, ui
from beets.dbcore import types
from beets.plugins import BeetsPlugin


class _LazyModule:
    """A module imported on first attribute access (keeps ``beet ls`` start-up lean)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        module = importlib.import_module(self._name)
        self.__dict__.update(vars(module))
        return getattr(module, attr)


if TYPE_CHECKING:
    from beets.importer import ImportSession, ImportTask
    from beets.library import Album, Item, Library, LibModel

    from . import tagging
    from mmgenre_core.genius import GeniusClient
    from mmgenre_core.predict import GenreClassifier, TrackPrediction
else:
    tagging = _LazyModule("beetsplug.mmgenre.tagging")


from . import lyrics as lyrics_chain  # noqa: E402 - light: no beets, torch or network at import
from . import rows  # noqa: E402
from . import settings as settings_module  # noqa: E402
from .rows import PENDING  # noqa: E402
from .run import Progress, Run, RunMode, Summary  # noqa: E402

SKIP_NO_FILE = "file not found"
SKIP_BROKEN_LINK = "symbolic link that points nowhere or in a loop"

#: Fields shown by ``--pretend`` and after each change.
SHOWN_FIELDS = ("genres",)


class Confidence(types.Float):
    """A probability, shown with two decimals (``beet ls -f '$mmgenre_confidence'``)."""

    def __init__(self) -> None:
        super().__init__(digits=2)


CONFIDENCE = Confidence()


class GenreNames(types.String):
    """The genres mmgenre wrote (``mmgenre_genres``): several names in one string.

    Not a beets list type: beets reads a deleted flexible field as None, and its diff
    then fails on a list field (``beet modify 'mmgenre_genres!'`` ended in a TypeError).
    The names are kept joined by beets' multi-value delimiter, as its list fields store
    them (so rows written by earlier versions read the same), and shown joined by "; ".
    """

    SHOWN = "; "

    def normalize(self, value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return types.MULTI_VALUE_DELIMITER.join(str(v) for v in value)
        return "" if value is None else str(value)

    def parse(self, string: str) -> str:  # what a user types: "Rock; Pop"
        return self.normalize([name for name in string.split(self.SHOWN) if name] if string else [])

    def format(self, value: Any) -> str:
        return self.SHOWN.join(self.split(value))

    @staticmethod
    def split(value: Any) -> list[str]:
        """The names in a stored value (or a list)."""
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value if v]
        if not value:
            return []
        return [name for name in str(value).split(types.MULTI_VALUE_DELIMITER) if name]


GENRE_NAMES = GenreNames()


ITEM_FIELD_TYPES: dict[str, types.Type] = {
    "mmgenre_genre": types.STRING,
    "mmgenre_confidence": CONFIDENCE,
    "mmgenre_lyrics": types.BOOLEAN,
    "mmgenre_model": types.STRING,
    "mmgenre_genres": GENRE_NAMES,
    PENDING: types.BOOLEAN,
}
# Albums use their own names: beets lets an item query see its album's flexible
# fields, so an album's "mmgenre_genre" would show on a track mmgenre could not
# classify (``beet ls mmgenre_genre:Rock`` matched it).
ALBUM_FIELD_TYPES: dict[str, types.Type] = {
    "mmgenre_album_genre": types.STRING,
    "mmgenre_album_confidence": CONFIDENCE,
    "mmgenre_album_lyrics": types.BOOLEAN,
    "mmgenre_album_model": types.STRING,
    "mmgenre_album_genres": GENRE_NAMES,
}
#: Album fields of mmgenre before 0.4 (same names as the items'), moved on the next album run.
LEGACY_ALBUM_FIELDS = ("mmgenre_genre", "mmgenre_confidence", "mmgenre_lyrics", "mmgenre_model", "mmgenre_genres")
#: Everything an item run may change, for putting a row back when its file cannot be written.
ITEM_TRACKED_FIELDS = ("genres", "lyrics", *ITEM_FIELD_TYPES)
SKIP_WRITE_FAILED = "file not written"


# --------------------------------------------------------------------------- #
# Run bookkeeping: progress and summary
# --------------------------------------------------------------------------- #


class _Classified:
    """One classified track: the model's answer and where its lyrics came from."""

    __slots__ = ("item", "prediction", "lyrics_source", "lyrics_text")

    def __init__(self, item: Item, prediction: TrackPrediction | None, lyrics_source: str,
                 lyrics_text: str | None = None) -> None:
        self.item = item
        self.prediction = prediction
        self.lyrics_source = lyrics_source  # one of lyrics_chain.SOURCES
        self.lyrics_text = lyrics_text

    @property
    def ok(self) -> bool:
        return self.prediction is not None and self.prediction.error is None


# --------------------------------------------------------------------------- #
# The plugin
# --------------------------------------------------------------------------- #


class MMGenrePlugin(BeetsPlugin):
    item_types: ClassVar[dict[str, types.Type]] = dict(ITEM_FIELD_TYPES)
    album_types: ClassVar[dict[str, types.Type]] = dict(ALBUM_FIELD_TYPES)

    def __init__(self) -> None:
        super().__init__("mmgenre")
        self.config.add(settings_module.DEFAULTS)
        self.settings, self.config_problems = settings_module.read_settings(self.config)
        # Only a real token is hidden: "REDACTED" for an unset one misleads (beet config).
        if self.settings.genius_token:
            self.config["genius_token"].redact = True
        self._import_error: str | None = None
        self._exit_hook = False
        self.write_failures = 0
        # A bad `auto` value still gets the stage, which then says what is wrong.
        if self.settings.auto or any(p.startswith("auto:") for p in self.config_problems):
            self.import_stages = [self.imported]
            self.register_listener("import_task_files", self.write_imported)
            self.register_listener("after_write", self._beets_wrote)
        # Files whose audio stays the same keep their cached features: tag writes (by
        # beets or by us) and moves/copies into the library would otherwise look like
        # new files to a cache keyed by path, size and mtime.
        self._stat_before_write: dict[bytes, Any] = {}
        if self.settings.cache:
            self.register_listener("write", self._cache_before_write)
            self.register_listener("after_write", self._cache_after_write)
            for event in ("item_moved", "item_copied", "item_hardlinked", "item_reflinked"):
                self.register_listener(event, self._cache_follow)

    # ------------------------------------------------------------ configuration
    def fresh_settings(self) -> settings_module.Settings:
        """The settings as the config stands now (it may have changed since the plugin
        was built: command-line options, tests); bad options fall back to defaults."""
        self.settings, self.config_problems = settings_module.read_settings(self.config)
        return self.settings

    def checked_settings(self) -> settings_module.Settings:
        """The settings, re-read (command-line options included); ui.UserError, one line
        per bad option, when any is invalid."""
        self.fresh_settings()
        if self.config_problems:
            lines = "\n".join(f"  {problem}" for problem in self.config_problems)
            raise ui.UserError(f"mmgenre: invalid configuration ({len(self.config_problems)} "
                               f"option{'s' if len(self.config_problems) > 1 else ''}):\n{lines}")
        return self.settings

    def tagging_options(self) -> tagging.TaggingOptions:
        """The genre rules from the configuration (raises ui.UserError when invalid)."""
        from .vocabulary import VocabularyError

        s = self.checked_settings()
        try:
            return _tagging_options(s)
        except (ValueError, VocabularyError) as exc:  # pragma: no cover - read_settings checked every value
            raise ui.UserError(f"mmgenre: invalid configuration: {exc}") from exc

    @cached_property
    def classifier(self) -> GenreClassifier:
        """The model, loaded on first use (this is where torch gets imported)."""
        self._started = time.perf_counter()
        from mmgenre_core.errors import MMGenreError
        from mmgenre_core.predict import GenreClassifier

        s = self.fresh_settings()
        try:
            from mmgenre_core.device import configure_cpu_threads

            threads = configure_cpu_threads(s.threads, device=s.device)
            if threads is not None:
                self._log.debug("{} CPU thread(s) for the model", threads)
            clf = GenreClassifier.load(s.model, device=s.device, feature_cache=self._feature_cache())
        except MMGenreError as exc:
            raise ui.UserError(f"mmgenre: cannot load the model: {exc}") from exc
        self.load_seconds = time.perf_counter() - self._started
        self._log.debug("model {} on {} ({} genres), loaded in {:.2f} s", clf.model_id, clf.device, len(clf.genres),
                        self.load_seconds)
        self._warn_about_unknown_names(clf.genres)
        return clf

    def _warn_about_unknown_names(self, model_genres: Sequence[str]) -> None:
        """Warn about names in ``genre_map`` and ``whitelist`` the model can never produce
        (a whitelist of Folk and Spoken for a model without them tags nothing, silently)."""
        from mmgenre_core.genre_map import genre_key, map_genre

        from .vocabulary import VocabularyError

        s = self.settings
        known = {genre_key(g) for g in model_genres}
        unknown_sources = [g for g in s.genre_map if genre_key(g) not in known]
        if unknown_sources:
            self._log.warning("genre_map names {}, which the model never answers (its genres: {})",
                              ", ".join(unknown_sources), ", ".join(model_genres))
        if not s.whitelist or self.config["whitelist"].get() is True:
            return  # none, or lastgenre's whole list: most of it is beyond any model
        try:
            genre_map = _tagging_options(s).genre_map
        except (ValueError, VocabularyError):
            return
        reachable = {genre_key(name) for g in model_genres if (name := map_genre(g, genre_map)) is not None}
        unreachable = [g for g in s.whitelist if genre_key(g) not in reachable]
        if unreachable:
            self._log.warning("the whitelist names {}, which the model (after genre_map) never answers",
                              ", ".join(unreachable))

    def _feature_cache(self) -> Any:
        """The feature cache (``cache``, ``cache_path``), shared with ``mmgenre predict``; None when off."""
        if not self.settings.cache:
            return None
        return self.feature_cache

    @cached_property
    def feature_cache(self) -> Any:
        """The cache file, opened on first use (no torch needed)."""
        from mmgenre_core.feature_cache import FeatureCache, default_cache_path

        where = self.fresh_settings().cache_path or default_cache_path()
        self._log.debug("feature cache {}", where)
        return FeatureCache(where)

    def _cache_before_write(self, item: Item, path: bytes, **_: Any) -> None:
        from mmgenre_core.feature_cache import file_identity

        try:
            self._stat_before_write[bytes(path)] = file_identity(os.fsdecode(path))
        except OSError:
            pass

    def _cache_after_write(self, item: Item, path: bytes, **_: Any) -> None:
        before = self._stat_before_write.pop(bytes(path), None)
        if before is not None:
            self.feature_cache.refresh(os.fsdecode(path), before)

    def _cache_follow(self, item: Item, source: bytes, destination: bytes, **_: Any) -> None:
        self.feature_cache.follow(os.fsdecode(source), os.fsdecode(destination))

    @cached_property
    def genius(self) -> GeniusClient | None:
        """The Genius client, or None when no ``genius_token`` is configured."""
        s = self.fresh_settings()
        if not s.genius_token:
            return None
        from mmgenre_core.genius import GeniusClient

        return GeniusClient(
            s.genius_token,
            timeout=s.genius_timeout,
            cache_dir=s.genius_cache,
            api_root=s.genius_api_root,
            web_root=s.genius_web_root,
            warn=lambda message: self._log.warning("{}", message),
            debug=lambda message: self._log.debug("{}", message),
        )

    def _use_lyrics(self) -> bool:
        return self.settings.lyrics and self.classifier.uses_lyrics

    # ---------------------------------------------------------------- commands
    def commands(self) -> list[ui.Subcommand]:
        cmd = ui.Subcommand("mmgenre", help="tag genres from the audio and lyrics")
        cmd.parser.usage = "%prog [options] [QUERY]"
        # The options lastgenre has, with lastgenre's letters and meaning (see commands_match_lastgenre
        # in the tests); the default is -A: mmgenre hears each track.
        cmd.parser.add_option("-p", "--pretend", dest="pretend", action="store_true", default=None,
                              help="show what would change, change nothing")
        cmd.parser.add_option("-f", "--force", dest="force", action="store_true", default=None,
                              help="replace genres the tracks already have")
        cmd.parser.add_option("-F", "--no-force", dest="force", action="store_false",
                              help="keep genres the tracks already have (undoes force: yes)")
        cmd.parser.add_option("-k", "--keep-existing", dest="keep_existing", action="store_true", default=None,
                              help="add the new genres to the existing ones")
        cmd.parser.add_option("-K", "--no-keep-existing", dest="keep_existing", action="store_false",
                              help="replace, do not add to, existing genres (undoes keep_existing: yes)")
        cmd.parser.add_option("-A", "--items", dest="album", action="store_false", default=None,
                              help="tag tracks, each from its own audio and lyrics (the default)")
        cmd.parser.add_option("-a", "--albums", "--album", dest="album", action="store_true",
                              help="tag albums from their tracks' combined probabilities, and the tracks that "
                                   "have no genre of their own (all of them with -f) with the album's genres")
        cmd.parser.add_option("--no-lyrics", dest="lyrics", action="store_false", default=None,
                              help="classify from the audio alone")
        cmd.parser.add_option("--no-cache", dest="cache", action="store_false", default=None,
                              help="neither read nor store audio features in the feature cache")
        cmd.parser.add_option("--learn", dest="learn", action="store_true", default=False,
                              help="learn a model in your own genres from the matching tracks that have "
                                   "genres (changes nothing in the library or files)")
        cmd.parser.add_option("--min-tracks", dest="learn_min_tracks", type="int", default=None, metavar="N",
                              help="--learn: genres need at least N tagged tracks (default 5)")
        cmd.func = self.command
        return [cmd]

    def command(self, lib: Library, opts: Any, args: list[str]) -> None:
        learn = bool(vars(opts).pop("learn", False))
        self.config.set_args(vars(opts))
        options = self.tagging_options()
        pretend = self.settings.pretend
        with _library_errors_as_user_errors():
            if learn:
                from .learn import run_learn

                with _quiet_decoders():
                    run_learn(self, lib, args, pretend=pretend)
                return
            self._tag_command(lib, args, options, pretend)

    def _tag_command(self, lib: Library, args: list[str], options: tagging.TaggingOptions, pretend: bool) -> None:
        write = ui.should_write() and not pretend
        self.write_failures = 0
        if write:
            self.finish_pending_writes(lib)
        mode = RunMode(write=write, pretend=pretend, show=True)
        try:
            with _quiet_decoders():
                run = self._run_command(lib, args, options, mode)
        except KeyboardInterrupt:
            # Ctrl-C: rows this run stored but did not write yet get their files now,
            # so the library and the files agree once beet has exited.
            self._finish_marked_rows("interrupted")
            raise SystemExit(130) from None
        summaries = [s for s in (run.album_summary, run.summary) if s is not None]
        n_classified = run.summary.classified
        rate = ""
        if n_classified and run.progress is not None:
            # From the first track on: the model's load is its own figure, not part of the rate.
            elapsed = run.progress.elapsed
            rate = f" in {elapsed:.1f} s ({n_classified / max(elapsed, 1e-9):.1f} tracks/s"
            load = vars(self).get("load_seconds")
            rate += f"; model loaded in {load:.1f} s)" if load is not None else ")"
        prefix = "mmgenre (pretend)" if pretend else "mmgenre"
        ui.print_(f"{prefix}: " + "; ".join(s.describe(pretend=pretend) for s in summaries) + rate)
        genius = vars(self).get("genius")  # only if this run made one
        if genius is not None and genius.token_rejected:
            ui.print_(f"{prefix}: {genius.disabled_reason}; no lyrics came from Genius in this run: set "
                      "genius_token to a valid client access token (https://genius.com/api-clients)")
        if self.write_failures:
            raise ui.UserError(f"mmgenre: {self.write_failures} file(s) could not be written; "
                               "their library rows were left as they were (see the warnings above)")

    def _finish_marked_rows(self, why: str) -> None:
        """Write the files of rows this process stored and marked but has not written
        (after Ctrl-C; at exit after an interrupted import). Never raises."""
        try:
            written, failed = rows.finish_marked_here(write_file=self._write_file)
        except KeyboardInterrupt:
            self._log.warning("stopped again; the next `beet mmgenre` run writes the files of the "
                              "tracks still marked unwritten")
            return
        except Exception as exc:  # the library is gone or locked: the marks stay for the next run
            self._log.warning("{}: could not finish the tracks marked unwritten ({}); the next "
                              "`beet mmgenre` run writes them", why, exc)
            return
        if written or failed:
            self._log.info("{}; wrote the genres of {} track(s) the library already had to their "
                           "files{}", why, written,
                           f", {failed} could not be written and stay marked for the next run" if failed else "")

    def _exit_hook_once(self) -> None:
        """Finish this process's marked rows at exit: beets ends an import on Ctrl-C after
        the tracks of a task are tagged but before their files are written."""
        if not self._exit_hook:
            import atexit

            atexit.register(self._finish_marked_rows, "import interrupted")
            self._exit_hook = True

    def _run_command(self, lib: Library, args: list[str], options: tagging.TaggingOptions,
                     mode: RunMode) -> Run:
        if self.settings.album:
            run = Run(options, mode, Summary("track"), album_summary=Summary("album"))
            self.tag_albums(lib, list(lib.albums(args)), run)
        else:
            run = Run(options, mode, Summary("track"))
            self.tag_items(lib, list(lib.items(args)), run)
        return run

    # ------------------------------------------------------------- file writes
    def finish_pending_writes(self, lib: Library) -> None:
        """Write the files of rows a killed run stored but did not get to write."""
        from .rows import pending_items

        pending = pending_items(lib)
        if not pending:
            return
        self._log.info("writing the genres of {} track(s) an interrupted run left unwritten", len(pending))
        for item in pending:
            if not self._finish_pending(item):
                self.write_failures += 1

    def _finish_pending(self, item: Item) -> bool:
        """Write a marked row's genres to its file and clear the mark; False (mark kept) on failure."""
        from .rows import finish_pending

        return finish_pending(item, write_file=self._write_file)

    def _write_file(self, item: Item) -> bool:
        """Write ``item``'s genres (and Genius lyrics it stores) to its file; False on failure.

        Only those tags change (see filewrite); on failure the file is left as it was.
        """
        from mmgenre_core.cli import display_text

        from .filewrite import FileWriteError, write_genres

        lyrics = item.get("lyrics", with_album=False) if self.settings.store_lyrics else None
        if self.settings.cache:
            self._cache_before_write(item, item.path)
        try:
            # MP3s get the ID3 version beets writes (id3v23): 2.4 by default, whose
            # multi-valued TCON keeps several genres apart.
            write_genres(item.path, list(item.get("genres", with_album=False) or []), lyrics=lyrics or None,
                         id3v23=config["id3v23"].get(bool))
        except FileWriteError as exc:
            self._stat_before_write.pop(bytes(item.path), None)
            self._log.warning("cannot write the genres of {} to {}: {}", item,
                              display_text(item.path), exc)
            return False
        item.mtime = item.current_mtime()  # so `beet update` does not take our write for an outside change
        if self.settings.cache:
            self._cache_after_write(item, item.path)
        return True

    # ------------------------------------------------------------- classifying
    def classify(self, items: Sequence[Item], progress: Progress | None = None) -> Iterator[_Classified]:
        """Classify ``items`` in batches, yielding one result per item, in order.

        Lyrics come from one chain (:mod:`.lyrics`: the library, the file's tags,
        Genius), looked up chunk by chunk in a background thread one chunk ahead of
        the model, so tag reads and network waits overlap with the model's work and
        results keep coming during a long run. The classifier only gets the text.
        """
        if not items:
            return
        clf = self.classifier
        use_lyrics = self._use_lyrics()
        genius = self.genius if use_lyrics else None
        batch_size = self.settings.batch_size
        size = max(64, 4 * batch_size)
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        queries = [[lyrics_chain.LyricsQuery.of(item) for item in part] for part in chunks] if use_lyrics else []
        debug = lambda message: self._log.debug("{}", message)  # noqa: E731
        find = partial(lyrics_chain.find_all, genius=genius, debug=debug)
        pending = _background(find, queries[0]) if use_lyrics else None
        try:
            for k, part in enumerate(chunks):
                found = pending.result() if pending is not None else [(None, lyrics_chain.NONE)] * len(part)
                if use_lyrics and k + 1 < len(chunks):
                    pending = _background(find, queries[k + 1])
                predictions = clf.iter_predict(
                    [os.fsdecode(item.path) for item in part],
                    lyrics=[text for text, _ in found] if use_lyrics else None,
                    use_lyrics=use_lyrics,
                    batch_size=batch_size,
                    top_k=len(clf.genres),
                    listen=self.settings.listen,
                )
                for (item, pred), (text, source) in zip(zip(part, predictions), found):
                    if pred.error is not None or pred.lyrics == "none":
                        source, text = lyrics_chain.NONE, None  # the model did not read them
                    if progress is not None:
                        progress.update()
                    yield _Classified(item, pred, source, text)
        except (KeyboardInterrupt, SystemExit):
            # Ctrl-C: a Genius lookup under way ends at its next read and none follows;
            # the lookup thread is a daemon, so exiting never waits for it.
            if genius is not None:
                genius.cancel()
            raise

    # ---------------------------------------------------------------- applying
    def _previous(self, obj: LibModel) -> tuple[list[str], list[str]]:
        """(current genres, genres mmgenre set earlier) of an item or album."""
        from beets.library import Item

        if isinstance(obj, Item):
            current = obj.get("genres", with_album=False) or []
            ours = obj.get("mmgenre_genres", None, with_album=False) or []
        else:
            current = obj.get("genres") or []
            ours = obj.get("mmgenre_album_genres") or obj.get("mmgenre_genres") or []  # or a legacy name
        return list(current), GenreNames.split(ours)

    @staticmethod
    def _set_fields(obj: LibModel, decision: tagging.Decision, lyrics_used: bool, model_id: str) -> None:
        from beets.library import Album

        prefix = "mmgenre_album_" if isinstance(obj, Album) else "mmgenre_"
        if isinstance(obj, Album):
            for key in LEGACY_ALBUM_FIELDS:  # names of mmgenre < 0.4 that leaked into item queries
                if key in obj:
                    del obj[key]
        obj["genres"] = decision.genres
        genre, confidence = decision.top if decision.top else ("", 0.0)
        obj[prefix + "genres"] = decision.added
        obj[prefix + "genre"] = genre
        obj[prefix + "confidence"] = round(float(confidence), 4)
        obj[prefix + "lyrics"] = bool(lyrics_used)
        obj[prefix + "model"] = model_id

    def _show(self, obj: LibModel, old: LibModel | None, progress: Progress | None) -> None:
        """Print ``obj``'s genre change against ``old`` (its state before the run; None: not shown)."""
        if old is None or list(old.get("genres") or []) == list(obj.get("genres") or []):
            return  # only genres are shown: nothing to print (and no query per item)
        with progress.paused() if progress is not None else contextlib.nullcontext():
            ui.show_model_changes(obj, old=old, fields=list(SHOWN_FIELDS))

    def _apply_item(self, done: _Classified, run: Run, *, probabilities: Mapping[str, float] | None = None,
                    unfamiliar: bool | None = None) -> tagging.Decision | None:
        """Decide and set one classified item's genres; returns the decision (None: failed).

        ``probabilities``, ``unfamiliar``: decide from these (its album's, with ``-a``)
        instead of the track's own.
        """
        options, mode, summary, progress, store = run.options, run.mode, run.summary, run.progress, run.store
        item = done.item
        summary.classified += 1
        if not done.ok:
            error = done.prediction.error if done.prediction is not None else "not classified"
            self._log.warning("cannot classify {}: {}", item, error)
            summary.add("failed", "could not be decoded")
            return None
        current, ours = self._previous(item)
        probs = probabilities if probabilities is not None else done.prediction.probabilities
        ranked = tagging.rank_genres(probs, options)
        unfamiliar = done.prediction.unfamiliar if unfamiliar is None else unfamiliar
        decision = tagging.decide(current, ours, ranked, options, unfamiliar=unfamiliar)
        top = f"{decision.top[0]} ({_shown_confidence(decision.top[1])})" if decision.top else "-"
        log = self._log.info if mode.stage else self._log.debug
        log("{}: {} -> {} [best: {}, lyrics: {}]", item, current, decision.genres, top,
            done.lyrics_source)
        if not decision.touch:
            summary.add(decision.status, decision.reason)
            return decision
        before = rows.snapshot_fields(item, ITEM_TRACKED_FIELDS)
        old = item.copy() if mode.show else None  # the diff is shown once the change has happened
        self._set_fields(item, decision, done.lyrics_source != lyrics_chain.NONE, run.model_id)
        if (done.lyrics_source == lyrics_chain.GENIUS and done.lyrics_text and self.settings.store_lyrics
                and not item.get("lyrics", with_album=False)):
            item["lyrics"] = done.lyrics_text
        if mode.pretend:
            self._show(item, old, progress)
            summary.add(decision.status, decision.reason)
            return decision
        changed_on_disk = decision.genres != current or "lyrics" in item._dirty
        if mode.write and changed_on_disk:
            store.flush()  # keep the row order: earlier rows before this one
            if not rows.store_and_write(item, before, write_file=self._write_file):
                self.write_failures += 1
                summary.add("failed", SKIP_WRITE_FAILED)
                return None
            self._show(item, old, progress)
        else:
            self._show(item, old, progress)
            if mode.mark_unwritten and changed_on_disk:
                rows.commit_mark(item)
            if item._dirty:
                store.add(item)
        summary.add(decision.status, decision.reason)
        return decision

    def tag_items(self, lib: Library, items: Sequence[Item], run: Run) -> None:
        """Classify and tag tracks (the command without ``-a``, and imports of singletons)."""
        todo = []
        for item in items:
            reason = self._pre_skip(item, run.options)
            if reason:
                run.summary.add(tagging.SKIPPED, reason)
                self._log.debug("skipping {}: {}", item, reason)
            else:
                todo.append(item)
        if not todo:
            return
        run.open(lib, len(todo), self._log, self.classifier.model_id)
        try:
            for done in self.classify(todo, run.progress):
                if _import_aborted():
                    break
                self._apply_item(done, run)
        finally:
            run.close()

    def _pre_skip(self, item: Item, options: tagging.TaggingOptions) -> str | None:
        current, ours = self._previous(item)
        reason = tagging.skip_reason(current, ours, options)
        if reason:
            return reason
        path = os.fsdecode(item.path)
        if not os.path.isfile(path):
            return SKIP_BROKEN_LINK if os.path.islink(path) else SKIP_NO_FILE
        return None

    def tag_albums(self, lib: Library, albums: Sequence[Album], run: Run, *,
                   album_items: Sequence[Sequence[Item]] | None = None, tracks_from_album: bool = True) -> None:
        """Tag albums from their tracks' combined probabilities, and their tracks.

        ``tracks_from_album`` (``-a``, lastgenre's way): each track is decided from its
        album's probabilities, so the album's genres go down to the tracks that have none
        of their own (all of them with ``force``). Otherwise (an import) each track is
        decided from its own. The album is stored without inheritance either way, so its
        genres never overwrite the tracks' own.
        """
        options, album_summary, track_summary = run.options, run.album_summary, run.summary
        assert album_summary is not None
        groups: list[tuple[Album, list[Item]]] = []
        for n, album in enumerate(albums):
            items = list(album_items[n]) if album_items is not None else list(album.items())
            current, ours = self._previous(album)
            album_skip = tagging.skip_reason(current, ours, options)
            present = [it for it in items if os.path.isfile(os.fsdecode(it.path))]
            for it in items:
                if it not in present:
                    track_summary.add(tagging.SKIPPED, SKIP_NO_FILE)
            needs_tracks = any(self._pre_skip(it, options) is None for it in present)
            if (album_skip and not needs_tracks) or not present:
                album_summary.add(tagging.SKIPPED, album_skip or "no track files")
                for it in present:
                    track_summary.add(tagging.SKIPPED, self._pre_skip(it, options))
                continue
            groups.append((album, present))
        if not groups:
            return
        flat = [it for _, its in groups for it in its]
        run.open(lib, len(flat), self._log, self.classifier.model_id)
        results = self.classify(flat, run.progress)
        try:
            for album, items in groups:
                if _import_aborted():
                    break
                done_items = [next(results) for _ in items]
                if tracks_from_album:
                    album_probs = self._apply_album(album, done_items, run)
                    album_unfamiliar = _album_unfamiliar(done_items)
                    for done in done_items:
                        self._apply_item(done, run, probabilities=album_probs if done.ok else None,
                                         unfamiliar=album_unfamiliar if done.ok else None)
                else:
                    for done in done_items:
                        self._apply_item(done, run)
                    self._apply_album(album, done_items, run)
        finally:
            run.close()

    def _apply_album(self, album: Album, done_items: Sequence[_Classified], run: Run) -> dict[str, float] | None:
        """Decide and set the album's genres; returns its combined probabilities (None: no
        track could be decoded)."""
        options, mode, summary, progress, store = run.options, run.mode, run.album_summary, run.progress, run.store
        assert summary is not None and store is not None
        ok = [d for d in done_items if d.ok]
        if not ok:
            self._log.warning("cannot classify album {}: none of its tracks could be decoded", album)
            summary.add("failed", "no track could be decoded")
            return None
        probs = tagging.combine_probabilities([d.prediction.probabilities for d in ok],
                                              [d.item.get("length") or 0.0 for d in ok])
        current, ours = self._previous(album)
        decision = tagging.decide(current, ours, tagging.rank_genres(probs, options), options,
                                  unfamiliar=_album_unfamiliar(ok))
        summary.add(decision.status, decision.reason)
        log = self._log.info if mode.stage else self._log.debug
        log("album {}: {} -> {}", album, current, decision.genres)
        if not decision.touch:
            return probs
        old = album.copy() if mode.show else None
        self._set_fields(album, decision, any(d.lyrics_source != lyrics_chain.NONE for d in ok), run.model_id)
        self._show(album, old, progress)
        if not mode.pretend and album._dirty:
            store.add(album)  # stored with inherit=False
        return probs

    # ------------------------------------------------------------------ import
    def imported(self, session: ImportSession, task: ImportTask) -> None:
        """Import stage: classify the task's items; never let a failure stop the import."""
        if self._import_error is not None:
            return
        items = task.imported_items()
        if not items:
            return
        try:
            options = self.tagging_options()
            self.classifier  # noqa: B018 - load now to report a missing model once
        except ui.UserError as exc:
            self._import_error = str(exc)
            self._log.error("{}; imports go on without genre tagging", exc)
            return
        summary = Summary("track")
        # The rows are marked unwritten until their files hold the genres: beets writes them
        # (after_write clears the mark), or for as-is imports, which beets does not write,
        # write_imported does. A mark outliving the import (Ctrl-C, a kill) is finished at
        # exit or by the next `beet mmgenre` run.
        writes = config["import"]["write"].get(bool)
        if writes:
            self._exit_hook_once()
        mode = RunMode(stage=True, mark_unwritten=writes)
        try:
            with _quiet_decoders():
                self._tag_task(session.lib, task, items, options, mode, summary)
        except Exception as exc:  # one bad task must not abort the import
            from mmgenre_core.cli import display_text

            self._log.warning("could not tag genres of {}: {}", task.paths and
                              display_text(task.paths[0]) or task, exc)
            self._log.debug("mmgenre import stage error", exc_info=True)
            return
        # A track left untagged as unfamiliar is news to the user (they may want to tag it
        # by hand): the task's summary is shown then, otherwise kept for -v.
        unfamiliar = summary.skipped.get(tagging.SKIP_UNFAMILIAR, 0)
        (self._log.info if unfamiliar else self._log.debug)("import: {}", summary.describe())

    def _tag_task(self, lib: Library, task: ImportTask, items: Sequence[Item], options: tagging.TaggingOptions,
                  mode: RunMode, summary: Summary) -> None:
        album = getattr(task, "album", None) if task.is_album else None
        if album is not None:
            self.tag_albums(lib, [album], Run(options, mode, summary, album_summary=Summary("album")),
                            album_items=[items], tracks_from_album=False)
        else:
            self.tag_items(lib, items, Run(options, mode, summary))

    def _beets_wrote(self, item: Item, path: bytes, **_: Any) -> None:
        """beets wrote all of ``item``'s tags (an import that applies metadata): its genres
        are in the file, so a mark mmgenre set on the row is done."""
        if item.id is not None and item.get(PENDING, False, with_album=False):
            rows.clear_mark(item)

    def write_imported(self, session: ImportSession, task: ImportTask) -> None:
        """Write the genres of an as-is import's tracks, which beets does not write itself
        (and of any track beets failed to write).

        Only the genre tag is written (see filewrite). A file that cannot be written
        keeps its mark and is retried by the next ``beet mmgenre`` run.
        """
        for item in task.imported_items():
            if item.get(PENDING, False, with_album=False) and not self._finish_pending(item):
                self._log.warning("{}: the genres stay marked as unwritten; the next `beet mmgenre` run "
                                  "tries again", item)





def _tagging_options(s: settings_module.Settings) -> tagging.TaggingOptions:
    """The tagging rules of checked settings: ``genre_map`` over the vocabulary's own map."""
    from .vocabulary import apply_vocabulary

    return tagging.TaggingOptions(count=s.count, min_confidence=s.min_confidence,
                                  genre_map=apply_vocabulary(s.genre_map, s.vocabulary, title_case=s.title_case),
                                  whitelist=s.whitelist, force=s.force, keep_existing=s.keep_existing,
                                  fallback=s.fallback, skip_unfamiliar=s.unfamiliar == "skip")


def _album_unfamiliar(done_items: Sequence[_Classified]) -> bool:
    """An album is unlike the genres the model knows when more than half of its decoded tracks are."""
    ok = [d for d in done_items if d.ok]
    return bool(ok) and 2 * sum(d.prediction.unfamiliar for d in ok) > len(ok)


@contextlib.contextmanager
def _library_errors_as_user_errors() -> Iterator[None]:
    """A library that cannot be written (a full disk, a lock held too long) is one line
    and exit status 1, not a traceback. Nothing is lost: a row is stored before its file
    is written, and a row that could not be stored leaves its file as it was."""
    import sqlite3

    from beets.dbcore.db import DBAccessError

    try:
        yield
    except (sqlite3.OperationalError, DBAccessError) as exc:
        raise ui.UserError(f"mmgenre: the library database cannot be written ({exc}); the run stopped, "
                           "and every track is as before or tagged in both the library and its file") from exc


def _shown_confidence(value: float) -> str:
    """A confidence for the log, rounded down: 0.2994 against min_confidence 0.3 shows
    as 0.299, not as a 0.30 that looks like it passed."""
    import math

    return f"{math.floor(value * 1000) / 1000:.3f}"


def _import_aborted() -> bool:
    """Whether the beets import this stage runs in was stopped (Ctrl-C): beets lets a
    stage finish its task first, so the stage stops tagging the rest of it instead."""
    import threading

    return bool(getattr(threading.current_thread(), "abort_flag", False))


def _quiet_decoders() -> Any:
    """libmpg123's own warnings kept off the terminal during a run (see native_stderr)."""
    from mmgenre_core.native_stderr import filtered_native_stderr

    return filtered_native_stderr()


def _background(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` in a daemon thread; returns a Future.

    Not a ThreadPoolExecutor: its threads are joined when Python exits, so a Ctrl-C
    during a slow Genius lookup waited for the whole chunk of lookups (256 s).
    """
    import threading
    from concurrent.futures import Future

    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to the caller of result()
            future.set_exception(exc)

    threading.Thread(target=run, name="mmgenre-lyrics", daemon=True).start()
    return future


