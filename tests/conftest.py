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


@pytest.fixture(scope="session")
def refused_or_ok():
    """call(fn): fn's result, or None when it refused with a CourseError, whose message must not be empty.

    A fixture, not an importable helper: `import conftest` would find tests/browser/conftest.py first when the
    whole suite is collected. Session-scoped, so hypothesis's @given tests may take it."""
    from llmlab.checks import CourseError

    def call(fn):
        try:
            return fn()
        except CourseError as error:
            assert str(error).strip()
            return None

    return call
