"""Frozen configuration dataclasses: audio front end, lyrics front end, model.

One :class:`ModelConfig` drives the whole network (sizes of the CNN, the HAN and the
fusion head); :class:`AudioConfig` and :class:`TextConfig` describe the front ends.
All three round-trip through plain dicts so a checkpoint holds them as plain values
(loadable with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, where: str | None = None) -> T:
    """Build the dataclass ``cls`` from plain values (a JSON file, a checkpoint), checked.

    The one from-dict rule of every config, the core's and training's: unknown keys,
    and values whose type does not fit the field's annotation (str, int, float, bool,
    None, tuple, list, dict and their unions), are a :class:`ConfigError` naming the
    field; a field whose type is itself a dataclass is built from its dict the same
    way. Lists become tuples where the field is a tuple (JSON has no tuples). ``where``
    names the object in messages (default: the class name).
    """
    where = where or cls.__name__
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown option(s) in {where}: {', '.join(map(str, unknown))}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = from_dict(hints[name], value, where=f"{where}.{name}")
            continue
        annotation = str(fields[name].type)
        if isinstance(value, list) and "tuple" in annotation and "list" not in annotation:
            value = tuple(value)
        if not _has_annotated_type(value, annotation):
            raise ConfigError(f"invalid {where}: {name} must be {annotation}, not {value!r}")
        kwargs[name] = copy.deepcopy(value)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {where}: {exc}") from exc


def _has_annotated_type(value: Any, annotation: str) -> bool:
    """Whether ``value`` fits a field annotated ``annotation`` ("int", "float | None", "tuple[int, ...]").

    Only the plain types configs use are checked; a checkpoint or JSON file with a
    string where a number belongs is rejected here, not deep inside the model.
    """
    allowed = {part.strip().split("[")[0] for part in annotation.split("|")}
    if "Any" in allowed:
        return True
    if value is None:
        return "None" in allowed
    if isinstance(value, bool):
        return "bool" in allowed
    if isinstance(value, int):
        return bool(allowed & {"int", "float"})
    if isinstance(value, float):
        return "float" in allowed
    if isinstance(value, str):
        return "str" in allowed
    if isinstance(value, tuple):
        return "tuple" in allowed and all(isinstance(v, (int, float, str)) for v in value)
    if isinstance(value, list):
        return "list" in allowed
    if isinstance(value, Mapping):
        return "dict" in allowed
    return not allowed & {"int", "float", "bool", "str", "None", "tuple", "list", "dict"}


#: The most audio (seconds) a model may analyse per track: windows x window length.
MAX_ANALYSED_SECONDS = 1800.0


def bounded(default: Any, low: float, high: float) -> Any:
    """A numeric config field whose value (each value, for a tuple) must lie in [low, high].

    Every number a checkpoint carries has such bounds (see :func:`check_ranges`): a
    hand-edited or damaged file asking for 10^9 windows, a 10^6-wide GRU or a NaN
    sample rate is refused at load with the field's name, instead of hanging a run
    or allocating gigabytes while the model is built.
    """
    return field(default=default, metadata={"range": (low, high)})


def check_ranges(obj: Any) -> None:
    """Raise :class:`ConfigError` for a field of ``obj`` outside its :func:`bounded` range
    (None passes where the field allows it; floats must be finite)."""
    for f in dataclasses.fields(obj):
        if "range" not in f.metadata:
            continue
        low, high = f.metadata["range"]
        value = getattr(obj, f.name)
        if value is None and "None" in str(f.type):
            continue
        values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and low <= v <= high)
            if not ok:
                raise ConfigError(f"{f.name} must be between {low:g} and {high:g}, not {value!r}")


def _to_dict(obj: Any) -> dict[str, Any]:
    out = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass(frozen=True)
class AudioConfig:
    """How a track becomes a log-mel spectrogram.

    The analysed window follows FMA: ``window_seconds`` from the middle of the
    track. ``num_windows > 1`` takes that many evenly spaced windows and the model
    averages their genre probabilities (one window centred in each of ``num_windows``
    equal parts of the track).

    ``window_rounds`` (cumulative window counts, the last ``num_windows``) makes the
    model listen in rounds (:mod:`mmgenre_core.listening`): it hears the windows in
    ``window_order`` (indices of the windows in time order), the first round first,
    the next ones only while unsure, and classifies the mean of the features of the
    windows it heard.
    """

    sample_rate: int = bounded(22050, 1000, 192000)
    n_fft: int = bounded(2048, 16, 65536)
    hop_length: int = bounded(512, 1, 65536)
    n_mels: int = bounded(128, 1, 512)
    fmin: float = bounded(0.0, 0.0, 96000.0)
    fmax: float | None = bounded(None, 1.0, 96000.0)
    top_db: float | None = bounded(80.0, 1.0, 300.0)
    window_seconds: float = bounded(30.0, 0.1, 600.0)
    num_windows: int = bounded(1, 1, 256)
    min_seconds: float = bounded(1.0, 0.01, 600.0)
    # RMS (full scale = 1.0) below which a window counts as digital silence.
    silence_rms: float = bounded(1e-4, 0.0, 1.0)
    # "db": 10 log10(mel), clipped at top_db below the peak (the paper branch);
    # "musicnn": log10(1 + 10000 mel) of the float16-rounded power, musicnn's own input.
    scale: str = "db"
    # Listening in rounds (see the class docstring); () = all windows at once, in time order.
    window_order: tuple[int, ...] = bounded((), 0, 255)
    window_rounds: tuple[int, ...] = bounded((), 1, 256)

    def __post_init__(self) -> None:
        check_ranges(self)
        n = self.num_windows
        if self.window_order and sorted(self.window_order) != list(range(n)):
            raise ConfigError(f"window_order must list each of the {n} windows (0 to {n - 1}) once, "
                              f"not {list(self.window_order)}")
        rounds = list(self.window_rounds)
        if rounds and (rounds != sorted(set(rounds)) or rounds[-1] != n):
            raise ConfigError(f"window_rounds must be increasing window counts ending at num_windows ({n}), "
                              f"not {rounds}")
        if bool(self.window_order) != bool(rounds):
            raise ConfigError("window_order and window_rounds come together (or neither)")
        if self.hop_length > self.n_fft:
            raise ConfigError(f"hop_length ({self.hop_length}) must not exceed n_fft ({self.n_fft})")
        if self.fmax is not None and not self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError(f"need fmin < fmax <= sample_rate / 2, not fmin={self.fmin}, fmax={self.fmax}")
        if self.num_windows * self.window_seconds > MAX_ANALYSED_SECONDS:
            raise ConfigError(f"num_windows x window_seconds is {self.num_windows * self.window_seconds:g} s of "
                              f"audio a track; at most {MAX_ANALYSED_SECONDS:g} s")
        if self.window_seconds < self.min_seconds:
            raise ConfigError("need 0 < min_seconds <= window_seconds")
        if self.num_windows < 1:
            raise ConfigError("num_windows must be at least 1")
        if self.scale not in ("db", "musicnn"):
            raise ConfigError(f"scale must be 'db' or 'musicnn', not {self.scale!r}")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def window_frames(self) -> int:
        """Spectrogram frames of one window (``center=True`` STFT)."""
        return 1 + self.window_samples // self.hop_length

    @property
    def in_rounds(self) -> bool:
        """Whether the model listens in rounds (and classifies the mean of the heard windows)."""
        return bool(self.window_rounds)

    def to_dict(self) -> dict[str, Any]:
        out = _to_dict(self)
        for key in ("window_order", "window_rounds"):
            if not out[key]:
                # Left out when unused, so checkpoints (and feature-cache ids) made
                # before the fields existed read and hash as they did.
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "AudioConfig":
        return from_dict(cls, data)


@dataclass(frozen=True)
class TextConfig:
    """How lyrics become the HAN's ``(max_lines, max_words)`` id grid (the paper: 50 x 20)."""

    max_lines: int = bounded(50, 1, 1000)
    max_words: int = bounded(20, 1, 1000)
    lowercase: bool = True
    # Lines shorter than this many words (after cleaning) are dropped.
    min_line_words: int = bounded(1, 0, 1000)

    def __post_init__(self) -> None:
        check_ranges(self)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TextConfig":
        return from_dict(cls, data)


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the fused CNN-HAN model (defaults are the paper's)."""

    n_genres: int = bounded(16, 2, 1000)
    n_mels: int = bounded(128, 1, 512)
    # SpectrogramCNN: one block per entry (conv with a 1 x k kernel along time).
    cnn_channels: tuple[int, ...] = bounded((16, 32, 64, 128), 1, 1024)
    cnn_kernel: int = bounded(3, 1, 31)
    # (freq, time) max-pool of every block.
    cnn_pool: tuple[int, int] = bounded((2, 4), 1, 16)
    audio_dim: int = bounded(500, 1, 8192)
    # HAN
    vocab_size: int = bounded(20000, 1, 500_000)
    embed_dim: int = bounded(300, 1, 1024)
    word_hidden: int = bounded(50, 1, 1024)
    line_hidden: int = bounded(50, 1, 1024)
    attention_dim: int = bounded(100, 1, 1024)
    dropout: float = bounded(0.5, 0.0, 0.99)
    # Branches present in the model; a model may be audio-only or lyrics-only.
    use_audio: bool = True
    use_lyrics: bool = True
    # Audio branch: "paper" (the paper's CNN, learnt from scratch) or "musicnn" (the
    # MSD-pretrained musicnn, mmgenre_core.musicnn; needs AudioConfig scale="musicnn").
    audio_branch: str = "paper"
    # musicnn only: which of its features feed the fusion head ("pool": batch-normed
    # max+mean over time of its 753 channels; "penultimate": its 200-d dense layer;
    # "logits": its 50 MSD tag logits), and whether its weights are fine-tuned.
    musicnn_features: str = "pool"
    musicnn_finetune: bool = False
    # Beyond the paper: also hand the head a TF-IDF bag of the lyrics' words (over the
    # model's vocabulary). With a few hundred training songs the HAN alone learns
    # little; the bag gives the linear head what a TF-IDF + logistic regression has.
    lyrics_bow: bool = False
    # Columns of the bag for word pairs (two vocabulary words side by side in a line),
    # after the vocabulary's: a 1-2-gram TF-IDF, as the simple baseline has. In training
    # configs the most to keep; in a checkpoint how many it kept.
    bag_bigrams: int = bounded(0, 0, 500_000)
    # Columns of the bag for the character 2- to 5-grams of its vocabulary words (each word
    # padded with a space on both sides, as sklearn's ``char_wb``), after the pairs', and
    # the (word, n-gram) entries that map words to them. In training configs the most
    # columns to keep; in a checkpoint how many it kept and how many entries.
    bag_char_ngrams: int = bounded(0, 0, 500_000)
    bag_char_entries: int = bounded(0, 0, 20_000_000)
    # Instead of all of the above: a bag that reads the cleaned lyrics text itself
    # (mmgenre_core/ngrams.py), with columns for its word 1-2-grams and then for its
    # character 2-5-grams (sklearn's char_wb), so words outside the vocabulary, lines
    # past the HAN's grid and the punctuation inside words count. In training configs
    # the most of each to keep; in a checkpoint how many it kept.
    bag_text_words: int = bounded(0, 0, 2_000_000)
    bag_text_chars: int = bounded(0, 0, 2_000_000)
    # And after them the text's shape numbers (mmgenre_core/text_shape.py: 0 or all 6).
    bag_text_shape: int = bounded(0, 0, 16)

    def __post_init__(self) -> None:
        check_ranges(self)
        if not 1 <= len(self.cnn_channels) <= 8:
            raise ConfigError(f"cnn_channels needs 1 to 8 blocks, not {len(self.cnn_channels)}")
        if not (self.use_audio or self.use_lyrics):
            raise ConfigError("a model needs the audio branch, the lyrics branch or both")
        if (self.bag_char_ngrams == 0) != (self.bag_char_entries == 0):
            raise ConfigError("bag_char_ngrams and bag_char_entries are both 0 or both positive")
        if self.bag_reads_text and (self.bag_bigrams or self.bag_char_ngrams):
            raise ConfigError("a bag that reads the text (bag_text_words, bag_text_chars) has no "
                              "vocabulary columns: set bag_bigrams and bag_char_ngrams to 0")
        if self.bag_text_shape and not self.bag_reads_text:
            raise ConfigError("bag_text_shape needs a bag that reads the text (bag_text_words, bag_text_chars)")
        if len(self.cnn_pool) != 2:
            raise ConfigError("cnn_pool is (freq, time)")
        if self.audio_branch not in ("paper", "musicnn"):
            raise ConfigError(f"audio_branch must be 'paper' or 'musicnn', not {self.audio_branch!r}")
        if self.musicnn_features not in ("pool", "penultimate", "logits"):
            raise ConfigError("musicnn_features must be 'pool', 'penultimate' or 'logits', "
                              f"not {self.musicnn_features!r}")
        if self.audio_branch == "musicnn" and self.n_mels != 96:
            raise ConfigError(f"the musicnn branch takes 96 mel bands, not {self.n_mels}")

    @property
    def audio_vector_dim(self) -> int:
        """Width of the audio branch's output (the fusion head's audio input)."""
        if self.audio_branch == "musicnn":
            return {"pool": 1506, "penultimate": 200, "logits": 50}[self.musicnn_features]
        return self.audio_dim

    @property
    def lyrics_dim(self) -> int:
        """Width of the lyrics branch's output: the HAN vector (+ the bag of words, pairs and n-grams)."""
        return 2 * self.line_hidden + (self.bag_dim if self.lyrics_bow else 0)

    @property
    def bag_reads_text(self) -> bool:
        """Whether the bag's columns are n-grams of the raw text (not vocabulary ids)."""
        return self.bag_text_words + self.bag_text_chars > 0

    @property
    def bag_dim(self) -> int:
        """Width of the bag of words: words, word pairs and character n-grams (of the
        vocabulary, or of the text itself)."""
        if self.bag_reads_text:
            return self.bag_text_words + self.bag_text_chars + self.bag_text_shape
        return self.vocab_size + self.bag_bigrams + self.bag_char_ngrams

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ModelConfig":
        return from_dict(cls, data)


__all__ = ["AudioConfig", "TextConfig", "ModelConfig", "from_dict", "bounded", "check_ranges"]
