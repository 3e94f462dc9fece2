"""Train by fitting the heads over frozen inputs on all the data (``train.frozen_heads``).

What cross-validation validates is what ships: no validation split is held out of the fit
(an inner cross-validation chooses what a validation split would; a test split, where the
data names one, is left out), and no fine-tuning follows it (fine-tuning on 3-s crops with
a 70% split made the shipped model 3 points worse than this head in
``benchmarks/cv_audio.py``'s artist-grouped CV).

* Audio (a musicnn branch that listens in rounds, ``audio.window_rounds``): every clip is decoded at all of
  its windows as inference decodes them, through the frozen backbone; the audio head is
  :func:`training.window_head.fit_window_head` (rows: means over the window counts the
  listening rounds end at; L2 and temperature from an inner artist-grouped CV; the
  listening plans chosen on the same out-of-fold answers).
* Lyrics (the bag of words): a TF-IDF logistic regression over the lyrics examples, L2
  and temperature the same way. The HAN is not trained here (its head columns are zero).
* Both are written into the one fused linear layer: the audio head's weights and bias,
  the bag's weights, and the learned "no audio" vector set so that a row without audio
  gets the lyrics head's own bias. A track with both adds the two heads' evidence.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmgenre_core.checkpoint import Checkpoint, save_checkpoint
from mmgenre_core.errors import ConfigError
from mmgenre_core.head import Block, fit_head

from .build import TrainData
from .config import TrainConfig
from .datasets import artist_group
from .window_head import choose_l2, choose_plans, class_weights, fit_window_head, plan_table

log = logging.getLogger(__name__)


def clip_window_features(model: torch.nn.Module, paths: list[str], *, audio_config: Any = None,
                         slots: list[int] | None = None, workers: int = 2) -> tuple[np.ndarray, list[str | None]]:
    """Every window's features of every clip (``slots``: only those windows), as
    inference computes them (``model``'s front end and audio branch; ``audio_config``:
    other windows than the model's own).

    Returns features [shape=(clips, num_windows, dim)] (NaN rows: windows not asked
    for, or a clip too short for them, whose one window is row 0; all NaN: a clip that
    failed, with its error in the second value).
    """
    from concurrent.futures import ThreadPoolExecutor

    from mmgenre_core.audio import load_windows

    audio_config = audio_config or model.audio_config
    n, dim = audio_config.num_windows, model.config.audio_vector_dim
    out = np.full((len(paths), n, dim), np.nan, np.float32)
    errors: list[str | None] = [None] * len(paths)

    def decode(path: str) -> np.ndarray | str:
        try:
            return load_windows(path, config=audio_config, slots=slots)
        except Exception as exc:  # noqa: BLE001 - reported per clip
            return f"{type(exc).__name__}: {exc}"

    model.eval()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, torch.inference_mode():
        for i, windows in enumerate(pool.map(decode, paths)):
            if isinstance(windows, str):
                errors[i] = windows
                continue
            feats = []
            for part in torch.from_numpy(windows).split(4):
                feats.append(model.encode_audio(model.frontend(part)).float())
            f = torch.cat(feats).numpy()
            if f.shape[0] == 1 and len(slots or range(n)) > 1:
                out[i, 0] = f[0]  # a clip no longer than one window
            else:
                out[i, slots if slots is not None else slice(None)] = f
    return out, errors


def _bag_rows(model: torch.nn.Module, table: Any, indices: np.ndarray) -> torch.Tensor:
    """The TF-IDF bag of each lyrics example, sparse COO [shape=(len(indices), bag columns)]."""
    if model.bow.reads_text:
        return model.bow.text_bags(table.texts_of(table.lyr_row[indices]))
    ids = torch.from_numpy(np.asarray(table.lyrics_ids[table.lyr_row[indices]], dtype=np.int64))
    return sparse_bags(model.bow, ids)


def bags_of_texts(bow: torch.nn.Module, texts: list[str], *, vocab: Any, text_config: Any) -> torch.Tensor:
    """``bow`` of each lyrics text, sparse COO [shape=(len(texts), bag columns)]: from the text
    itself for a bag that reads it, else from the HAN's id grid (``vocab``, ``text_config``)."""
    if bow.reads_text:
        return bow.text_bags(texts)
    from mmgenre_core.text import encode_batch

    ids, _, _ = encode_batch(texts, vocab=vocab, config=text_config)
    return sparse_bags(bow, ids)


def sparse_bags(bow: torch.nn.Module, ids: torch.Tensor, *, chunk: int = 512) -> torch.Tensor:
    """``bow`` of each document of ids [shape=(documents, lines, words)] as a sparse COO
    matrix, built in chunks: 15,000 songs x 120,000 columns would be 7 GB dense."""
    from mmgenre_core.text import PAD_ID

    parts = []
    with torch.inference_mode():
        for start in range(0, ids.shape[0], chunk):
            part = ids[start:start + chunk]
            parts.append(bow(part, part != PAD_ID).float().to_sparse())
    with torch.inference_mode():
        out = torch.cat(parts).coalesce() if parts else torch.zeros((0, bow.idf.shape[0])).to_sparse()
    return out.clone()  # out of inference mode: fit_head's autograd may use it


def _take_rows(x: torch.Tensor, rows: np.ndarray | slice) -> torch.Tensor:
    if isinstance(rows, slice):
        return x[rows] if not x.is_sparse else x
    index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    return x.index_select(0, index) if x.is_sparse else x[index]


def _logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return (torch.sparse.mm(x, weight.T) if x.is_sparse else x @ weight.T) + bias


def with_domain_columns(x: torch.Tensor, domains: np.ndarray, names: list[str]) -> torch.Tensor:
    """x [shape=(songs, columns)] (dense or sparse COO) and one 0/1 column per domain of
    ``names`` after them: 1 where the song's domain [shape=(songs,)] is that one."""
    rows = np.flatnonzero([d in names for d in domains])
    cols = np.array([names.index(domains[r]) for r in rows], dtype=np.int64)
    marks = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols]).astype(np.int64)),
                                    torch.ones(len(rows), dtype=x.dtype), (x.shape[0], len(names)),
                                    check_invariants=False)
    return torch.cat([x.coalesce(), marks], dim=1).coalesce() if x.is_sparse else torch.cat([x, marks.to_dense()], 1)


#: The lyrics head's logit (before its temperature) of a genre that no training song has.
UNSEEN_GENRE_LOGIT = -50.0


def fit_lyrics_head(x: torch.Tensor, labels: np.ndarray, groups: np.ndarray, *, n_classes: int,
                    l2_grid: list[float], power: float, folds: int, seed: int, max_iter: int,
                    domains: np.ndarray | None = None, loss: str = "cross_entropy") -> dict[str, Any]:
    """Weighted L2 logistic regression (or, ``loss="squared_hinge"``, one-vs-rest linear SVMs:
    :func:`mmgenre_core.head.fit_head`) over the bag of words x [shape=(songs, vocab)] (dense or
    sparse COO), L2 and temperature by :func:`training.window_head.choose_l2`.

    ``domains`` [shape=(songs,)]: each song's :attr:`~training.examples.Example.domain`. Each
    domain gets a 0/1 column, so the head learns how the genres of excerpts or of another
    corpus lean apart from the words; the columns are dropped after the fit (the returned
    weight has x's width): inference reads the lyrics of no domain. Their weights are in
    ``"domains"``. The L2 and the temperature are then chosen on the songs of no domain
    (when there are any), what inference reads."""
    names = sorted({d for d in domains if d}) if domains is not None else []
    width = x.shape[1]
    if names:
        x = with_domain_columns(x, domains, names)
    y = torch.from_numpy(labels.astype(np.int64))
    w = class_weights(labels, n_classes, power=power)
    block = [Block("bag", 0, x.shape[1], True)]

    def fit(rows: np.ndarray | slice, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
        weight, bias = fit_head(_take_rows(x, rows), y[rows], torch.from_numpy(w[rows]), blocks=block, l2=[l2],
                                n_classes=n_classes, max_iter=max_iter, loss=loss)
        # A genre no training song has (Classical: no lyrics) is never the lyrics' answer.
        # Logistic regression drives its logit down only as far as L-BFGS goes (about -54 in
        # 0.6.0); a squared hinge stops at -1, which the fusion's division by the lyrics
        # prior (1e-12 for such a genre) would turn into the strongest evidence of all.
        unseen = torch.from_numpy(np.bincount(labels[rows], minlength=n_classes) == 0)
        weight[unseen], bias[unseen] = 0.0, UNSEEN_GENRE_LOGIT
        return weight, bias

    def fit_predict(train: np.ndarray, test: np.ndarray, l2: float) -> np.ndarray:
        weight, bias = fit(train, l2)
        return _logits(_take_rows(x, test), weight, bias).double().numpy()

    plain = np.array([not d for d in domains]) if names else None
    best, temperature, oof, errors = choose_l2(labels, groups, l2_grid=l2_grid, folds=folds, seed=seed,
                                               fit_predict=fit_predict,
                                               scored=plain if plain is not None and plain.any() else None)
    weight, bias = fit(slice(None), best)
    offsets = {name: [round(float(v), 4) for v in weight[:, width + j]] for j, name in enumerate(names)}
    weight = weight[:, :width].contiguous()
    accuracy = float((oof.argmax(1) == labels).mean())
    log.info("lyrics head: l2 %g (inner out-of-fold error rate %s), temperature %.3f, out-of-fold "
             "accuracy %.3f", best, {k: round(v, 4) for k, v in errors.items()}, temperature, accuracy)
    return {"weight": weight, "bias": bias, "temperature": temperature, "l2": best, "inner": errors,
            "oof_accuracy": accuracy, "oof": oof, "domains": offsets}


def fit_fusion(audio: tuple[np.ndarray, np.ndarray], lyrics: tuple[np.ndarray, np.ndarray], *,
               audio_temperature: float, lyrics_temperature: float, seed: int) -> dict[str, Any]:
    """The fusion rule's lyrics weight (:mod:`training.fusion`) on genre-matched pairs of
    out-of-fold answers: audio = (calibrated logits [shape=(clips, genres)], labels),
    lyrics = (calibrated logits minus the log prior [shape=(songs, genres)], labels).
    Returns ``metadata["fusion"]``, with the pairs' accuracies."""
    from .fusion import fit_lyrics_weight, fused_logits, genre_matched_pairs

    clips, songs = genre_matched_pairs(audio[1], lyrics[1], seed=seed)
    if not len(clips):
        raise ConfigError("no audio clip shares a genre with the lyrics: no pairs to fit the fusion on")
    a, l, y = audio[0][clips], lyrics[0][songs], audio[1][clips]
    weight = fit_lyrics_weight(a, l, y)

    def accuracy(z: np.ndarray) -> float:
        return round(float((z.argmax(1) == y).mean()), 4)

    out = {"rule": "audio logits / T_audio + lyrics_weight * (lyrics logits / T_lyrics - log lyrics prior)",
           "lyrics_weight": round(weight, 4),
           "lyrics_scale": round(weight * audio_temperature / lyrics_temperature, 6),
           "pairs": int(len(clips)),
           "inner_cv_accuracy": {"audio": accuracy(a), "lyrics": accuracy(l), "fused": accuracy(fused_logits(a, l, weight))}}
    log.info("fusion on %d genre-matched pairs: lyrics weight %.3f, accuracy %s", len(clips), weight,
             out["inner_cv_accuracy"])
    return out


#: Windows heard of a clip in the pairs the fusion weight is fitted on: what ``balanced``
#: hears at most.
FUSION_WINDOWS = 5

#: Windows (in listening order) of each clip that the open-set score is fitted on: what
#: ``balanced`` hears at most.
OPEN_SET_WINDOWS = 5


def fit_clip_open_set(features: np.ndarray, labels: np.ndarray, *, order: list[int], genres: list[str],
                      threshold: float) -> Any:
    """The open-set score (:mod:`mmgenre_core.open_set`) of a musicnn model, fitted on each
    clip's mean over its first five windows in listening order (what ``balanced`` hears at
    most, as ``benchmarks/cv_open_set.py`` measures it). features [shape=(clips, windows, dim)]."""
    from mmgenre_core.listening import window_count_rows
    from mmgenre_core.musicnn import MSD_LABELS
    from mmgenre_core.open_set import fit_open_set

    means = window_count_rows(features, order, [OPEN_SET_WINDOWS])[:, 0]
    return fit_open_set(means, labels, genres=genres, tag_labels=MSD_LABELS, threshold=threshold)


def train_frozen_heads(cfg: TrainConfig, out: Path, data: TrainData, model: torch.nn.Module,
                       metadata: dict[str, Any]) -> dict[str, Any]:
    """Fit the heads (see the module docstring), save ``out/model.pt``; returns the metrics."""
    t = cfg.train
    started = time.perf_counter()
    table, dataset = data.table, data.dataset
    by_key = {e.key: e for e in dataset.examples}
    n_classes = len(table.genres)
    blocks = {b.name: b for b in model.head_blocks()}
    metrics: dict[str, Any] = {"frozen_heads": True}
    weight = torch.zeros_like(model.classifier.weight)
    bias = torch.zeros_like(model.classifier.bias)
    temperatures: dict[str, float] = {}

    def group_of(i: int) -> str:
        return artist_group(by_key[table.keys[i]])

    # The inner CV takes the place of a validation split, so the training and validation
    # examples are all fitted; a test split (a manifest's own, such as a cross-validation's
    # test fold in benchmarks/cv_audio.py) is never seen by the fit.
    held_out = table.indices("test")
    audio_idx = np.setdiff1d(table.indices(None, mode="audio"), held_out)
    lyrics_idx = np.setdiff1d(table.indices(None, mode="lyrics"), held_out)
    metrics["held_out_test"] = int(len(held_out))
    if len(held_out):
        log.info("%d test-split examples held out of the fit (score the model on them with "
                 "training/evaluate.py)", len(held_out))
    audio_bias = None
    audio_oof = None  # (calibrated out-of-fold logits of the clips, their labels), for the fusion weight
    if len(audio_idx):
        if not model.audio_config.in_rounds or model.config.audio_branch != "musicnn":
            raise ConfigError("train.frozen_heads needs a musicnn audio branch that listens in rounds "
                              "(audio.window_order and audio.window_rounds)")
        from mmgenre_core.audio import listening_order

        from mmgenre_core.native_stderr import filtered_native_stderr

        t0 = time.perf_counter()
        with filtered_native_stderr():  # libmpg123's noise on some GTZAN MP3s
            feats, errors = clip_window_features(model, [by_key[table.keys[i]].path for i in audio_idx])
        ok = np.array([e is None for e in errors])
        for i, e in zip(audio_idx[~ok], np.array(errors, dtype=object)[~ok]):
            log.warning("left out %s: %s", table.keys[i], e)
        audio_idx, feats = audio_idx[ok], feats[ok]
        log.info("window features of %d clips in %.0f s", len(audio_idx), time.perf_counter() - t0)
        order, ends = listening_order(model.audio_config)
        head, oof = fit_window_head(feats, table.labels[audio_idx], [group_of(i) for i in audio_idx], order=order,
                                    counts=ends, n_classes=n_classes, l2_grid=t.probe_l2, power=t.class_weight_power,
                                    inner_folds=t.head_folds, seed=cfg.seed, max_iter=t.probe_max_iter)
        probs = head.calibrated(oof["logits"])
        labels = table.labels[audio_idx]
        curve = plan_table(probs, labels, counts=ends)
        plans = choose_plans(curve, fast_windows=ends[0], budget_windows=t.listen_budget)
        b = blocks["audio"]
        weight[:, b.start:b.stop] = torch.from_numpy(head.weight).to(weight)
        audio_bias = torch.from_numpy(head.bias).to(bias)
        bias.copy_(audio_bias)
        temperatures["audio"] = round(head.temperature, 4)
        nearest = min(range(len(ends)), key=lambda k: abs(ends[k] - FUSION_WINDOWS))
        audio_oof = (oof["logits"][:, nearest] / head.temperature, labels)
        metadata["listening"] = {"plans": {k: p.to_dict() for k, p in plans.items()}, "counts": ends,
                                 "budget": t.listen_budget, "inner_cv": curve}
        metrics["audio"] = {"clips": int(len(audio_idx)), "l2": head.l2, "temperature": head.temperature,
                            "inner": head.inner, "plans": metadata["listening"]["plans"],
                            "oof_accuracy": {str(c): float((probs[:, k].argmax(1) == labels).mean())
                                             for k, c in enumerate(ends)}}
        log.info("listening plans (inner CV): %s", {k: p.to_dict() for k, p in plans.items()})
        if t.open_set_threshold is not None:
            metadata["open_set"] = fit_clip_open_set(feats, labels, order=order, genres=list(table.genres),
                                                     threshold=t.open_set_threshold).to_metadata()

    if len(lyrics_idx) and "bag" in blocks:
        x = _bag_rows(model, table, lyrics_idx)
        lyr = fit_lyrics_head(x, table.labels[lyrics_idx], np.array([group_of(i) for i in lyrics_idx]),
                              n_classes=n_classes, l2_grid=t.lyrics_l2, power=t.lyrics_weight_power,
                              folds=t.head_folds, seed=cfg.seed, max_iter=t.probe_max_iter,
                              domains=table.domains[lyrics_idx] if table.domains is not None else None,
                              loss=t.lyrics_loss)
        b = blocks["bag"]
        weight[:, b.start:b.stop] = lyr["weight"].to(weight)
        temperatures["lyrics"] = round(lyr["temperature"], 4)
        metrics["lyrics"] = {"songs": int(len(lyrics_idx))} | {k: v for k, v in lyr.items()
                                                               if k not in ("weight", "bias", "oof")}
        if audio_bias is None:
            bias.copy_(lyr["bias"].to(bias))
        else:
            # A row without audio reads the "no audio" vector: set it so that the audio
            # columns give the lyrics head's bias there (min-norm solution of W_a v = b_l - b_a).
            # W_a has rank genres - 1 (its rows sum to zero): rcond drops the null direction,
            # whose float-noise singular value otherwise swings v by ~10 between retrains whose
            # weights differ by 1e-4 (W_a v is the same either way).
            b_a = blocks["audio"]
            w_a = weight[:, b_a.start:b_a.stop].double()
            v = torch.linalg.lstsq(w_a, (lyr["bias"].double() - audio_bias.double()).unsqueeze(1),
                                   rcond=1e-9, driver="gelsd").solution.squeeze(1)
            with torch.no_grad():
                model.no_audio.copy_(v.to(model.no_audio))
            # The pairs read songs of no domain, as inference does (an excerpt's answers carry
            # its domain's offset); all songs when every one has a domain.
            plain_songs = np.array([not d for d in table.domains[lyrics_idx]]) if table.domains is not None \
                else np.ones(len(lyrics_idx), dtype=bool)
            if not plain_songs.any():
                plain_songs[:] = True
            lyrics_labels = table.labels[lyrics_idx][plain_songs]
            # Naive Bayes divides by the prior: the genre frequencies of those lyrics. (Dividing
            # by the balance the weighted head learnt instead was 3 points worse on held-out
            # pairs in benchmarks/cv_fusion.py: the pairs' genres are far flatter than the
            # lyrics', a third of which are Rock.)
            counts = np.bincount(lyrics_labels, minlength=n_classes).astype(np.float64)
            log_prior = np.log(np.maximum(counts / counts.sum(), 1e-12))
            lyrics_evidence = lyr["oof"][plain_songs] / lyr["temperature"] - log_prior
            metadata["fusion"] = fit_fusion(audio_oof, (lyrics_evidence, lyrics_labels),
                                            audio_temperature=temperatures["audio"],
                                            lyrics_temperature=temperatures["lyrics"], seed=cfg.seed)
            # In the model a with-audio row adds scale x (W_l l) through its lyrics vector, and
            # this offset for the rest: T_a w (b_l / T_l - log prior).
            metadata["fusion"]["lyrics_offset"] = [round(float(v), 6) for v in temperatures["audio"] * metadata[
                "fusion"]["lyrics_weight"] * (lyr["bias"].double().numpy() / lyr["temperature"] - log_prior)]
            metrics["fusion"] = metadata["fusion"]
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(bias)
        if hasattr(model, "no_lyrics"):
            model.no_lyrics.zero_()
    if "fusion" in metadata:
        # A track with both: its lyrics vector is scaled by metadata["fusion"]["lyrics_scale"],
        # so that dividing by the audio temperature gives the fusion rule (training/fusion.py).
        temperatures["both"] = temperatures["audio"]
    elif "audio" in temperatures and "lyrics" in temperatures:
        # No example has both: the geometric mean, as calibrate.py does for a kind never seen.
        temperatures["both"] = round(float(np.sqrt(temperatures["audio"] * temperatures["lyrics"])), 4)
    both = ("the audio's, its lyrics weighted by metadata.fusion" if "fusion" in metadata
            else "the geometric mean")
    metadata["calibration"] = {"temperature": temperatures, "method": "temperature scaling",
                               "fitted_on": "out-of-fold answers of the inner artist-grouped cross-validation "
                                            f"(a track with both inputs: {both})"}
    vocab = data.vocab.to_list() if data.vocab else []
    ckpt = Checkpoint.from_model(model, text_config=cfg.text_config(), genres=table.genres,
                                 vocab=vocab if model.config.use_lyrics else [],
                                 metadata={**metadata, "epoch": 0,
                                           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
                                 metrics={"inner_cv": metrics})
    from .model_card import stamp

    stamp(ckpt, cfg.card)
    save_checkpoint(out / "model.pt", ckpt)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    return metrics


__all__ = ["bags_of_texts", "clip_window_features", "fit_lyrics_head", "sparse_bags", "train_frozen_heads",
           "with_domain_columns"]
