import os
import sys
from pathlib import Path

# Unit tests use the fast sizes; llmlab reads the mode once, when first imported.
os.environ.setdefault("LLMLAB_MODE", "fast")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "notebooks"), str(ROOT / "tools")]

import pytest  # noqa: E402


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty artifact cache for one test."""
    from llmlab import paths

    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tokenizer():
    """The course tokenizer (fast mode). A test module that needs another tokenizer defines its own fixture."""
    from llmlab.tokenizer import course_tokenizer

    return course_tokenizer()
