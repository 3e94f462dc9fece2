"""The TensorFlow half of the musicnn conversion; runs only inside the converter's TF venv.

    python musicnn_tf.py dump CKPT_PREFIX OUT.npz          # every variable of the checkpoint
    python musicnn_tf.py reference MUSICNN_DIR OUT.npz F... # musicnn's own taggrams for files

``training/convert_musicnn.py`` creates the virtual environment (TensorFlow 2.15 CPU,
numpy < 2, librosa, the musicnn wheel) and calls this script in it; nothing here is
imported by mmgenre, so TensorFlow is never needed at run time.
"""

from __future__ import annotations

import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def dump(prefix: str, out: str) -> None:
    """Write every non-optimizer variable of a TF1 checkpoint to ``out`` (npz, name -> array)."""
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    arrays = {
        name: reader.get_tensor(name)
        for name in sorted(reader.get_variable_to_shape_map())
        if "Adam" not in name and not name.startswith("beta")  # Adam slots and beta1/2 powers
    }
    np.savez(out, **arrays)
    print(f"dumped {len(arrays)} variables to {out}")


def reference(out: str, files: list[str]) -> None:
    """Run musicnn's own ``extractor`` (MSD_musicnn, 3-s patches) on each file.

    Writes ``out`` (npz) with ``taggram_<i>`` [shape=(patches, 50)] sigmoid tag
    probabilities per file, plus the versions of the libraries that produced them.
    (musicnn 0.1.0's ``features["penultimate"]`` repeats the first batch's values for
    every later patch, a bug in its extractor, so intermediate features are not kept.)
    """
    import librosa
    import tensorflow as tf
    from musicnn.extractor import extractor

    arrays: dict[str, np.ndarray] = {}
    for i, path in enumerate(files):
        taggram, _labels = extractor(path, model="MSD_musicnn", input_length=3, extract_features=False)
        arrays[f"taggram_{i}"] = np.asarray(taggram, dtype=np.float32)
        print(f"{path}: {taggram.shape[0]} patches")
    arrays["versions"] = np.array([f"tensorflow {tf.__version__}", f"librosa {librosa.__version__}"])
    np.savez_compressed(out, **arrays)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "dump":
        dump(argv[1], argv[2])
    elif len(argv) >= 4 and argv[0] == "reference":
        sys.path.insert(0, argv[1])  # the unpacked wheel, so `import musicnn` finds it
        reference(argv[2], argv[3:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
