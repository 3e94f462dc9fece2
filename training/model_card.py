"""Model cards: the text ``mmgenre info`` prints for a checkpoint.

Built from what the checkpoint itself holds (genres, dataset counts, training
config, held-out metrics) plus the free text of the config's ``card`` section
(``description``, ``limits``, ``licences``). ``train.py`` stamps every model it
saves; ``python training/model_card.py --model CKPT [--config FILE.json]
[--comparison BASELINES.json]`` (re)stamps an existing checkpoint without touching its
weights, optionally adding the side-by-side comparison with the classic baselines
that ``benchmarks/baselines.py --split-seeds ... --json`` measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgenre_core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "-"


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def build_card(ckpt: Checkpoint, card: dict[str, Any] | None = None) -> str:
    """Markdown-ish plain text describing ``ckpt``."""
    card = dict(card or {})
    meta, metrics = ckpt.metadata, ckpt.metrics
    cfg = meta.get("config") or {}
    train = cfg.get("train") or {}
    lines = [f"# {ckpt.model_id}", ""]
    if card.get("description"):
        lines += [card["description"].strip(), ""]
    lines += [f"Genres it can output ({len(ckpt.genres)}): {', '.join(ckpt.genres)}.", ""]
    mc = ckpt.model_config
    a = ckpt.audio_config
    if mc.audio_branch == "musicnn":
        audio = (f"audio: musicnn pretrained on the Million Song Dataset (musicnn 0.1.0, ISC licence), "
                 f"{'fine-tuned' if mc.musicnn_finetune else 'frozen'}, its {mc.musicnn_features} features "
                 f"({mc.audio_vector_dim}-d) averaged over 3-s patches")
    else:
        audio = f"audio: the paper's CNN, channels {list(mc.cnn_channels)} -> {mc.audio_dim}-d vector"
    if a.window_rounds:
        audio += (f"; listens in rounds to {a.window_seconds:g}-s windows of a track ({a.sample_rate} Hz, "
                  f"{a.n_mels} mel bands), one per {a.num_windows}th of it: {a.window_rounds[0]} at first, up to "
                  f"{', then '.join(str(n) for n in a.window_rounds[1:])} while unsure, and classifies the mean "
                  "of the windows heard")
    else:
        audio += (f"; listens to {a.num_windows} window(s) of {a.window_seconds:g} s per track "
                  f"({a.sample_rate} Hz, {a.n_mels} mel bands)")
    lyrics = (f"lyrics: HAN with {mc.embed_dim}-d embeddings ({len(ckpt.vocab)} words), word/line BiGRU "
              f"{mc.word_hidden}/{mc.line_hidden}" + (", plus a TF-IDF bag of words" if mc.lyrics_bow else ""))
    if train.get("frozen_heads"):
        inner = (metrics.get("inner_cv") or {})
        l2 = {k: (inner.get(k) or {}).get("l2") for k in ("audio", "lyrics")}
        bag = (f"a TF-IDF bag of the cleaned text (its {mc.bag_text_words} word 1-2-grams and {mc.bag_text_chars} "
               "character 2-5-grams, as sklearn's word and char_wb analysers, each in at least two training "
               "songs, the two kinds normalised apart"
               + (", and six numbers for the text's shape: its length in words and lines, distinct words, words "
                  "a line, non-ASCII share and repeated lines, standardised" if getattr(mc, "bag_text_shape", 0) else "")
               if getattr(mc, "bag_reads_text", False) else
               f"a TF-IDF bag of words ({len(ckpt.vocab)} words"
               + (f", {mc.bag_bigrams} word pairs" if getattr(mc, "bag_bigrams", 0) else "")
               + (f" and the {mc.bag_char_ngrams} character 2-5-grams of those words (words and pairs, and "
                  "n-grams, normalised apart)" if getattr(mc, "bag_char_ngrams", 0) else ""))
        lines += ["## Training", (
            f"{audio}; lyrics: {bag}"
            + "; the HAN is not trained in this recipe and its columns are zero); one linear layer over both. The heads were fitted on all the "
            "labelled data (nothing held out: the cross-validation below is the estimate) by logistic "
            f"regression with class weights balanced and raised to {train.get('class_weight_power', 1)}"
            + ("" if train.get("lyrics_class_weight_power") is None
               else f" ({train['lyrics_class_weight_power']} for the lyrics head)")
            + (" (the lyrics head is one-vs-rest linear SVMs instead, squared hinge, their decision values "
               "scaled by a temperature)" if train.get("lyrics_loss") == "squared_hinge" else "") + ", the audio "
            "head on the means over the window counts the rounds end at; L2 penalties (audio "
            f"{l2['audio']}, lyrics {l2['lyrics']}), temperatures and the listening plans by an inner "
            f"{train.get('head_folds', '-')}-fold artist-grouped cross-validation; seed {meta.get('seed', '-')}. "
            f"Trained with `{meta.get('trained_with', 'training/train.py')}`"
            + (f" at commit {meta['git_commit'][:10]}" if meta.get("git_commit") else "") + "."), ""]
        listening = meta.get("listening") or {}
        if listening.get("plans"):
            lines.append("## Listening plans (`listen:`; chosen by the inner cross-validation)")
            for name, plan in listening["plans"].items():
                row = next((r for r in listening.get("inner_cv") or []
                            if r["max_windows"] == plan["max_windows"] and r["threshold"] == plan["threshold"]), {})
                lines.append(f"- {name}: up to {plan['max_windows']} windows, another round while the top "
                             f"probability is below {plan['threshold']:g}; inner CV {_pct(row.get('accuracy'))} at "
                             f"{row.get('windows', float('nan')):.2f} windows a track")
            lines.append("")
        fusion = meta.get("fusion") or {}
        if fusion.get("lyrics_weight") is not None:
            acc = fusion.get("inner_cv_accuracy") or {}
            lines += ["## Audio and lyrics together (genre-matched pairs)", (
                f"No training track has both, so the rule for a track with both was learnt on {fusion.get('pairs')} "
                "genre-matched pairs, each audio clip with the lyrics of a song of its genre by another artist, both "
                "answered out of fold by the inner cross-validation: pairs approximate real tracks (their halves "
                "are independent given the genre). Naive-Bayes late fusion: the audio's calibrated logits plus "
                f"{fusion['lyrics_weight']:.2f} x the lyrics' calibrated evidence. On those pairs: audio alone "
                f"{_pct(acc.get('audio'))}, lyrics evidence alone {_pct(acc.get('lyrics'))}, fused {_pct(acc.get('fused'))}. "
                "Instrumental tracks (no lyrics) keep the audio alone."), ""]
    else:
        lines += ["## Training", (
            f"{audio}; {lyrics}; one linear layer over both; dropout {mc.dropout}. "
            + ("AdamW" if train.get("optimizer") == "adamw"
               else f"SGD (Nesterov momentum {train.get('momentum', '-')})")
            + f", lr {train.get('lr', '-')}, weight decay {train.get('weight_decay', '-')}, "
            f"batch {train.get('batch_size', '-')}, {meta.get('epochs_run', '-')} epochs run, best by "
            f"{train.get('select', 'val_loss')}; audio crops of {train.get('crop_seconds', '-')} s; seed "
            f"{meta.get('seed', '-')}. Trained with `{meta.get('trained_with', 'training/train.py')}`"
            + (f" at commit {meta['git_commit'][:10]}" if meta.get("git_commit") else "") + "."), ""]
    dataset = meta.get("dataset") or {}
    if dataset:
        lines.append("## Data (examples per split)")
        for split in ("train", "valid", "test"):
            d = dataset.get(split) or {}
            if d.get("examples"):
                lines.append(f"- {split}: {d.get('examples', '-')} examples ({d.get('audio', '-')} with audio, "
                             f"{d.get('lyrics', '-')} with lyrics, {d.get('both', 0)} with both)")
        lines.append("")
    test = metrics.get("test") or {}
    if test:
        lines.append("## Held-out test split (artists never seen in training)")
        if train.get("eval_crop_seconds") and mc.use_audio:
            # Why the audio rows here and in the comparison below can differ: training
            # evaluates a centre crop of the prepared clip, inference the whole file.
            lines.append(f"Measured by training/train.py on the centre {train['eval_crop_seconds']:g} s of "
                         f"each clip; `mmgenre predict` listens to {a.num_windows} window(s) spread over "
                         "the whole file, as the comparison below does.")
        lines += ["| mode | examples | accuracy | macro-F1 |", "|---|---|---|---|"]
        for mode, r in test.items():
            if isinstance(r, dict):
                lines.append(f"| {mode} | {r.get('n', '-')} | {_pct(r.get('accuracy'))} | {_f(r.get('macro_f1'))} |")
        lines.append("")
    comparison = metrics.get("comparison") or {}
    if comparison.get("rows"):
        seeds = comparison.get("seeds") or []
        own = comparison.get("config_split_seed")
        lines += [f"## Compared with classic baselines ({comparison.get('split', 'test')} splits, artist-disjoint)",
                  f"Measured by `{comparison.get('command', 'python benchmarks/baselines.py')}`: the baselines and "
                  f"the models are trained on the same examples of each split. Split {own} is this model's own; "
                  f"the mean is over splits {', '.join(map(str, seeds))}.",
                  f"| | split {own}: accuracy | macro-F1 | {len(seeds)} splits: accuracy | macro-F1 |",
                  "|---|---|---|---|---|"]
        for row in comparison["rows"]:
            fixed, mean = row.get("fixed") or {}, row.get("mean") or {}
            lines.append(
                f"| {row['name']} | {_pct(fixed.get('accuracy'))} | {_f(fixed.get('macro_f1'))} | "
                f"{_pct(mean.get('accuracy_mean'))} ± {_pct(mean.get('accuracy_sd'))} | "
                f"{_f(mean.get('macro_f1_mean'))} ± {_f(mean.get('macro_f1_sd'))} |")
        lines.append("")
    per_genre = metrics.get("per_genre") or {}
    if per_genre.get("genres"):
        tags = any("tag_precision" in row for row in per_genre["genres"].values())
        lines += [f"## Per genre, from audio ({per_genre.get('source', 'cross-validation')})",
                  "| genre | labelled clips | CV recall | CV F1 |" + (" tags written: right |" if tags else "")
                  + " verdict |", "|---|---|---|---|" + ("---|" if tags else "") + "---|"]
        for genre, row in per_genre["genres"].items():
            written = (f" {row.get('tags_written') or 0}: {_pct(row.get('tag_precision'))} |"
                       if tags and row.get("tags_written") else (" 0 |" if tags else ""))
            lines.append(f"| {genre} | {row.get('clips', '-')} | {_f(row.get('recall'))} | {_f(row.get('f1'))} |"
                         f"{written} {row.get('verdict', '-')} |")
        lines += [per_genre.get("rule", ""), ""]
    calibration = meta.get("calibration") or {}
    if calibration.get("temperature"):
        temps = calibration["temperature"]
        lines += ["## Calibration",
                  f"{calibration.get('method', 'temperature scaling')}, fitted on the {calibration.get('fitted_on', '-')}: "
                  + ", ".join(f"{k} T={v:.2f}" for k, v in temps.items())
                  + (". Expected calibration error (10 bins) before -> after:" if calibration.get("ece") else ".")]
        for split, kinds in (calibration.get("ece") or {}).items():
            lines.append(f"- {split}: " + "; ".join(
                f"{kind} {e['before']:.3f} -> {e['after']:.3f} ({e['n']} tracks)" for kind, e in kinds.items()))
        lines.append("")
    if card.get("limits"):
        lines += ["## Known limits", card["limits"].strip(), ""]
    if card.get("licences"):
        lines += ["## Licences of the training data", card["licences"].strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def stamp(ckpt: Checkpoint, card: dict[str, Any] | None) -> Checkpoint:
    """Put the card text (and its source section) into ``ckpt.metadata``, in place."""
    ckpt.metadata["card"] = dict(card or {})
    ckpt.metadata["model_card"] = build_card(ckpt, card)
    return ckpt


def comparison_from(results: dict[str, Any], *, command: str | None = None) -> dict[str, Any]:
    """The card's comparison table from ``benchmarks/baselines.py --split-seeds ... --json`` output."""
    per_seed = {int(k): v for k, v in (results.get("per_seed") or {}).items()}
    own = results.get("config_split_seed")
    fixed = per_seed.get(own, {}) if own is not None else {}
    rows = [{"name": name, "fixed": fixed.get(name), "mean": mean}
            for name, mean in (results.get("summary") or {}).items()]
    return {"split": results.get("split", "test"), "seeds": results.get("seeds", sorted(per_seed)),
            "config_split_seed": own, "rows": rows, "paired": results.get("paired", {}),
            "command": command or "python benchmarks/baselines.py --split-seeds ..."}


#: The plain word for a genre's audio quality: "reliable" when cross-validation
#: recognises it (recall and F1 >= 0.6) on at least 20 labelled clips.
VERDICT_RULE = ("Verdict: reliable = at least 20 labelled clips and CV recall and F1 >= 0.6; weak = the model "
                "answers it but below that; not supported = the model cannot answer it from audio.")


def verdict(genre: str, ckpt: Checkpoint, *, clips: int, recall: float, f1: float) -> str:
    """:data:`VERDICT_RULE` for one genre."""
    if genre not in ckpt.genres:
        return "not supported"
    return "reliable" if clips >= 20 and recall >= 0.6 and f1 >= 0.6 else "weak"


def per_genre_from(cv: dict[str, Any], ckpt: Checkpoint, *, method: str = "probe") -> dict[str, Any]:
    """The card's per-genre table from ``benchmarks/cv_pool.py --json`` output."""
    m = cv["methods"][method]
    rows = {}
    for genre, clips in cv["genres"].items():
        recall, f1 = m["per_genre_recall"].get(genre), m["per_genre_f1"].get(genre)
        rows[genre] = {"clips": clips, "recall": recall, "f1": f1,
                       "verdict": verdict(genre, ckpt, clips=clips, recall=recall, f1=f1)}
    source = (f"`{cv.get('command', 'python benchmarks/cv_pool.py')}`: {cv['folds']}-fold artist-grouped "
              f"cross-validation over all {cv['clips']} labelled clips, method {method!r}")
    return {"source": source, "genres": rows, "rule": VERDICT_RULE}


def _open_set_words(cv: dict[str, Any]) -> str:
    """", leaving 4.3% untagged as unlike the genres it knows" when the run scored the open set."""
    if cv.get("open_set_threshold") is None or cv.get("unfamiliar_share") is None:
        return ""
    return (f", leaving {_pct(cv['unfamiliar_share'])} untagged as unlike the genres it knows (open-set threshold "
            f"{cv['open_set_threshold']:g})")


def per_genre_from_windows(cv: dict[str, Any], ckpt: Checkpoint, *, plan: str = "balanced") -> dict[str, Any]:
    """The card's per-genre table from ``benchmarks/cv_windows.py --json`` output: the
    named plan's recall and F1, and the precision of the tags it writes at the plugin's
    default ``min_confidence`` (pooled over every fold of every seed)."""
    rows = {}
    for genre, clips in cv["clips"].items():
        recall, f1 = cv["recall"][plan].get(genre), cv["f1"][plan].get(genre)
        tags = cv["tags"].get(genre) or {}
        rows[genre] = {"clips": clips, "recall": recall, "f1": f1,
                       "verdict": verdict(genre, ckpt, clips=clips, recall=recall, f1=f1),
                       "tag_precision": tags.get("precision"), "tags_written": tags.get("written")}
    summary = cv["summary"]
    source = (f"`python benchmarks/cv_windows.py`: {cv['folds']}-fold artist-grouped cross-validation over all "
              f"labelled clips, fold seeds {', '.join(map(str, cv['seeds']))}, the {plan} plan, pooled; accuracy "
              f"{_pct(summary[plan]['accuracy']['mean'])} at {summary[plan]['windows']['mean']:.2f} windows a track "
              f"(fixed four windows {_pct(summary['fixed4']['mean'])}, plain probe {_pct(summary['probe']['mean'])}); "
              f"at min_confidence 0.3{_open_set_words(cv)} it tags {_pct(cv.get('tagged_share'))} of the clips "
              f"and {_pct(cv.get('tag_precision'))} of its tags are right")
    return {"source": source, "genres": rows, "rule": VERDICT_RULE}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint to stamp (rewritten atomically)")
    parser.add_argument("--config", help="training config whose `card` section to use "
                                         "(default: the one stored in the checkpoint)")
    parser.add_argument("--comparison", metavar="JSON",
                        help="add the baselines comparison written by "
                             "`benchmarks/baselines.py --split-seeds ... --json JSON` to the card")
    parser.add_argument("--command", help="with --comparison: the command that measured it, as shown in the card")
    parser.add_argument("--per-genre", metavar="JSON",
                        help="add the per-genre table from `benchmarks/cv_pool.py --json JSON`")
    parser.add_argument("--per-genre-method", default="probe",
                        help="which of cv_pool's methods the table shows (default: probe, the logistic "
                             "regression over musicnn's features that is also this model's audio head)")
    parser.add_argument("--per-genre-windows", metavar="JSON",
                        help="add the per-genre table from `benchmarks/cv_windows.py --json JSON` (instead of "
                             "--per-genre)")
    parser.add_argument("--out", help="write here instead of over --model")
    args = parser.parse_args(argv)
    ckpt = load_checkpoint(args.model)
    if args.comparison:
        import json

        results = json.loads(Path(args.comparison).read_text(encoding="utf-8"))
        ckpt.metrics["comparison"] = comparison_from(results, command=args.command)
    if args.per_genre:
        import json

        cv = json.loads(Path(args.per_genre).read_text(encoding="utf-8"))
        ckpt.metrics["per_genre"] = per_genre_from(cv, ckpt, method=args.per_genre_method)
    if args.per_genre_windows:
        import json

        cv = json.loads(Path(args.per_genre_windows).read_text(encoding="utf-8"))
        ckpt.metrics["per_genre"] = per_genre_from_windows(cv, ckpt)
    card = (ckpt.metadata.get("config") or {}).get("card")
    if args.config:
        from training.config import load_config

        card = load_config(args.config).card
    stamp(ckpt, card)
    save_checkpoint(args.out or args.model, ckpt)
    print(ckpt.metadata["model_card"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
