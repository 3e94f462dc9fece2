"""Model cards: the comparison with the baselines that `model_card.py --comparison` adds."""

from __future__ import annotations

import json

import torch

from mmgenre_core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mmgenre_core.config import ModelConfig, TextConfig
from mmgenre_core.model import GenreModel
from training.model_card import build_card, comparison_from
from training.model_card import main as model_card_main

RESULTS = {
    "split": "test", "seeds": [0, 1], "config_split_seed": 0,
    "per_seed": {
        "0": {"audio: MFCC stats + logistic regression": {"accuracy": 0.6, "macro_f1": 0.55, "n": 40},
              "audio: mmgenre x@1 (musicnn audio branch, audio alone)": {"accuracy": 0.7, "macro_f1": 0.66, "n": 40}},
        "1": {"audio: MFCC stats + logistic regression": {"accuracy": 0.5, "macro_f1": 0.45, "n": 44},
              "audio: mmgenre x@1 (musicnn audio branch, audio alone)": {"accuracy": 0.8, "macro_f1": 0.77, "n": 44}},
    },
    "summary": {
        "audio: MFCC stats + logistic regression": {"accuracy_mean": 0.55, "accuracy_sd": 0.0707,
                                                    "macro_f1_mean": 0.5, "macro_f1_sd": 0.0707},
        "audio: mmgenre x@1 (musicnn audio branch, audio alone)": {"accuracy_mean": 0.75, "accuracy_sd": 0.0707,
                                                                    "macro_f1_mean": 0.715, "macro_f1_sd": 0.0778},
    },
}


def _checkpoint() -> Checkpoint:
    model = GenreModel(ModelConfig(n_genres=2, n_mels=16, cnn_channels=(4,), audio_dim=8, use_lyrics=False))
    return Checkpoint.from_model(model, text_config=TextConfig(), genres=["Pop", "Rock"], vocab=[],
                                 metadata={"name": "x", "version": "1"}, metrics={})


def test_comparison_rows_pair_the_own_split_with_the_mean():
    comparison = comparison_from(RESULTS, command="python benchmarks/baselines.py --split-seeds 0 1")
    assert [r["name"] for r in comparison["rows"]] == list(RESULTS["summary"])
    assert comparison["rows"][1]["fixed"]["accuracy"] == 0.7  # split 0, the config's own
    assert comparison["rows"][1]["mean"]["accuracy_mean"] == 0.75
    ckpt = _checkpoint()
    ckpt.metrics["comparison"] = comparison
    card = build_card(ckpt)
    assert "## Compared with classic baselines" in card
    assert "| audio: mmgenre x@1 (musicnn audio branch, audio alone) | 70.0% | 0.660 | 75.0% ± 7.1% |" in card
    assert "python benchmarks/baselines.py --split-seeds 0 1" in card


def test_model_card_cli_stamps_the_comparison_without_touching_weights(tmp_path, capsys):
    path, results = tmp_path / "m.pt", tmp_path / "baselines.json"
    ckpt = _checkpoint()
    save_checkpoint(path, ckpt)
    results.write_text(json.dumps(RESULTS))
    assert model_card_main(["--model", str(path), "--comparison", str(results)]) == 0
    assert "Compared with classic baselines" in capsys.readouterr().out
    again = load_checkpoint(path)
    assert "Compared with classic baselines" in again.metadata["model_card"]
    assert again.metrics["comparison"]["seeds"] == [0, 1]
    assert all(torch.equal(again.state_dict[k], v) for k, v in ckpt.state_dict.items())


CV = {"command": "python benchmarks/cv_pool.py", "clips": 130, "folds": 5,
      "genres": {"Pop": 80, "Rock": 40, "Folk": 10},
      "methods": {"probe": {"per_genre_recall": {"Pop": 0.9, "Rock": 0.55, "Folk": 0.0},
                            "per_genre_f1": {"Pop": 0.8, "Rock": 0.6, "Folk": 0.0}}}}


def test_per_genre_table_says_reliable_weak_or_not_supported():
    from training.model_card import per_genre_from

    ckpt = _checkpoint()
    rows = per_genre_from(CV, ckpt)["genres"]
    # Pop: 80 clips, recall and F1 >= 0.6; Rock: recall 0.55; Folk: not one of the model's genres.
    assert {g: r["verdict"] for g, r in rows.items()} == {"Pop": "reliable", "Rock": "weak", "Folk": "not supported"}
    ckpt.metrics["per_genre"] = per_genre_from(CV, ckpt)
    ckpt.metadata["calibration"] = {"method": "temperature scaling", "fitted_on": "validation split",
                                    "temperature": {"audio": 1.5, "lyrics": 0.8, "both": 1.1},
                                    "ece": {"test": {"audio": {"n": 40, "before": 0.2, "after": 0.05}}}}
    card = build_card(ckpt)
    assert "| Pop | 80 | 0.900 | 0.800 | reliable |" in card
    assert "| Folk | 10 | 0.000 | 0.000 | not supported |" in card
    assert "## Calibration" in card and "audio T=1.50" in card and "audio 0.200 -> 0.050 (40 tracks)" in card
