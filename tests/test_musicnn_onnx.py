"""musicnn through ONNX Runtime: the shipped graph is the shipped weights', and answers as torch does."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from mmgenre_core import musicnn_onnx
from mmgenre_core.audio import load_windows
from mmgenre_core.musicnn import load_pretrained, split_patches
from mmgenre_core.predict import GenreClassifier

from .conftest import DATA_DIR


@pytest.fixture(scope="module")
def files() -> list[str]:
    clips = [str(p) for g in ("classical", "electronic", "pop", "rock")
             for p in sorted((DATA_DIR / "emotify" / g).glob("*.mp3"))[:3]]
    return clips + [str(p) for p in sorted((DATA_DIR / "full_tracks").glob("*.ogg"))[:2]]


def test_the_shipped_graph_belongs_to_the_shipped_weights():
    backbone = load_pretrained().eval()
    runner = musicnn_onnx.load_for(backbone)
    assert runner is not None and runner.digest == musicnn_onnx.weights_digest(backbone)
    with torch.no_grad():
        backbone.dense.bias.add_(1e-3)  # other weights (a fine-tuned musicnn): torch does the work
    assert musicnn_onnx.load_for(backbone) is None


def test_features_match_torch_on_real_audio(files):
    clf = GenreClassifier.load(None, onnx=False)
    backbone = clf.model.cnn.backbone
    runner = musicnn_onnx.load_for(backbone)
    with torch.inference_mode():
        mel = clf.model.frontend(torch.from_numpy(np.concatenate([load_windows(f, config=clf.audio_config)
                                                                  for f in files[:6]])))
        patches, _ = split_patches(mel)
        expected = backbone(patches)["penultimate"]
    got = runner(patches)
    assert got.shape == expected.shape == (patches.shape[0], 200)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_predictions_keep_their_top_genre(files):
    ort = GenreClassifier.load(None)
    plain = GenreClassifier.load(None, onnx=False)
    assert (ort.model.cnn.engine, plain.model.cnn.engine) == ("onnxruntime", "torch")
    assert ort.backbone_id != plain.backbone_id  # cache entries of the two are never mixed
    a = np.array([[r.probabilities[g] for g in ort.genres] for r in ort.predict(files)])
    b = np.array([[r.probabilities[g] for g in ort.genres] for r in plain.predict(files)])
    assert np.allclose(a, b, atol=1e-5) and (a.argmax(1) == b.argmax(1)).all()


def test_without_onnxruntime_torch_does_the_work(files, monkeypatch):
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    clf = GenreClassifier.load(None)
    assert clf.model.cnn.engine == "torch"
    assert all(r.ok for r in clf.predict(files[:2]))
