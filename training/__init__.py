"""Training tools for mmgenre: datasets, feature preparation, training and evaluation.

Run the scripts from the repository root::

    python training/train.py --config training/configs/default_model.json --out runs/default
    python training/evaluate.py --model runs/default/model.pt --out runs/default/eval.json

The modules are importable as ``training.*`` (the tests use them that way).
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

__all__ = ["REPO_ROOT"]
