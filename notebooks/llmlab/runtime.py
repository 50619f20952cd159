"""The run mode, the device and the seed: chosen here, and nowhere else.

Two run modes come from one environment variable, LLMLAB_MODE:
  full  the real course (the default)
  fast  tiny sizes so every cell still runs in seconds; used by the tests and CI
Sizes that differ between modes are written next to the code that uses them, with `by_mode`.
"""

import os
import platform
import random
import sys
from importlib import metadata

import numpy as np
import torch

MODES = ("full", "fast")
MODE = os.environ.get("LLMLAB_MODE", "full").strip().lower()
if MODE not in MODES:
    raise ValueError(f"LLMLAB_MODE must be one of {MODES}, not {MODE!r}")


def by_mode(*, full, fast):
    """The value for the current run mode: `by_mode(full=5000, fast=50)`."""
    return full if MODE == "full" else fast


def device() -> torch.device:
    """CUDA, then Apple's MPS, then the CPU. LLMLAB_DEVICE=cpu forces one (a CPU run is the reference)."""
    forced = os.environ.get("LLMLAB_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX or AVX-512 BF16).

    Where it does, bfloat16 matrix products run faster than float32 ones; elsewhere they are emulated and slower,
    so the trainer keeps float32 there.
    """
    try:  # torch's own CPU feature probes (private: a torch without them counts as no)
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False


def seed_everything(seed: int = 1337) -> None:
    """Seed Python, NumPy and torch so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


REPORTED_PACKAGES = ("torch", "transformers", "tokenizers", "ipywidgets", "llama_cpp_python")


def environment_report() -> str:
    """One line on the Python, the libraries, the device and the run mode."""
    versions = ", ".join(f"{name} {_version(name)}" for name in REPORTED_PACKAGES)
    return (
        f"Python {platform.python_version()} ({sys.platform}) | {versions} | "
        f"device {device()} ({torch.get_num_threads()} threads) | mode {MODE}"
    )
