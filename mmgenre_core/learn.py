"""A genre head in the user's own vocabulary, learnt from tracks they already tagged.

``beet mmgenre --learn`` gathers the library's tracks that have genres (their own, or
their album's), takes the frozen backbone's features of each (through the feature
cache) and fits a new head over them: multinomial logistic regression, the same
:func:`mmgenre_core.head.fit_head` that training's linear probe uses. The result is a
normal checkpoint: the base model's front end and audio branch (so the cached
features serve it too) and the new head, calibrated, with a model card.

* Genres with fewer than ``min_tracks`` tracks are left out (and reported).
* A track with several genres counts for each, with its weight split between them:
  the head's softmax then learns to share the probability between genres that go
  together (e.g. "rock" and "metal"), which is what ``count`` and
  ``min_confidence`` read, and one calibration and one code path serve both cases.
* Class weights are the square root of the balanced ones (the default model's
  recipe): small genres are heard without taking over their neighbours.
* Transfer: each of the user's genres that the base model knows (through
  ``genre_map``: "Hip-Hop" -> "hiphop") starts from, and is shrunk towards, the base
  head's weights for it instead of zero; genres it does not know start from zero. A
  handful of tagged tracks then moves the base model's answer into the user's words,
  and many tracks move it further where the user's taste differs.
* Validation keeps every artist on one side: ``folds``-fold cross-validation over
  artists chooses the L2 penalty and the temperature (on every track's out-of-fold
  answer) and gives the report's numbers; the final head is fitted on all the tracks.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .calibration import fit_temperature, track_probabilities
from .checkpoint import Checkpoint
from .errors import MMGenreError
from .head import Block, fit_head
from .genre_map import genre_key, map_genre

L2_GRID = (0.03, 0.1, 0.3)
CLASS_WEIGHT_POWER = 0.5


class LearnError(MMGenreError):
    """The labelled tracks cannot make a model (too few, one genre): nothing is saved."""


@dataclass(frozen=True)
class LabelledTrack:
    """One track to learn from: its backbone features [shape=(windows, dim)], its genres
    in the user's words, and its artist (validation keeps an artist on one side)."""

    features: np.ndarray
    genres: tuple[str, ...]
    artist: str


@dataclass
class LearnReport:
    genres: list[str]
    tracks_per_genre: dict[str, int]
    dropped: dict[str, int]
    tracks: int
    folds: int
    artists: int
    l2: float
    temperature: float
    accuracy: float | None = None
    macro_f1: float | None = None
    baseline_accuracy: float | None = None
    baseline_macro_f1: float | None = None
    confusions: list[tuple[str, str, int]] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self, *, baseline_name: str = "the default model through genre_map") -> str:
        """The printed report: genres, validation against the baseline, confusions."""
        lines = [f"learnt {len(self.genres)} genres from {self.tracks} tracks in {self.seconds:.1f} s:"]
        lines += [f"  {g}: {self.tracks_per_genre[g]} tracks" for g in self.genres]
        if self.dropped:
            lines.append("left out (too few tracks): " + ", ".join(f"{g} ({n})" for g, n in
                                                                      sorted(self.dropped.items())))
        if self.accuracy is None:
            lines.append("validation: none (the tracks come from fewer than two artists)")
        else:
            lines.append(f"{self.folds}-fold cross-validation, each artist's tracks scored by a head that never "
                         f"heard that artist ({self.artists} artists): accuracy {self.accuracy:.1%}, "
                         f"macro-F1 {self.macro_f1:.3f}")
            if self.baseline_accuracy is not None:
                lines.append(f"  {baseline_name}: accuracy {self.baseline_accuracy:.1%}, "
                             f"macro-F1 {self.baseline_macro_f1:.3f}")
            if self.confusions:
                lines.append("most confused (tagged -> predicted): " + ", ".join(
                    f"{t} -> {p} ({n})" for t, p, n in self.confusions))
        lines.append(f"L2 penalty {self.l2}, calibration temperature {self.temperature:.3f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Plain JSON values (checkpoints hold only those)."""
        import json

        return json.loads(json.dumps(dataclasses.asdict(self)))


def _vocabulary(tracks: Sequence[LabelledTrack], min_tracks: int) -> tuple[list[str], dict[str, int], dict[str, int]]:
    """Genres with at least ``min_tracks`` tracks (case-insensitive, first spelling wins), by count."""
    counts: Counter[str] = Counter()
    spelling: dict[str, str] = {}
    for t in tracks:
        for key in {genre_key(g) for g in t.genres if g and g.strip()}:
            counts[key] += 1
        for g in t.genres:
            if g and g.strip():
                spelling.setdefault(genre_key(g), g.strip())
    kept = sorted((k for k, n in counts.items() if n >= min_tracks), key=lambda k: (-counts[k], k))
    dropped = {spelling[k]: n for k, n in counts.items() if n < min_tracks}
    return [spelling[k] for k in kept], {spelling[k]: counts[k] for k in kept}, dropped


def _artist_folds(artists: Sequence[str], *, folds: int, seed: int) -> np.ndarray:
    """The fold of each track [shape=(tracks,)]: whole artists, folds of similar size
    (artists in random order, each to the fold with the fewest tracks so far); fewer
    folds when there are fewer artists, all zeros for one artist."""
    names = sorted(set(artists))
    n = max(1, min(folds, len(names)))
    per_artist = Counter(artists)
    sizes = np.zeros(n)
    fold_of_artist = {}
    for i in np.random.default_rng(seed).permutation(len(names)):
        k = int(np.argmin(sizes))
        fold_of_artist[names[i]] = k
        sizes[k] += per_artist[names[i]]
    return np.array([fold_of_artist[a] for a in artists], dtype=np.int64)


def _rows(tracks: Sequence[LabelledTrack], labels: Sequence[list[int]], class_weight: np.ndarray
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every window of every track once per genre it has: x [shape=(rows, dim)], y, w (a track weighs
    its genres' class weights in all, split over its windows and genres)."""
    xs, ys, ws = [], [], []
    for t, ls in zip(tracks, labels):
        n = t.features.shape[0]
        for label in ls:
            xs.append(t.features)
            ys.append(np.full(n, label, dtype=np.int64))
            ws.append(np.full(n, class_weight[label] / (n * len(ls))))
    return (torch.from_numpy(np.concatenate(xs).astype(np.float32)), torch.from_numpy(np.concatenate(ys)),
            torch.from_numpy(np.concatenate(ws)))


def _window_logits(tracks: Sequence[LabelledTrack], weight: torch.Tensor, bias: torch.Tensor
                   ) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(np.concatenate([t.features for t in tracks]).astype(np.float32))
    track_of_row = np.repeat(np.arange(len(tracks)), [t.features.shape[0] for t in tracks])
    return (x @ weight.T + bias).numpy().astype(np.float64), track_of_row


def score(predicted: Sequence[str | None], truth: Sequence[Sequence[str]]) -> tuple[float, float]:
    """(accuracy, macro-F1) of one predicted genre per track against its genre set.

    A prediction is right when it is one of the track's genres (case-insensitive); for
    F1 a right answer counts for that genre, a wrong one against the track's first genre.
    """
    keys_true = []
    for p, ts in zip(predicted, truth):
        keys = [genre_key(g) for g in ts]
        pk = genre_key(p) if p else None
        keys_true.append(pk if pk in keys else keys[0])
    keys_pred = [genre_key(p) if p else None for p in predicted]
    acc = float(np.mean([p == t for p, t in zip(keys_pred, keys_true)])) if predicted else float("nan")
    f1s = []
    for g in sorted(set(keys_true)):
        tp = sum(p == g and t == g for p, t in zip(keys_pred, keys_true))
        fp = sum(p == g and t != g for p, t in zip(keys_pred, keys_true))
        fn = sum(p != g and t == g for p, t in zip(keys_pred, keys_true))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return acc, float(np.mean(f1s)) if f1s else float("nan")


def base_prior(base: Checkpoint, genres: Sequence[str], genre_map: Mapping[str, str | None] | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The base head, in the user's genres: weight [shape=(len(genres), audio_dim)] and bias.

    A user genre that several base genres map to gets their mean; one that none maps
    to gets zero weights and the lowest base bias (unlikely until tracks say otherwise).
    The bias includes what the base head adds for "no lyrics", as an audio-only track sees it.
    """
    from .genre_map import parse_genre_map

    model = base.build_model()
    dim = base.model_config.audio_vector_dim
    with torch.no_grad():
        weight = model.classifier.weight[:, :dim].detach().float()
        lyrics = model.absent_lyrics(1) if base.model_config.use_lyrics else None
        const = model.classify(torch.zeros(1, dim), lyrics)[0].detach().float()  # logits of an all-zero audio vector
    gm = parse_genre_map(genre_map or {})
    w0 = torch.zeros(len(genres), dim)
    b0 = torch.full((len(genres),), float(const.min()))
    for i, g in enumerate(genres):
        rows = [j for j, m in enumerate(base.genres)
                if (name := map_genre(m, gm)) is not None and genre_key(name) == genre_key(g)]
        if rows:
            w0[i] = weight[rows].mean(dim=0)
            b0[i] = const[rows].mean()
    return w0, b0


def learn_genre_head(
    tracks: Sequence[LabelledTrack],
    *,
    base: Checkpoint,
    genre_map: Mapping[str, str | None] | None = None,
    min_tracks: int = 5,
    folds: int = 3,
    seed: int = 0,
    l2_grid: Sequence[float] = L2_GRID,
    baseline: Callable[[Sequence[LabelledTrack]], list[str | None]] | None = None,
    name: str = "mmgenre-learnt",
) -> tuple[Checkpoint, LearnReport]:
    """Fit a head in the tracks' own genres over ``base``'s audio features.

    ``genre_map``: the user's names for the base model's genres (for the transfer).
    ``baseline``: the answer to compare with on the validation tracks (the default
    model mapped through ``genre_map``), one genre name (or None) per track. Raises
    :class:`LearnError` when fewer than two genres have ``min_tracks`` tracks.
    """
    started = time.perf_counter()
    if min_tracks < 1:
        raise ValueError("min_tracks must be at least 1")
    genres, per_genre, dropped = _vocabulary(tracks, min_tracks)
    if len(genres) < 2:
        have = ", ".join(f"{g} ({n})" for g, n in sorted({**per_genre, **dropped}.items(), key=lambda kv: -kv[1])[:5])
        raise LearnError(f"need at least two genres with {min_tracks} or more tagged tracks each "
                         f"(found: {have or 'no tagged tracks'}); tag more tracks or lower learn_min_tracks")
    index = {genre_key(g): i for i, g in enumerate(genres)}
    usable, labels = [], []
    for t in tracks:
        ls = sorted({index[genre_key(g)] for g in t.genres if g and genre_key(g) in index})
        if ls and t.features.ndim == 2 and t.features.shape[0] > 0:
            usable.append(t)
            labels.append(ls)
    counts = np.bincount([label for ls in labels for label in ls], minlength=len(genres)).astype(np.float64)
    class_weight = (len(usable) / (len(genres) * np.maximum(counts, 1))) ** CLASS_WEIGHT_POWER
    dim = usable[0].features.shape[1]
    blocks = [Block("audio", 0, dim, True)]
    prior_w, prior_b = base_prior(base, genres, genre_map)

    fold_of = _artist_folds([t.artist for t in usable], folds=folds, seed=seed)
    grid = sorted(float(c) for c in l2_grid)
    l2, temperature = grid[len(grid) // 2], 1.0
    report = LearnReport(genres, per_genre, dropped, len(usable), folds=int(fold_of.max()) + 1 if len(fold_of) else 0,
                         artists=len({t.artist for t in usable}), l2=l2, temperature=temperature)
    if report.folds >= 2:
        # Out-of-fold logits of every track for every penalty: each track is scored by a head
        # that never heard its artist.
        oof = {c: np.zeros((sum(t.features.shape[0] for t in usable), len(genres))) for c in grid}
        row_start = np.cumsum([0] + [t.features.shape[0] for t in usable])
        for k in range(report.folds):
            train = [i for i in range(len(usable)) if fold_of[i] != k]
            held = [i for i in range(len(usable)) if fold_of[i] == k]
            x, y, w = _rows([usable[i] for i in train], [labels[i] for i in train], class_weight)
            for c in grid:
                weight, bias = fit_head(x, y, w, blocks=blocks, l2=[c], n_classes=len(genres),
                                        init=(prior_w, prior_b), prior=prior_w)
                logits, _ = _window_logits([usable[i] for i in held], weight, bias)
                rows = np.concatenate([np.arange(row_start[i], row_start[i + 1]) for i in held])
                oof[c][rows] = logits
        track_of_row = np.repeat(np.arange(len(usable)), np.diff(row_start))

        def nll(c: float) -> float:
            """Log loss against the genre set: the probability of any of the track's genres."""
            probs = track_probabilities(oof[c], track_of_row, len(usable))
            return -float(np.mean([math.log(max(probs[i, ls].sum(), 1e-12)) for i, ls in enumerate(labels)]))

        l2 = min(grid, key=nll)
        temperature = fit_temperature(oof[l2], track_of_row, np.array([ls[0] for ls in labels]))
        probs = track_probabilities(oof[l2], track_of_row, len(usable), temperature=temperature)
        predicted = [genres[i] for i in probs.argmax(axis=1)]
        truth = [[genres[i] for i in ls] for ls in labels]
        report.accuracy, report.macro_f1 = score(predicted, truth)
        confused = Counter((t[0], p) for p, t in zip(predicted, truth) if genre_key(p) not in map(genre_key, t))
        report.confusions = [(t, p, n) for (t, p), n in confused.most_common(5)]
        if baseline is not None:
            report.baseline_accuracy, report.baseline_macro_f1 = score(baseline(usable), truth)
    report.l2, report.temperature = l2, temperature

    x, y, w = _rows(usable, labels, class_weight)
    weight, bias = fit_head(x, y, w, blocks=blocks, l2=[l2], n_classes=len(genres), init=(prior_w, prior_b),
                            prior=prior_w)
    report.seconds = time.perf_counter() - started
    return _checkpoint(base, genres, weight, bias, temperature, report, name=name), report


def _checkpoint(base: Checkpoint, genres: list[str], weight: torch.Tensor, bias: torch.Tensor, temperature: float,
                report: LearnReport, *, name: str) -> Checkpoint:
    """``base``'s front end and audio branch with the new head, audio only."""
    from .model import GenreModel

    config = dataclasses.replace(base.model_config, n_genres=len(genres), use_lyrics=False)
    model = GenreModel(config, base.audio_config)
    audio_state = {k: v for k, v in base.state_dict.items() if k.startswith(("frontend.", "cnn."))}
    missing, unexpected = model.load_state_dict(audio_state, strict=False)
    assert not unexpected and all(k.startswith(("classifier.", "no_audio")) for k in missing), (missing, unexpected)
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(bias)
    version = time.strftime("%Y%m%d-%H%M%S")
    card = (f"# {name} {version}\n\nA head in your own genres over {base.model_id}'s audio features, "
            f"learnt by `beet mmgenre --learn`.\n\n" + report.describe() + "\n")
    metadata = {"name": name, "version": version, "base_model": base.model_id,
                "calibration": {"temperature": {"audio": temperature, "both": temperature, "lyrics": 1.0}},
                "learn_report": report.to_dict(), "model_card": card}
    if "listening" in base.metadata:
        # The base model listens in rounds: the learnt head (fitted on the first round's
        # means) hears tracks with the base's plans, its own confidence deciding the rounds.
        metadata["listening"] = base.metadata["listening"]
    return Checkpoint.from_model(model, text_config=base.text_config, genres=genres, vocab=list(base.vocab),
                                 metadata=metadata)
