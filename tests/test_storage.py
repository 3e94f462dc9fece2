"""The one atomic writer (mmgenre_core.storage) every saved file goes through."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest

from mmgenre_core.storage import atomic_write, atomic_write_json


def test_file_appears_whole_with_the_usual_permissions(tmp_path):
    target = tmp_path / "sub" / "out.jsonl"
    with atomic_write(target, text=True) as fh:
        fh.write("é\n")
        assert not target.exists()  # nothing at the target until the block ends
    assert target.read_text(encoding="utf-8") == "é\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, failure):
    target = tmp_path / "state.pt"
    target.write_bytes(b"old")
    with pytest.raises(type(failure)):
        with atomic_write(target) as fh:
            fh.write(b"half of the new")
            raise failure
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_json_is_strict(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"acc": 0.5})
    assert json.loads(target.read_text()) == {"acc": 0.5}
    with pytest.raises(ValueError):
        atomic_write_json(target, {"acc": math.nan})
    assert json.loads(target.read_text()) == {"acc": 0.5}
