"""Where things live: the repository, its data, its assets and the artifact cache."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
DATA_DIR = REPO_ROOT / "data"
ASSETS_DIR = REPO_ROOT / "assets"
# Trained things (tokenizers, models) are cached here; git ignores it. LLMLAB_CACHE moves it.
CACHE_DIR = Path(os.environ.get("LLMLAB_CACHE", REPO_ROOT / ".cache" / "llmlab")).expanduser()


def data_file(name: str) -> Path:
    """The path of a course data file, with a clear message when it is missing."""
    path = DATA_DIR / name
    if not path.exists():
        available = sorted(p.name for p in DATA_DIR.iterdir()) if DATA_DIR.exists() else []
        raise FileNotFoundError(f"data/{name} is not in this checkout; data/ holds {available}")
    return path
