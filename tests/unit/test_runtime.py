import subprocess
import sys

import torch

from llmlab import by_mode, device, environment_report, runtime, seed_everything


def test_fast_mode_under_tests():
    assert runtime.MODE == "fast"
    assert by_mode(full=1000, fast=10) == 10


def test_unknown_mode_is_a_clear_error(tmp_path):
    code = "import llmlab"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"LLMLAB_MODE": "turbo", "PYTHONPATH": str(runtime.__file__).rsplit("/llmlab", 1)[0]})
    assert result.returncode != 0
    assert "LLMLAB_MODE must be one of ('full', 'fast'), not 'turbo'" in result.stderr


def test_device_can_be_forced(monkeypatch):
    monkeypatch.setenv("LLMLAB_DEVICE", "cpu")
    assert device() == torch.device("cpu")


def test_seeding_repeats_draws():
    seed_everything(7)
    a = torch.randn(5)
    seed_everything(7)
    assert torch.equal(a, torch.randn(5))


def test_environment_report_names_mode_and_device():
    report = environment_report()
    assert "mode fast" in report and "device" in report and "torch 2." in report
