"""Convert musicnn's MSD-trained TensorFlow 1 checkpoint into mmgenre's PyTorch port.

    python training/convert_musicnn.py                 # -> mmgenre_core/models/musicnn_msd.pt
    python training/convert_musicnn.py --reference tests/fixtures/musicnn_reference.npz \\
        ../shared/data/emotify/rock/002.mp3 ...         # parity fixture from the original model

One command, reproducible: the ``musicnn==0.1.0`` wheel is fetched with ``pip download``
(or given with ``--wheel``) and checked against its pinned sha256; TensorFlow 2.15 (CPU,
it still runs the TF1 graph through ``tf.compat.v1``) is installed into a private
virtual environment (``--venv``, default ``~/.cache/mmgenre/musicnn-tf``) and used only
to read the checkpoint's variables and, for ``--reference``, to run musicnn's own
tagger. The mapping to PyTorch and the write happen here, with torch; mmgenre never
imports TensorFlow.

The weights file holds the state_dict, the 50 MSD tag names, where the weights came
from and musicnn's ISC licence, which is also written next to it as
``LICENSE.musicnn``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mmgenre_core.musicnn import DEFAULT_WEIGHTS, Musicnn, save_weights  # noqa: E402

log = logging.getLogger("convert_musicnn")

WHEEL = "musicnn-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
CHECKPOINT = "MSD_musicnn"
# TF 2.15 is the last release whose tf.compat.v1.layers work without tf_keras; it needs numpy < 2.
TF_REQUIREMENTS = ["tensorflow-cpu==2.15.1", "numpy<2", "librosa==0.10.2.post1", "soundfile"]
DEFAULT_VENV = Path.home() / ".cache" / "mmgenre" / "musicnn-tf"

# TF variable scope -> PyTorch module, in the order build_musicnn creates them.
CONVS = {
    "conv2d": "timbral.0.conv", "conv2d_1": "timbral.1.conv",
    "conv2d_2": "temporal.0.conv", "conv2d_3": "temporal.1.conv", "conv2d_4": "temporal.2.conv",
    "conv2d_5": "midend.0.conv", "conv2d_6": "midend.1.conv", "conv2d_7": "midend.2.conv",
}
BATCH_NORMS = {
    "batch_normalization": "input_bn",
    "batch_normalization_1": "timbral.0.bn", "batch_normalization_2": "timbral.1.bn",
    "batch_normalization_3": "temporal.0.bn", "batch_normalization_4": "temporal.1.bn",
    "batch_normalization_5": "temporal.2.bn",
    "batch_normalization_6": "midend.0.bn", "batch_normalization_7": "midend.1.bn",
    "batch_normalization_8": "midend.2.bn",
    "batch_normalization_9": "pool_bn", "batch_normalization_10": "dense_bn",
}
DENSES = {"dense": "dense", "dense_1": "classifier"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(wheel: Path | None, cache: Path) -> Path:
    """The musicnn wheel: ``wheel`` if given, else ``pip download`` into ``cache``; sha256-checked."""
    if wheel is None:
        wheel = cache / WHEEL
        if not wheel.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            log.info("downloading %s", WHEEL)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache),
                            "musicnn==0.1.0"], check=True)
    digest = sha256(wheel)
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest} is not musicnn 0.1.0's ({WHEEL_SHA256})")
    return wheel


def ensure_venv(venv: Path) -> Path:
    """A virtual environment with TensorFlow for the TF half; created once, then reused."""
    python = venv / "bin" / "python"
    marker = venv / ".mmgenre-ready"
    if not marker.is_file():
        log.info("creating %s with %s (one-off, about 600 MB)", venv, ", ".join(TF_REQUIREMENTS))
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *TF_REQUIREMENTS], check=True)
        marker.write_text("\n".join(TF_REQUIREMENTS) + "\n")
    return python


def run_tf(python: Path, *args: str) -> None:
    subprocess.run([str(python), str(Path(__file__).with_name("musicnn_tf.py")), *args], check=True)


def to_state_dict(tf_vars: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map TF variables (``scope/kernel`` ...) onto :class:`Musicnn`'s state_dict names and layouts."""
    out: dict[str, torch.Tensor] = {}
    for scope, module in CONVS.items():
        kernel = torch.from_numpy(tf_vars[f"{scope}/kernel"])  # (kh, kw, in, out)
        if module.startswith("midend"):
            # (7, channels, 1, out) -> Conv1d (out, channels, 7)
            out[f"{module}.weight"] = kernel[:, :, 0, :].permute(2, 1, 0)
        else:
            out[f"{module}.weight"] = kernel.permute(3, 2, 0, 1)  # -> (out, in, kh, kw)
        out[f"{module}.bias"] = torch.from_numpy(tf_vars[f"{scope}/bias"])
    for scope, module in BATCH_NORMS.items():
        out[f"{module}.weight"] = torch.from_numpy(tf_vars[f"{scope}/gamma"])
        out[f"{module}.bias"] = torch.from_numpy(tf_vars[f"{scope}/beta"])
        out[f"{module}.running_mean"] = torch.from_numpy(tf_vars[f"{scope}/moving_mean"])
        out[f"{module}.running_var"] = torch.from_numpy(tf_vars[f"{scope}/moving_variance"])
        out[f"{module}.num_batches_tracked"] = torch.tensor(0)
    for scope, module in DENSES.items():
        out[f"{module}.weight"] = torch.from_numpy(tf_vars[f"{scope}/kernel"]).T  # (in, out) -> (out, in)
        out[f"{module}.bias"] = torch.from_numpy(tf_vars[f"{scope}/bias"])
    return {k: (v if k.endswith("num_batches_tracked") else v.float()).contiguous() for k, v in out.items()}


def convert(*, wheel: Path, python: Path, out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp_dir)
            licence = zf.read("musicnn-0.1.0.dist-info/LICENSE.md").decode("utf-8").strip()
        npz = tmp_dir / "vars.npz"
        # The checkpoint's files are named ".index"/".data-...": the prefix is the folder + "/".
        run_tf(python, "dump", str(tmp_dir / "musicnn" / CHECKPOINT) + "/", str(npz))
        with np.load(npz) as data:
            tf_vars = {k: data[k] for k in data.files}
    model = Musicnn()
    state = to_state_dict(tf_vars)
    unused = sorted(set(tf_vars) - {f"{s}/{p}" for s in (*CONVS, *DENSES) for p in ("kernel", "bias")}
                    - {f"{s}/{p}" for s in BATCH_NORMS for p in ("gamma", "beta", "moving_mean", "moving_variance")})
    if unused:
        raise SystemExit(f"checkpoint variables with no place in the port: {unused}")
    model.load_state_dict(state, strict=True)  # every parameter filled, shapes checked
    source = {"package": "musicnn 0.1.0", "wheel": WHEEL, "sha256": WHEEL_SHA256, "checkpoint": CHECKPOINT,
              "authors": "Jordi Pons, Xavier Serra (Music Technology Group, Universitat Pompeu Fabra)",
              "url": "https://github.com/jordipons/musicnn"}
    save_weights(out, model, source=source, licence=licence)
    out.with_name("LICENSE.musicnn").write_text(
        "The file musicnn_msd.pt holds the MSD_musicnn weights of musicnn 0.1.0,\n"
        "converted to PyTorch by training/convert_musicnn.py. Their licence:\n\n" + licence + "\n")
    log.info("wrote %s (%d parameters)", out, sum(p.numel() for p in model.parameters()))
    return out


def make_reference(*, wheel: Path, python: Path, out: Path, files: list[Path]) -> None:
    """Run the original TF musicnn on ``files``; store its taggrams as the parity fixture."""
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        raw = Path(tmp) / "reference.npz"
        run_tf(python, "reference", tmp, str(raw), *[str(f) for f in files])
        with np.load(raw) as data:
            arrays = {k: data[k] for k in data.files}
    # Store paths relative to the data folder so the fixture works from any checkout.
    arrays["files"] = np.array([f.resolve().relative_to(_data_root(f)).as_posix() for f in files])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    log.info("wrote %s (%d files)", out, len(files))


def _data_root(path: Path) -> Path:
    for parent in path.resolve().parents:
        if parent.name == "data":
            return parent
    raise SystemExit(f"{path}: reference files must lie under a 'data' folder (../shared/data)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help=f"a downloaded {WHEEL} (default: pip download it)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="virtual environment for TensorFlow")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weights file to write")
    parser.add_argument("--reference", type=Path, metavar="NPZ",
                        help="instead of converting, run the TF model on FILES and write its outputs here")
    parser.add_argument("files", nargs="*", type=Path, help="audio files for --reference")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    wheel = fetch_wheel(args.wheel, args.venv.parent / "wheels")
    python = ensure_venv(args.venv)
    if args.reference:
        if not args.files:
            parser.error("--reference needs audio FILES")
        make_reference(wheel=wheel, python=python, out=args.reference, files=args.files)
    else:
        convert(wheel=wheel, python=python, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
