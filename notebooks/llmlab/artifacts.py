"""Named artifacts: every trained thing of the course, returned by one call.

`cached(name, build=..., load=..., config=...)` returns the artifact from the cache when it is there and
valid; otherwise it builds it (deterministically, with its own progress bar), caches it and returns it.

An entry is a folder `CACHE_DIR/<mode>/<name>/` holding the files `build` wrote and a `manifest.json`
with the config they were built from and the SHA-256 of every file. It is written to a temporary folder
first and renamed into place, so an interrupted build never leaves a half-written entry. An entry whose
config differs (stale) or whose files do not match their hashes or fail to load (corrupt) is rebuilt, with
a one-line message saying why. A lock file makes a second process (another notebook open at the same time)
wait for a build in progress and then load its result, instead of building the same thing twice.

A name is lowercase letters, digits, "_" and "-" (`base`, `sft-persona`), so that no name can point outside its own
folder: "" or ".." would otherwise make a rebuild delete other entries.
"""

import contextlib
import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

try:
    import fcntl  # POSIX; on Windows builds simply are not serialised
except ImportError:
    fcntl = None

from llmlab import paths, runtime
from llmlab.checks import CourseError

MANIFEST = "manifest.json"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")


def check_name(name) -> str:
    """name, if it is a valid artifact name (one folder inside the cache); a CourseError otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or len(name) > 100:
        raise CourseError(f"artifact name {name!r:.60} is not allowed: use lowercase letters, digits, '_' and '-' "
                          "(up to 100 characters), starting with a letter or digit, e.g. 'base' or 'sft-persona'")
    return name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_dir(name: str) -> Path:
    """The cache folder of an artifact in the current run mode."""
    return paths.CACHE_DIR / runtime.MODE / check_name(name)


def _problem(folder: Path, config: dict) -> str | None:
    """Why a cache entry cannot be used, or None when it can."""
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        return "missing"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "corrupt (unreadable manifest)"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
        return "corrupt (the manifest is not a dict with a 'files' table)"
    if manifest.get("config") != config:
        return "stale (built with other settings)"
    for filename, digest in files.items():
        file = folder / filename
        if not file.exists():
            return f"corrupt ({filename} is missing)"
        if _sha256(file) != digest:
            return f"corrupt ({filename} does not match its checksum)"
    return None


def _build_into_cache(name: str, folder: Path, build: Callable[[Path], None], config: dict) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        build(scratch)
        files = {
            str(p.relative_to(scratch)): _sha256(p) for p in sorted(scratch.rglob("*")) if p.is_file()
        }
        manifest = {"name": name, "mode": runtime.MODE, "config": config, "files": files}
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        scratch.rename(folder)  # atomic on one file system: readers see all of it or none
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(folder: Path):
    """Hold an exclusive lock on `folder`'s lock file while checking and building it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)


def cached(
    name: str,
    *,
    build: Callable[[Path], None],
    load: Callable[[Path], Any],
    config: dict,
    takes: str = "",
) -> Any:
    """Return artifact `name`: loaded from the cache, or built into it first.

    build(folder) writes the artifact's files into an empty folder; load(folder) reads them back.
    config is every setting the build depends on (JSON-serializable); when it changes, the entry is stale.
    takes: how long a build takes ("about 6 minutes on 2 CPU cores"), said in the one line printed before it starts.
    """
    folder = entry_dir(name)  # checks the name first
    if not isinstance(config, dict):
        raise CourseError(f"config must be a dict of the settings the build depends on, not {config!r:.60}")
    try:  # normalise tuples and keys the way the manifest stores them
        config = json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise CourseError(f"config must hold only JSON values (numbers, text, lists, dicts; no NaN): {error}") from None
    with _exclusive(folder):
        problem = _problem(folder, config)
        if problem is None:
            try:
                return load(folder)
            except Exception as error:  # a file that hashes right but will not load is still corrupt
                problem = f"corrupt (loading failed: {type(error).__name__}: {error})"
        takes_text = f": {takes}" if takes else ""
        if problem != "missing":
            print(f"artifact '{name}' is {problem}; rebuilding it{takes_text}.")
        else:
            print(f"artifact '{name}' is not cached yet; building it (once){takes_text}.")
        _build_into_cache(name, folder, build, config)
        return load(folder)


def cached_artifacts() -> dict[str, list[str]]:
    """What the cache holds, per run mode."""
    root = paths.CACHE_DIR
    if not root.exists():
        return {}
    return {
        mode.name: sorted(p.name for p in mode.iterdir() if (p / MANIFEST).exists() and not p.name.startswith("."))
        for mode in sorted(root.iterdir())
        if mode.is_dir()
    }
