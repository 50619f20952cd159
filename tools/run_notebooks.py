"""Execute the course notebooks: each alone, in a fresh kernel, in one run mode.

    python tools/run_notebooks.py test [NAMES...]     fast mode; fails on any error output
    python tools/run_notebooks.py course [NAMES...]   full mode, outputs written back into the notebooks
    python tools/run_notebooks.py bench [NAMES...]    full mode; wall time, peak memory and key figures per
                                                  notebook, merged into bench/results.json
                                                  (--save-outputs: also write the outputs back, as `course`)

A name is a notebook's number or file name ("06", "06_pretraining.ipynb"); none means all.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
RESULTS_FILE = REPO_ROOT / "bench" / "results.json"
CELL_TIMEOUT_S = 900


class NotebookError(RuntimeError):
    """A notebook that raised, or left an error in its outputs."""


def all_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def select(names: list[str]) -> list[Path]:
    notebooks = all_notebooks()
    if not names:
        return notebooks
    chosen = [nb for nb in notebooks if any(nb.name == n or nb.name.startswith(f"{n}_") for n in names)]
    unknown = [n for n in names if not any(nb.name == n or nb.name.startswith(f"{n}_") for nb in notebooks)]
    if unknown:
        raise SystemExit(f"no notebook named {unknown}; there are {[nb.name for nb in notebooks]}")
    return chosen


def error_outputs(nb) -> list[str]:
    """Every error output in an executed notebook, as 'cell N: ename: evalue'."""
    found = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(f"cell {index}: {output.get('ename')}: {output.get('evalue')}")
            elif output.get("name") == "stderr" and "Traceback (most recent call last)" in output.get("text", ""):
                found.append(f"cell {index}: a traceback printed on stderr")
    return found


def execute(path: Path, mode: str, *, write_back: bool = False, extra_env: dict | None = None):
    """Run one notebook top to bottom in a fresh kernel with LLMLAB_MODE=mode; raise NotebookError on any error."""
    nb = nbformat.read(path, as_version=4)
    saved_env = dict(os.environ)
    os.environ.update({"LLMLAB_MODE": mode, "LLMLAB_HEADLESS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                       **(extra_env or {})})
    try:
        client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except Exception as error:  # nbclient's CellExecutionError carries the cell's traceback
            raise NotebookError(f"{path.name} failed in {mode} mode:\n{error}") from None
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    errors = error_outputs(nb)
    if errors:
        raise NotebookError(f"{path.name} has error outputs in {mode} mode: " + "; ".join(errors))
    if write_back:
        nbformat.write(strip_volatile_metadata(nb), path)
    return nb


VOLATILE_CELL_METADATA = ("execution", "ExecuteTime")  # nbclient's and jupyterlab-execute-time's timestamps


def strip_volatile_metadata(nb):
    """Drop what changes on every run without changing what the notebook shows, so diffs show real changes."""
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
    return nb


def _cached(cache: Path) -> set[str]:
    folder = cache / "full"
    return {p.name for p in folder.iterdir() if (p / "manifest.json").exists()} if folder.exists() else set()


def bench_one(path: Path, cache: Path, save_outputs: bool = False) -> dict:
    """Full-mode run of one notebook in a child process: its wall time, its kernel's peak memory, its figures.

    The cache is the bench run's own, empty at its start and shared by its notebooks in order, as for a learner
    going through the course: the first notebook that needs the tokenizer or the base model builds it (its time
    counts there, and `built` names it), later ones load it.
    """
    before = _cached(cache)
    with tempfile.TemporaryDirectory() as scratch:
        figures_file = Path(scratch) / "figures.json"
        start = time.perf_counter()
        child = subprocess.run(
            [sys.executable, __file__, "_measure", str(path), str(figures_file), str(int(save_outputs)), str(cache)],
            capture_output=True, text=True,
        )
        wall = time.perf_counter() - start
        if child.returncode != 0:
            raise NotebookError(child.stdout[-4000:] + child.stderr[-4000:])
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        figures = json.loads(figures_file.read_text()) if figures_file.exists() else {}
    return {"wall_s": round(wall, 1), "peak_rss_mib": measured["peak_rss_mib"],
            "built": sorted(_cached(cache) - before), "figures": figures}


def _measure(path: str, figures_file: str, save_outputs: str, cache: str) -> None:
    execute(Path(path), "full", write_back=save_outputs == "1",
            extra_env={"LLMLAB_RESULTS": figures_file, "LLMLAB_CACHE": cache})
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the kernel was our child
    print(json.dumps({"peak_rss_mib": round(peak_kib / 1024, 1)}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        _measure(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["test", "course", "bench"])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--save-outputs", action="store_true", help="bench: write the outputs back too")
    parser.add_argument("--warm-cache", action="store_true",
                        help="bench: use the artifact cache as it is (e.g. after make artifacts), not an empty one")
    args = parser.parse_intermixed_args()  # `bench --save-outputs 07` as make passes it
    failures = []
    if args.warm_cache:
        sys.path.insert(0, str(NOTEBOOKS_DIR))
        from llmlab.paths import CACHE_DIR as bench_cache  # the artifacts already built, as in a prepared class
    else:
        bench_cache = Path(tempfile.mkdtemp(prefix="llmlab-bench-cache-"))  # empty, as in a fresh clone
    for path in select(args.names):
        start = time.perf_counter()
        try:
            if args.command == "bench":
                row = bench_one(path, bench_cache, args.save_outputs)
                results = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
                results.setdefault("machine", {})
                results["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                      "python": platform.python_version()}
                row["cache"] = "warm (artifacts built beforehand)" if args.warm_cache else "empty at the start of the run"
                results.setdefault("notebooks", {})[path.stem] = row
                RESULTS_FILE.parent.mkdir(exist_ok=True)
                RESULTS_FILE.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
                print(f"{path.name}: {row['wall_s']} s, peak {row['peak_rss_mib']} MiB, {row['figures']}")
            else:
                execute(path, "fast" if args.command == "test" else "full", write_back=args.command == "course")
                print(f"{path.name}: ok in {time.perf_counter() - start:.0f} s")
        except NotebookError as error:
            print(error)
            failures.append(path.name)
    if failures:
        raise SystemExit(f"failed: {failures}")


if __name__ == "__main__":
    main()
