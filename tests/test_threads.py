"""CPU threads: a number is taken as given; "auto" leaves the CPUs other processes use."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from mmgenre_core.device import configure_cpu_threads, cpu_threads, free_cpus
from mmgenre_core.errors import ConfigError


@pytest.mark.parametrize("bad", [0, -1, "many", "1.5"])
def test_a_bad_setting_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="threads must be a positive number or 'auto'"):
        cpu_threads(bad)


def test_a_number_is_used_as_given():
    before = torch.get_num_threads()
    try:
        assert configure_cpu_threads("3") == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="CPU load is read from /proc/stat (Linux)")
def test_auto_leaves_a_core_to_a_busy_process():
    cores = os.cpu_count() or 1
    assert 1 <= cpu_threads("auto") <= cores
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        free = free_cpus(sample_seconds=0.3)
        assert free is not None and free <= cores - 0.5
        if cores >= 2:
            assert cpu_threads("auto") <= cores - 1
    finally:
        busy.kill()
        busy.wait()
