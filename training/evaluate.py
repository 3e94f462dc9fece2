"""Evaluate a checkpoint the way the paper's tables do.

    # the test split of the run's own data (the config is stored in the checkpoint)
    python training/evaluate.py --model RUN_DIR/model.pt --out RUN_DIR/eval.json
    # any collection: a genre-per-folder tree, a CSV manifest, a lyrics JSON-lines file
    python training/evaluate.py --model CKPT --data folder:/music/gtzan --out gtzan.json
    python training/evaluate.py --model CKPT --data lyrics:lyrics.jsonl --out lyrics.json
    python training/evaluate.py --model CKPT --data manifest:tracks.csv,root=/music --data lyrics:l.jsonl

Reports, for audio only (lyrics hidden), lyrics only (audio hidden) and fused (every
modality an example has): accuracy, macro and weighted F1, log loss, per-genre
precision/recall/F1 (Table 2's layout: one F1 column per mode) and a confusion
matrix saved as PNG. Everything goes to the ``--out`` JSON file and is printed as a
table. Labels are matched to the model's genres ignoring case and punctuation
("hiphop" = "Hip-Hop"); examples of genres the model does not know are left out and
counted.

Audio is decoded once through the same prepared-features cache as training
(:mod:`training.prepare`, keyed by the checkpoint's audio config), so the features
equal what :class:`mmgenre_core.predict.GenreClassifier` computes for one window.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from mmgenre_core.checkpoint import Checkpoint, load_checkpoint
from mmgenre_core.device import resolve_device
from mmgenre_core.errors import ConfigError, MMGenreError
from mmgenre_core.text import Vocabulary

from training.config import PrepareConfig, config_from_dict, expand_string, load_config, resolve_path
from training.datasets import Dataset, Example, build_dataset, canonical_genre, load_examples, \
    parse_source_spec
from training.loader import MODES, build_table, evaluate_modes
from training.metrics import format_report, save_confusion_png
from training.prepare import prepare_dataset

log = logging.getLogger("training.evaluate")


def _match_genres(examples: list[Example], genres: list[str]) -> tuple[list[Example], dict[str, int]]:
    """Map labels onto the model's genres (case/punctuation-insensitive); drop the unknown."""
    known = {canonical_genre(g).casefold(): g for g in genres}
    known.update({"".join(ch for ch in g.casefold() if ch.isalnum()): g for g in genres})
    kept, unknown = [], {}
    for e in examples:
        c = canonical_genre(e.genre)
        g = known.get(c.casefold()) or known.get("".join(ch for ch in c.casefold() if ch.isalnum()))
        if g is None:
            unknown[e.genre] = unknown.get(e.genre, 0) + 1
            continue
        e.genre = g
        kept.append(e)
    return kept, unknown


def evaluate(ckpt: Checkpoint, examples: list[Example], *, cache_dir: str | os.PathLike,
             device: str = "auto", batch_size: int = 64, crop_seconds: float | None = None,
             workers: int = 0, progress: bool = True, modes: Sequence[str] = MODES,
             prepare_examples: list[Example] | None = None, prepare_name: str = "eval") -> dict[str, Any]:
    """Metrics of ``ckpt`` on ``examples`` for each mode: {"results": {mode: metrics}, ...}.

    ``prepare_examples``: prepare the audio of these (a superset of ``examples``, e.g. the
    whole training dataset, so the training run's prepared folder is reused).
    """
    examples, unknown = _match_genres(list(examples), list(ckpt.genres))
    if unknown:
        log.warning("left out %d examples of genres the model does not know: %s", sum(unknown.values()), unknown)
    mc = ckpt.model_config
    if not mc.use_audio:
        examples = [Example(**{**e.__dict__, "path": None}) for e in examples]
    if not mc.use_lyrics:
        examples = [Example(**{**e.__dict__, "lyrics": None}) for e in examples]
    examples = [e for e in examples if e.path or e.lyrics]
    if not examples:
        raise ConfigError("no example to evaluate (none has a genre of the model and a modality it reads)")
    prepared = None
    audio = [e for e in examples if e.path]
    if audio:
        prepared = prepare_dataset(prepare_examples or audio, ckpt.audio_config, cache_dir, name=prepare_name,
                                   workers=workers, progress=progress)
    vocab = Vocabulary.from_list(ckpt.vocab) if mc.use_lyrics else None
    table = build_table(Dataset(examples=examples, genres=list(ckpt.genres)), prepared=prepared, vocab=vocab,
                        text_config=ckpt.text_config)
    for d in table.dropped:
        log.warning("skipped %s: %s", d.key, d.reason)
    dev = resolve_device(device)
    model = ckpt.build_model().to(dev).eval()
    crop = None
    if crop_seconds is not None:
        crop = max(1, int(round(crop_seconds * ckpt.audio_config.sample_rate / ckpt.audio_config.hop_length)))
    from mmgenre_core.device import autocast, autocast_dtype

    results = evaluate_modes(model, table, table.indices(None), device=dev, batch_size=batch_size,
                             crop_frames=crop, autocast=(lambda: autocast(dev)) if autocast_dtype(dev) else None,
                             modes=modes)
    return {
        "n_examples": len(table),
        "n_audio": int((table.mel_row >= 0).sum()),
        "n_lyrics": int((table.lyr_row >= 0).sum()),
        "n_unknown_genre": int(sum(unknown.values())),
        "unknown_genres": unknown,
        "skipped": [{"key": d.key, "path": d.path, "reason": d.reason} for d in table.dropped],
        "genres": list(ckpt.genres),
        "results": results,
    }


def _examples_for(args: argparse.Namespace, ckpt: Checkpoint) -> tuple[list[Example], dict[str, Any], dict]:
    """The examples to evaluate, a description of where they came from, extra evaluate() options."""
    if args.data:
        specs = [parse_source_spec(s) for s in args.data]
        examples, _ = load_examples(specs)
        if args.split != "all":
            with_split = [e for e in examples if e.split is not None]
            if with_split:
                examples = [e for e in examples if e.split in (None, args.split)]
        return examples, {"data": list(args.data), "split": args.split}, {}
    if args.config:
        cfg = load_config(args.config, args.overrides)
    else:
        stored = ckpt.metadata.get("config")
        if not stored:
            raise ConfigError("the checkpoint holds no training config: give --data or --config")
        cfg = config_from_dict(stored)
    dataset = build_dataset(cfg)
    examples = dataset.examples if args.split == "all" else dataset.split(args.split)
    # Prepare what training prepared, so its cached features are found again.
    extra = {"prepare_examples": [e for e in dataset.examples if e.path], "prepare_name": cfg.name}
    if not args.cache_dir:
        extra["cache_dir"] = resolve_path(cfg.prepare.cache_dir)
    return examples, {"config": args.config or "stored in the checkpoint", "split": args.split}, extra


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Evaluate an mmgenre checkpoint: audio only, lyrics only, fused.")
    p.add_argument("--model", required=True, metavar="CKPT")
    p.add_argument("--data", action="append", default=[], metavar="SPEC",
                   help="folder:DIR | manifest:CSV[,root=DIR] | lyrics:FILE.jsonl | fma:METADATA_DIR,audio_dir=DIR "
                        "(repeatable; default: the run's own data from its config)")
    p.add_argument("--config", help="training config whose data to use (default: the checkpoint's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--split", default="test", choices=["train", "valid", "test", "all"],
                   help="which split (default test; --data collections without splits are used whole)")
    p.add_argument("--out", metavar="FILE.json", help="write the metrics here (confusion PNGs beside it)")
    p.add_argument("--confusion-dir", metavar="DIR", help="where the confusion PNGs go (default: beside --out)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--crop-seconds", type=float, default=None, help="centre crop (default: the whole window)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (0 = every core)")
    p.add_argument("--cache-dir", help="prepared-features cache (default: the training default)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        ckpt = load_checkpoint(args.model)
        examples, source, extra = _examples_for(args, ckpt)
        cache = extra.pop("cache_dir", None) or resolve_path(args.cache_dir or expand_string(PrepareConfig().cache_dir))
        report = evaluate(ckpt, examples, cache_dir=cache, device=args.device,
                          batch_size=args.batch_size, crop_seconds=args.crop_seconds, workers=args.workers,
                          progress=not args.no_progress, **extra)
    except MMGenreError as exc:
        print(f"evaluate.py: {exc}", file=sys.stderr)
        return 2
    report = {"model": str(args.model), "model_id": ckpt.model_id, **source, **report}
    results = report["results"]
    print(format_report(results, ckpt.genres))
    for mode in ("fused", "audio", "lyrics"):
        if mode in results:
            r = results[mode]
            print(f"{mode}: accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f} ({r['n']} examples)")
    if args.out or args.confusion_dir:
        folder = Path(args.confusion_dir) if args.confusion_dir else Path(args.out).resolve().parent
        stem = Path(args.out).stem if args.out else "confusion"
        report["confusion_png"] = {}
        for mode, r in results.items():
            path = save_confusion_png(r, folder / f"{stem}_confusion_{mode}.png", title=f"{mode} (n={r['n']})\n"
                                      f"accuracy {r['accuracy']:.3f}, macro F1 {r['macro_f1']:.3f}")
            report["confusion_png"][mode] = str(path)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"metrics written to {out}")
    return 0


__all__ = ["evaluate", "main"]

if __name__ == "__main__":
    sys.exit(main())
