"""GenreClassifier: fast batched inference over audio files (and their lyrics).

Decoding runs in a pool of worker threads (libsndfile, FFmpeg and soxr release
the GIL), a bounded number of tracks ahead of the model, so decoding overlaps with
the model's compute. Tracks are batched; each track's genre probabilities are the
mean over its analysed windows. A file that cannot be read gets an error in its
result and the run goes on.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import listening_order, load_windows
from .calibration import read_fusion, read_temperatures
from .checkpoint import Checkpoint, load_checkpoint
from .device import autocast, resolve_device
from .errors import AudioError, CheckpointError, ModelNotFoundError
from .feature_cache import FeatureCache, FileIdentity, backbone_id
from .listening import DEFAULT_PLAN, PLAN_NAMES, ListeningPlan, heard_mean, heard_rows, plans_of, rounds_up_to
from .model import FusedBatch
from .open_set import OpenSetScore, heard_signs, musicnn_tag_layer
from .text import Vocabulary, encode_batch, has_words

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "default.pt"

#: Where a lyrics text came from, as reported per track.
LYRICS_SOURCES = ("tag", "file", "library", "genius", "given", "none")


def default_model_path() -> Path:
    """The checkpoint shipped inside the package (it may not exist in a dev checkout)."""
    return Path(str(resources.files("mmgenre_core") / "models" / DEFAULT_MODEL_NAME))


@dataclass(frozen=True)
class GenreScore:
    genre: str
    confidence: float


@dataclass
class TrackPrediction:
    """The result for one track: top genres, all probabilities, where lyrics came from, or an error."""

    path: str | None
    genres: list[GenreScore] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    lyrics: str = "none"
    error: str | None = None
    #: How many windows of the audio the model heard (0: none, e.g. lyrics alone or an error).
    windows: int = 0
    #: The open-set score of its audio (:mod:`mmgenre_core.open_set`; None: a model without
    #: one, or no audio) and whether it reached the model's threshold: unlike every genre
    #: the model answers, so better left untagged.
    open_set_score: float | None = None
    unfamiliar: bool = False
    #: Only with ``return_attention=True`` and lyrics: [(line words, word weights, line weight)].
    attention: list[tuple[list[str], list[float], float]] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def top(self) -> GenreScore | None:
        return self.genres[0] if self.genres else None

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON shape: path, genres [{genre, confidence}], lyrics, windows heard, error."""
        out: dict[str, Any] = {
            "path": self.path,
            "genres": [{"genre": g.genre, "confidence": round(g.confidence, 4)} for g in self.genres],
            "lyrics": self.lyrics,
            "windows": self.windows,
            "unfamiliar": self.unfamiliar,
            "error": self.error,
        }
        if self.open_set_score is not None:
            out["open_set_score"] = round(self.open_set_score, 4)
        if self.attention is not None:
            out["attention"] = [
                {"words": words, "word_weights": [round(w, 4) for w in ww], "line_weight": round(lw, 4)}
                for words, ww, lw in self.attention
            ]
        return out


@dataclass
class _Decoded:
    index: int
    windows: np.ndarray | None  # (decoded windows, samples) float32; None when nothing needed decoding
    lyrics: str | None
    lyrics_source: str
    error: str | None
    features: np.ndarray | None = None  # (num_windows, audio_dim) float32, from the feature cache
    ident: FileIdentity | None = None  # the file's cache identity, to store what gets computed
    #: listening in rounds: the window indices ``windows`` holds, in order (None: all of them)
    slots: list[int] | None = None
    path: str = ""


def _decode_workers(num_workers: int | None) -> int:
    """Decoding threads: as asked, or by default the CPU cores, at most 8."""
    return min(8, os.cpu_count() or 1) if num_workers is None else num_workers


def _heard(features: np.ndarray, order: list[int], count: int) -> torch.Tensor:
    """:func:`heard_mean` as the one row the head classifies [shape=(1, dim)]."""
    return torch.from_numpy(np.ascontiguousarray(heard_mean(features, order, count)[None]))


#: A lyrics source: path -> (text or None, source name such as "tag").
LyricsFor = Callable[[str], "tuple[str | None, str]"]


def _resolve_lyrics(lyrics: Sequence[str | None] | Mapping[str, str | None] | None,
                    paths: Sequence[str]) -> list[str | None] | None:
    if lyrics is None:
        return None
    if isinstance(lyrics, Mapping):
        return [lyrics.get(p, lyrics.get(os.path.abspath(p))) for p in paths]
    lyrics = list(lyrics)
    if len(lyrics) != len(paths):
        raise ValueError(f"{len(lyrics)} lyrics for {len(paths)} paths: give one (or None) per path")
    return lyrics


class GenreClassifier:
    """Genre predictions from a checkpoint, on CPU, CUDA or MPS.

    >>> clf = GenreClassifier.load()                      # the model shipped in the package
    >>> [r.top.genre for r in clf.predict(["song.mp3"])]  # doctest: +SKIP
    """

    #: Windows per audio forward pass on the CPU (see _audio_features).
    cpu_audio_chunk = 4

    def __init__(self, checkpoint: Checkpoint, *, device: str | torch.device = "auto",
                 self_test: bool = True, feature_cache: FeatureCache | None = None) -> None:
        self.checkpoint = checkpoint
        #: Backbone features per file (see :mod:`mmgenre_core.feature_cache`); None: always compute.
        self.feature_cache = feature_cache if checkpoint.model_config.use_audio else None
        self.device = resolve_device(device)
        self.model = checkpoint.build_model().to(self.device)
        self.genres = list(checkpoint.genres)
        self.audio_config = checkpoint.audio_config
        self.text_config = checkpoint.text_config
        try:
            self.vocab = Vocabulary.from_list(checkpoint.vocab) if checkpoint.model_config.use_lyrics else None
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{checkpoint.path or 'checkpoint'}: unusable vocabulary ({exc})") from exc
        self.temperatures = read_temperatures(checkpoint)
        scale, offset = read_fusion(checkpoint, n_genres=len(self.genres))
        self.model.lyrics_scale_with_audio = scale
        self.model.lyrics_offset_with_audio = None if offset is None else torch.tensor(offset, device=self.device)
        #: listening order and round ends of the windows (see mmgenre_core.listening)
        self.order, self.round_ends = listening_order(self.audio_config)
        self.plans = plans_of(checkpoint.metadata or {}, num_windows=self.audio_config.num_windows)
        self.open_set = self._load_open_set()
        if self_test:
            self.self_test()

    def _load_open_set(self) -> OpenSetScore | None:
        """The checkpoint's open-set score with musicnn's tag layer, or None (none stored, another
        audio branch; a damaged entry is logged, and every track then counts as familiar)."""
        cfg = self.checkpoint.model_config
        raw = (self.checkpoint.metadata or {}).get("open_set")
        if raw is None or not cfg.use_audio or cfg.audio_branch != "musicnn" or cfg.musicnn_features != "penultimate" \
                or not self.audio_config.in_rounds:
            return None
        from .musicnn import MSD_LABELS

        try:
            score = OpenSetScore.from_metadata(raw, dim=self.audio_dim, tags=len(MSD_LABELS))
        except CheckpointError as exc:
            log.warning("%s: %s; no track is left untagged as unfamiliar", self.checkpoint.path or "checkpoint", exc)
            return None
        self._tag_layer = musicnn_tag_layer(self.model.cnn.backbone)  # its 50 MSD tags, from the same features
        return score

    def _open_set_scores(self, heard: list[np.ndarray]) -> list[float | None]:
        """Each track's open-set score from the windows it heard (per track [shape=(heard, dim)]);
        None without a score."""
        if self.open_set is None:
            return [None] * len(heard)
        scores = self.open_set.scores(*heard_signs(heard, self._tag_layer))
        return [float(s) if np.isfinite(s) else None for s in scores]

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, device: str | torch.device = "auto",
             feature_cache: FeatureCache | None = None) -> "GenreClassifier":
        """Load a checkpoint file; ``path=None`` means the default model shipped in the package."""
        if path is None:
            path = default_model_path()
            if not path.is_file():
                raise ModelNotFoundError(
                    "no default model is installed with this copy of mmgenre. Train one with "
                    "`python training/train.py --config training/configs/default_model.json --out RUN_DIR` "
                    "and pass its RUN_DIR/model.pt (mmgenre predict --model PATH, or `model:` in the "
                    "beets config)."
                )
        return cls(load_checkpoint(path), device=device, feature_cache=feature_cache)

    def self_test(self) -> None:
        """One forward pass on a silent window and a short lyric; raises CheckpointError
        when the model cannot run or answers NaN (caught at load, not mid-run)."""
        window = np.zeros((1, self.audio_config.window_samples), np.float32)
        window[0, :: max(1, self.audio_config.sample_rate // 440)] = 0.1  # not all zeros
        try:
            probs, _ = self._run_batch([window] if self.checkpoint.model_config.use_audio else [None],
                                       ["la la la"], False)
        except Exception as exc:  # any failure here means the checkpoint cannot serve
            first = " ".join(str(exc).split())[:300]
            raise CheckpointError(f"{self.checkpoint.path or 'checkpoint'}: the model fails a test run "
                                  f"({type(exc).__name__}: {first})") from exc
        if not np.isfinite(probs).all():
            raise CheckpointError(f"{self.checkpoint.path or 'checkpoint'}: the model answers NaN on a test run")

    @functools.cached_property
    def backbone_id(self) -> str | None:
        """The id of what turns audio into features (front end + audio branch); None without audio."""
        if not self.checkpoint.model_config.use_audio:
            return None
        return backbone_id(self.model, self.audio_config)

    @property
    def audio_dim(self) -> int:
        return self.checkpoint.model_config.audio_vector_dim

    @property
    def model_id(self) -> str:
        return self.checkpoint.model_id

    @property
    def uses_lyrics(self) -> bool:
        return self.checkpoint.model_config.use_lyrics

    def plan(self, listen: str | ListeningPlan | None = None) -> ListeningPlan:
        """The listening plan a name (``fast``, ``balanced``, ``thorough``; None: balanced)
        stands for in this model, or the plan given (its ``max_windows`` capped at the
        model's windows). A model without rounds hears all its windows whatever
        the plan."""
        if not self.audio_config.in_rounds:
            return ListeningPlan(self.audio_config.num_windows, 1.0)
        if isinstance(listen, ListeningPlan):
            return ListeningPlan(min(listen.max_windows, self.audio_config.num_windows), listen.threshold)
        name = DEFAULT_PLAN if listen is None else listen
        if name not in self.plans:
            raise ValueError(f"listen must be one of {', '.join(PLAN_NAMES)}, not {listen!r}")
        return self.plans[name]

    # ------------------------------------------------------------------ decoding
    def _decode_one(self, index: int, path: str, lyrics: str | None, lyrics_source: str,
                    lyrics_for: LyricsFor | None, first: int | None = None) -> _Decoded:
        """Read what a track needs before the model runs: its cached features, the windows
        the cache lacks (listening in rounds: of the first ``first`` windows in listening
        order), and its lyrics."""
        windows = features = ident = slots = None
        error = None
        cache = self.feature_cache
        if cache is not None and cache.enabled:
            try:
                ident = cache.identify(path)
                features = cache.get(self.backbone_id, ident, dim=self.audio_dim)
            except OSError:
                ident = None  # unreadable: decoding below says why
        in_rounds = self.audio_config.in_rounds
        if in_rounds and features is not None and features.shape[0] not in (1, self.audio_config.num_windows):
            features = None  # not this layout's windows: recompute
        if in_rounds and self.checkpoint.model_config.use_audio:
            slots = self._missing(features, self.order[:first or len(self.order)])
        if self.checkpoint.model_config.use_audio and (features is None or slots):
            windows, error = self._load_windows(path, slots)
        if error is None and lyrics is None and lyrics_for is not None and self.uses_lyrics:
            try:
                lyrics, lyrics_source = lyrics_for(path)
            except Exception:  # a lyrics source's bug must not end a library-wide run
                log.exception("the lyrics source failed for %s", path)
                lyrics = None
        if lyrics is not None and not has_words(lyrics):
            lyrics = None  # punctuation, labels or blanks only: nothing the model can read
        return _Decoded(index, windows, lyrics, lyrics_source if lyrics else "none", error, features, ident,
                        slots, path)

    def _load_windows(self, path: str, slots: list[int] | None) -> tuple[np.ndarray | None, str | None]:
        """(windows [shape=(n, samples)], None) or (None, why the file cannot be decoded)."""
        try:
            return load_windows(path, config=self.audio_config, slots=slots), None
        except (AudioError, OSError) as exc:
            return None, str(exc)
        except Exception as exc:  # a decoder bug must not end a library-wide run
            log.exception("unexpected error decoding %s", path)
            return None, f"{path}: cannot decode ({type(exc).__name__}: {exc})"

    @staticmethod
    def _missing(features: np.ndarray | None, wanted: list[int]) -> list[int]:
        """The windows of ``wanted`` that ``features`` [shape=(windows, dim)] lacks (NaN rows);
        none for a track of one window (too short for more)."""
        if features is None:
            return list(wanted)
        if features.shape[0] == 1:
            return []
        return [k for k in wanted if not np.isfinite(features[k]).all()]

    def _iter_decoded(self, jobs: list[tuple[str, str | None, str]], *, lyrics_for: LyricsFor | None,
                      num_workers: int | None, batch_size: int, first: int | None = None) -> Iterator[_Decoded]:
        """Decode in worker threads (default: the CPU cores, at most 8), two batches ahead, yielding in order."""
        num_workers = _decode_workers(num_workers)
        prefetch = max(2 * batch_size, num_workers)
        if num_workers <= 0:
            for i, (p, lyr, src) in enumerate(jobs):
                yield self._decode_one(i, p, lyr, src, lyrics_for, first)
            return
        with ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="mmgenre-decode") as pool:
            pending: list[Future[_Decoded]] = []
            it = iter(enumerate(jobs))
            for i, (p, lyr, src) in it:
                pending.append(pool.submit(self._decode_one, i, p, lyr, src, lyrics_for, first))
                if len(pending) >= prefetch:
                    break
            while pending:
                done = pending.pop(0).result()
                nxt = next(it, None)
                if nxt is not None:
                    i, (p, lyr, src) = nxt
                    pending.append(pool.submit(self._decode_one, i, p, lyr, src, lyrics_for, first))
                yield done

    # ----------------------------------------------------------------- inference
    @torch.inference_mode()
    def _audio_features(self, windows: list[np.ndarray]) -> list[torch.Tensor]:
        """The audio branch's features of each track's windows: per track
        (num_windows, samples) -> [shape=(num_windows, audio_dim)] float32 on the device."""
        if not windows:
            return []
        model, device = self.model, self.device
        counts = [w.shape[0] for w in windows]
        stacked = torch.from_numpy(np.concatenate(windows, axis=0))  # (sum windows, samples)
        if device.type == "cuda":
            stacked = stacked.pin_memory()
        stacked = stacked.to(device, non_blocking=True)
        # On the CPU, features and CNN run a few windows at a time: the full-resolution
        # activations of a 30-s window are ~40 MB, so this bounds peak memory whatever
        # the batch size, at no cost in speed. GPUs take the whole batch.
        chunk = self.cpu_audio_chunk if device.type == "cpu" else stacked.shape[0]
        with autocast(device):
            audio_vec = torch.cat([model.encode_audio(model.frontend(part))  # (chunk, audio_dim)
                                   for part in stacked.split(chunk)], dim=0)
        return list(audio_vec.float().split(counts))

    @torch.inference_mode()
    def _window_logits(self, features: list[torch.Tensor] | None, lyrics: list[str | None],
                       return_attention: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
        """The model's raw answers, before calibration and averaging.

        features: per track the audio features of its windows [shape=(num_windows,
        audio_dim)] (:meth:`_audio_features` or the feature cache), None for a model
        without audio. Returns logits [shape=(rows, n_genres)] (a row per window, or
        per track for a lyrics-only model), the track of each row [shape=(rows,)],
        whether each row's track has lyrics [shape=(rows,)] and the HAN's attention
        (word, line) when asked.
        """
        model, device = self.model, self.device
        batch = len(lyrics)
        audio_features = None
        if self.checkpoint.model_config.use_audio:
            # A row per window, every one with audio: its features, from the audio branch or the cache.
            counts = torch.tensor([f.shape[0] for f in features], device=device)
            track_of_row = torch.repeat_interleave(torch.arange(batch, device=device), counts)
            audio_features = torch.cat([f.to(device) for f in features], dim=0)  # (rows, audio_dim)
        else:
            track_of_row = torch.arange(batch, device=device)
        row_index = torch.arange(track_of_row.shape[0], device=device)
        inputs = FusedBatch(row_index.shape[0], row_index if audio_features is not None else row_index[:0],
                            audio_features=audio_features)
        has_lyrics = torch.zeros(batch, dtype=torch.bool, device=device)
        if self.uses_lyrics and any(lyrics):  # the common case, no lyrics in the batch, skips the HAN
            ids, mask, has = encode_batch(lyrics, vocab=self.vocab, config=self.text_config)
            ids, mask, has = ids.to(device), mask.to(device), has.to(device)
            # One HAN pass per track; each of its windows reads it. Lyrics the encoder found
            # no words in run as "absent": calibrate them as audio alone.
            inputs.lyrics_pos, inputs.ids, inputs.lyrics_mask = row_index, ids, mask
            inputs.lyrics_present, inputs.lyrics_doc, inputs.lyrics_texts = has, track_of_row, lyrics
            has_lyrics = has & mask.flatten(1).any(dim=1)
        with autocast(device):
            out = model(inputs, return_attention=True)
        logits = out.logits.float()  # (rows, n_genres)
        attention = []
        if return_attention and out.word_attention is not None:
            attention = [out.word_attention.float().cpu().numpy(), out.line_attention.float().cpu().numpy()]
        return logits, track_of_row, has_lyrics[track_of_row], attention

    def _row_temperatures(self, has_lyrics: torch.Tensor) -> torch.Tensor:
        """The calibration temperature of each row [shape=(rows, 1)], by what it heard."""
        t = self.temperatures
        if self.checkpoint.model_config.use_audio:
            both, audio = t["both"], t["audio"]
            return torch.where(has_lyrics, both, audio).unsqueeze(1).to(torch.float32)
        return torch.full((has_lyrics.shape[0], 1), t["lyrics"], device=has_lyrics.device)

    @torch.inference_mode()
    def _run_batch(self, windows: list[np.ndarray | None], lyrics: list[str | None],
                   return_attention: bool) -> tuple[np.ndarray, list]:
        """windows: per track (num_windows, samples) or None; -> probabilities (batch, n_genres)."""
        features = self._audio_features(windows) if self.checkpoint.model_config.use_audio else None
        return self._probabilities(features, lyrics, return_attention)

    @torch.inference_mode()
    def _probabilities(self, features: list[torch.Tensor] | None, lyrics: list[str | None],
                       return_attention: bool) -> tuple[np.ndarray, list]:
        """features: per track [shape=(num_windows, audio_dim)] (None without audio);
        -> probabilities [shape=(batch, n_genres)] and attention.

        Calibrated per window (logits / temperature), then the track score is the mean
        over its windows.
        """
        logits, track_of_row, has_lyrics, attention = self._window_logits(features, lyrics, return_attention)
        probs = torch.softmax(logits / self._row_temperatures(has_lyrics), dim=-1)
        batch = len(lyrics)
        track_probs = torch.zeros((batch, probs.shape[1]), device=probs.device).index_add_(0, track_of_row, probs)
        track_probs /= torch.bincount(track_of_row, minlength=batch).clamp(min=1).unsqueeze(1).float()
        return track_probs.cpu().numpy(), attention

    def _make_result(self, path: str | None, probs: np.ndarray, lyrics_source: str, top_k: int) -> TrackPrediction:
        order = np.argsort(-probs, kind="stable")[:top_k]
        return TrackPrediction(
            path=path,
            genres=[GenreScore(self.genres[i], float(probs[i])) for i in order],
            probabilities={g: float(p) for g, p in zip(self.genres, probs)},
            lyrics=lyrics_source,
        )

    def _attach_attention(self, result: TrackPrediction, text: str | None, word_att: np.ndarray,
                          line_att: np.ndarray) -> None:
        from .text import tokenize_lyrics

        lines = tokenize_lyrics(text, config=self.text_config)[: self.text_config.max_lines]
        result.attention = [
            (words[: self.text_config.max_words],
             [float(w) for w in word_att[i, : min(len(words), self.text_config.max_words)]],
             float(line_att[i]))
            for i, words in enumerate(lines)
        ]

    def predict(self, paths: Iterable[str | os.PathLike], **options: Any) -> list[TrackPrediction]:
        """Classify audio files; one :class:`TrackPrediction` per path, in order.

        Takes the keyword-only options of :meth:`iter_predict`. The C decoders' own
        warnings (libmpg123's "Note: Hit end of (available) data during resync.") are
        kept off stderr meanwhile, as in ``mmgenre predict`` (see :mod:`.native_stderr`).
        """
        from .native_stderr import filtered_native_stderr

        with filtered_native_stderr():
            return list(self.iter_predict(paths, **options))

    def iter_predict(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        lyrics: Sequence[str | None] | Mapping[str, str | None] | LyricsFor | None = None,
        lyrics_source: str = "given",
        use_lyrics: bool = True,
        batch_size: int = 16,
        top_k: int = 3,
        num_workers: int | None = None,
        return_attention: bool = False,
        progress: Callable[[TrackPrediction], None] | None = None,
        listen: str | ListeningPlan | None = None,
    ) -> Iterator[TrackPrediction]:
        """Classify audio files, yielding one :class:`TrackPrediction` per path, in order,
        as soon as its batch completes.

        Parameters
        ----------
        paths : audio files.
        lyrics : one text (or None) per path, a mapping path -> text, or a function
            path -> (text or None, source name) called in the decoding threads (e.g.
            :func:`mmgenre_core.tags.embedded_lyrics`). The classifier reads no tag
            itself; ``use_lyrics=False`` classifies from audio alone.
        lyrics_source : the label reported for lyrics passed as texts or a mapping.
        batch_size : tracks per model call.
        top_k : genres reported per track (all probabilities are in ``.probabilities``).
        num_workers : decoding threads (default: the number of CPU cores, at most 8).
        return_attention : attach the HAN's line and word weights to tracks with lyrics.
        progress : called with each result as soon as it is ready.
        listen : how long to listen (a model that listens in rounds): ``"fast"``,
            ``"balanced"`` (None), ``"thorough"`` or a :class:`ListeningPlan`. Every
            track hears the first round of windows; one whose calibrated top probability
            is below the plan's threshold hears the next round, up to its
            ``max_windows``. Each result says how many windows it heard.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        paths = [os.fspath(p) for p in paths]
        lyrics_for = lyrics if callable(lyrics) and use_lyrics else None
        texts = _resolve_lyrics(lyrics, paths) if use_lyrics and not callable(lyrics) else None
        jobs = [(p, texts[i] if texts else None, lyrics_source) for i, p in enumerate(paths)]
        plan = self.plan(listen)
        stops = rounds_up_to(self.round_ends, plan.max_windows)
        decoded = self._iter_decoded(jobs, lyrics_for=lyrics_for, num_workers=num_workers,
                                     batch_size=batch_size, first=stops[0])
        results: dict[int, TrackPrediction] = {}
        next_out = 0
        batch: list[_Decoded] = []

        def flush() -> None:
            if not batch:
                return
            heard = [0] * len(batch)
            open_set: list[float | None] = [None] * len(batch)
            if not self.checkpoint.model_config.use_audio:
                probs, att = self._probabilities(None, [d.lyrics for d in batch], return_attention)
            elif self.audio_config.in_rounds:
                probs, att, heard, open_set = self._listen(batch, plan, stops, return_attention, num_workers)
            else:
                features = self._batch_features(batch)
                heard = [int(f.shape[0]) for f in features]
                probs, att = self._probabilities(features, [d.lyrics for d in batch], return_attention)
            for row, d in enumerate(batch):
                if not np.isfinite(probs[row]).all():  # never hand NaN on as a genre confidence
                    results[d.index] = TrackPrediction(path=paths[d.index], lyrics="none",
                                                       error=f"{paths[d.index]}: the model answered NaN")
                    continue
                res = self._make_result(paths[d.index], probs[row], d.lyrics_source, top_k)
                res.windows = heard[row]
                if open_set[row] is not None:
                    res.open_set_score = open_set[row]
                    res.unfamiliar = bool(self.open_set.unfamiliar(open_set[row]))
                if att and d.lyrics:
                    self._attach_attention(res, d.lyrics, att[0][row], att[1][row])
                results[d.index] = res
            batch.clear()

        # A final None flushes the last, partial batch.
        for item in itertools.chain(decoded, [None]):
            if item is None:
                flush()
            elif item.error is not None:
                results[item.index] = TrackPrediction(path=paths[item.index], error=item.error, lyrics="none")
            else:
                batch.append(item)
                if len(batch) >= batch_size:
                    flush()
            # Emit every result that is complete and next in order.
            while next_out in results:
                res = results.pop(next_out)
                if progress is not None:
                    progress(res)
                yield res
                next_out += 1

    def iter_features(self, paths: Iterable[str | os.PathLike], *, batch_size: int = 16,
                      num_workers: int | None = None) -> Iterator[tuple[np.ndarray | None, str | None]]:
        """The audio branch's features of each file, in order, through the feature cache:
        (features [shape=(windows, audio_dim)] float32, None) or (None, error). A model that
        listens in rounds gives one row: the mean of the first round's windows."""
        if not self.checkpoint.model_config.use_audio:
            raise ValueError("this model has no audio branch")
        paths = [os.fspath(p) for p in paths]
        first = self.round_ends[0]
        decoded = self._iter_decoded([(p, None, "none") for p in paths], lyrics_for=None, num_workers=num_workers,
                                     batch_size=batch_size, first=first)
        batch: list[_Decoded] = []
        for item in itertools.chain(decoded, [None]):
            if item is not None and item.error is not None:
                if batch:  # keep the order: finish the pending batch first
                    yield from ((f.cpu().numpy(), None) for f in self._batch_features(batch))
                    batch.clear()
                yield None, item.error
                continue
            if item is not None:
                batch.append(item)
            if batch and (item is None or len(batch) >= batch_size):
                yield from ((f.cpu().numpy(), None) for f in self._batch_features(batch))
                batch.clear()

    # ------------------------------------------------------- listening in rounds
    def _merge_windows(self, batch: list[_Decoded]) -> list[np.ndarray]:
        """Listening in rounds: the features of each decoded track [shape=(num_windows, dim)], NaN
        rows for windows not heard yet ([shape=(1, dim)] for a track of one window): its
        cached features with those of the windows just decoded filled in."""
        todo = [i for i, d in enumerate(batch) if d.windows is not None]
        computed = dict(zip(todo, self._audio_features([batch[i].windows for i in todo])))
        n, dim = self.audio_config.num_windows, self.audio_dim
        out = []
        for i, d in enumerate(batch):
            feats = d.features
            if i in computed:
                f = computed[i].cpu().numpy()
                if f.shape[0] == 1 and (d.slots is None or len(d.slots) > 1):
                    feats = f  # a track of one window (too short for the layout)
                else:
                    if feats is None or feats.shape[0] != n:
                        feats = np.full((n, dim), np.nan, np.float32)
                    feats = feats.copy()
                    feats[d.slots if d.slots is not None else slice(None)] = f
            out.append(feats)
        return out

    def _listen(self, batch: list[_Decoded], plan: ListeningPlan, stops: list[int], return_attention: bool,
                num_workers: int | None) -> tuple[np.ndarray, list, list[int], list[float | None]]:
        """Probabilities of a batch of tracks heard in rounds: returns
        probabilities [shape=(batch, n_genres)], attention, the windows each heard and
        its open-set score (None: the model has none).

        Round after round, the tracks whose calibrated top probability is below the
        plan's threshold (and that have windows left) get the next round's windows,
        decoded in parallel (only those: the decoder seeks to each), batched through the
        audio branch, and are classified again on the mean of all they heard.
        """
        feats = self._merge_windows(batch)
        changed = {i for i, d in enumerate(batch) if d.windows is not None}
        stage = [0] * len(batch)
        stuck: set[int] = set()  # a later round failed to decode: no more rounds
        lyrics = [d.lyrics for d in batch]

        def classify() -> tuple[np.ndarray, list]:
            return self._probabilities([_heard(f, self.order, stops[k]) for f, k in zip(feats, stage)], lyrics,
                                       return_attention)

        probs, att = classify()
        while True:
            unsure = [i for i in range(len(batch)) if i not in stuck and stage[i] + 1 < len(stops)
                      and feats[i].shape[0] > 1 and plan.unsure(probs[i].max())]
            if not unsure:
                break
            more: list[_Decoded] = []
            for i in unsure:
                stage[i] += 1
                slots = self._missing(feats[i], self.order[:stops[stage[i]]])
                more.append(_Decoded(i, None, None, "none", None, feats[i], batch[i].ident, slots, batch[i].path))
            self._decode_more([d for d in more if d.slots], num_workers)
            for d in more:
                if d.error is not None:  # keep what was heard: this track's answer stands
                    log.warning("%s; classified from the windows heard before", d.error)
                    stage[d.index] -= 1
                    stuck.add(d.index)
            heard_more = [d for d in more if d.error is None]
            for d, f in zip(heard_more, self._merge_windows(heard_more)):
                feats[d.index] = f
                if d.windows is not None:
                    changed.add(d.index)
            probs, att = classify()
        cache = self.feature_cache
        if cache is not None:
            cache.put_many(self.backbone_id, [(batch[i].ident, feats[i]) for i in sorted(changed)
                                              if batch[i].ident is not None])
        heard = [heard_rows(f, self.order, stops[k]) for f, k in zip(feats, stage)]
        return probs, att, [len(h) for h in heard], self._open_set_scores(heard)

    def _decode_more(self, todo: list[_Decoded], num_workers: int | None) -> None:
        """Decode the windows ``d.slots`` of each track into ``d.windows`` (or ``d.error``), in threads."""
        def one(d: _Decoded) -> None:
            d.windows, d.error = self._load_windows(d.path, d.slots)

        workers = min(len(todo), _decode_workers(num_workers))
        if workers <= 1:
            for d in todo:
                one(d)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmgenre-listen") as pool:
            list(pool.map(one, todo))

    def _batch_features(self, batch: list[_Decoded]) -> list[torch.Tensor]:
        """Each decoded track's audio features: from the cache, or computed (and then stored).

        A model that listens in rounds gives the mean of the first round's windows [shape=(1, dim)]
        (what its head classifies when a track is heard once)."""
        if self.audio_config.in_rounds:
            feats = self._merge_windows(batch)
            cache = self.feature_cache
            if cache is not None:
                cache.put_many(self.backbone_id, [(d.ident, f) for d, f in zip(batch, feats)
                                                  if d.windows is not None and d.ident is not None])
            return [_heard(f, self.order, self.round_ends[0]) for f in feats]
        todo = [i for i, d in enumerate(batch) if d.features is None]
        computed = dict(zip(todo, self._audio_features([batch[i].windows for i in todo])))
        cache = self.feature_cache
        if cache is not None and computed:
            cache.put_many(self.backbone_id, [(batch[i].ident, f.cpu().numpy()) for i, f in computed.items()
                                              if batch[i].ident is not None])
        return [computed[i] if i in computed else torch.from_numpy(d.features) for i, d in enumerate(batch)]

    def predict_lyrics(self, texts: Sequence[str | None], *, top_k: int = 3, batch_size: int = 64,
                       return_attention: bool = False) -> list[TrackPrediction]:
        """Classify lyrics alone (no audio): the model's learned "no audio" vector stands in."""
        if not self.uses_lyrics:
            raise ValueError("this model has no lyrics branch")
        out: list[TrackPrediction] = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            probs, att = self._predict_lyrics_batch(chunk, return_attention)
            for row, text in enumerate(chunk):
                res = self._make_result(None, probs[row], "given" if text else "none", top_k)
                if att and text:
                    self._attach_attention(res, text, att[0][row], att[1][row])
                out.append(res)
        return out

    @torch.inference_mode()
    def _lyrics_logits(self, texts: list[str | None], return_attention: bool) -> tuple[torch.Tensor, list]:
        """Lyrics alone (the audio branch, if any, gets its "absent" vector): raw logits
        [shape=(len(texts), n_genres)] and the HAN's attention (word, line) when asked."""
        model, device = self.model, self.device
        ids, mask, has = encode_batch(texts, vocab=self.vocab, config=self.text_config)
        rows = torch.arange(len(texts), device=device)
        inputs = FusedBatch(len(texts), rows[:0], lyrics_pos=rows, ids=ids.to(device), lyrics_mask=mask.to(device),
                            lyrics_present=has.to(device), lyrics_texts=texts)
        with autocast(device):
            out = model(inputs, return_attention=True)
        att = [out.word_attention.float().cpu().numpy(), out.line_attention.float().cpu().numpy()] \
            if return_attention else []
        return out.logits.float(), att

    def _predict_lyrics_batch(self, texts: list[str | None], return_attention: bool) -> tuple[np.ndarray, list]:
        logits, att = self._lyrics_logits(texts, return_attention)
        probs = torch.softmax(logits / self.temperatures["lyrics"], dim=-1)
        return probs.cpu().numpy(), att
