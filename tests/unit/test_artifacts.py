import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmlab import artifacts, runtime

CONFIG = {"d": 8, "seed": 3}
builds = []


def build_weights(folder, config=CONFIG):
    builds.append(folder)
    runtime.seed_everything(config["seed"])
    save_file({"w": torch.randn(config["d"], config["d"])}, folder / "weights.safetensors")


def load_weights(folder):
    return load_file(folder / "weights.safetensors")["w"]


def get(config=CONFIG):
    return artifacts.cached("toy", build=lambda folder: build_weights(folder, config), load=load_weights,
                            config=config)


def test_cache_hit_returns_the_built_weights_without_rebuilding(cache_dir):
    builds.clear()
    built = get()
    again = get()
    assert len(builds) == 1
    assert torch.equal(built, again)
    manifest = json.loads((artifacts.entry_dir("toy") / "manifest.json").read_text())
    assert manifest["config"] == CONFIG and "weights.safetensors" in manifest["files"]


def test_build_is_deterministic(cache_dir):
    first = get()
    for path in cache_dir.rglob("*"):
        if path.is_file():
            path.unlink()
    assert torch.equal(first, get())


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corrupt_entry_is_rebuilt_with_a_message(cache_dir, capsys, damage):
    good = get().clone()  # safetensors maps the file: damaging it in place would change `good` too
    folder = artifacts.entry_dir("toy")
    weights = folder / "weights.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:20])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "delete":
        weights.unlink()
    else:
        (folder / "manifest.json").write_text("{not json")
    capsys.readouterr()
    builds.clear()
    rebuilt = get()
    message = capsys.readouterr().out
    assert "artifact 'toy' is corrupt" in message and "rebuilding" in message
    assert len(builds) == 1 and torch.equal(good, rebuilt)


def test_a_build_says_in_one_line_what_it_builds_and_how_long_it_takes(cache_dir, capsys):
    takes = "about 2 minutes on 2 CPU cores"
    load = lambda: artifacts.cached("toy", build=build_weights, load=load_weights, config=CONFIG, takes=takes)
    load()
    assert capsys.readouterr().out == f"artifact 'toy' is not cached yet; building it (once): {takes}.\n"
    load()
    assert capsys.readouterr().out == ""  # a cache hit says nothing


def test_stale_entry_is_rebuilt(cache_dir, capsys):
    get()
    capsys.readouterr()
    bigger = get({"d": 4, "seed": 3})
    assert "stale" in capsys.readouterr().out and bigger.shape == (4, 4)


def test_a_file_that_will_not_load_is_corrupt_too(cache_dir, capsys):
    calls = []

    def flaky_load(folder):
        calls.append(folder)
        if len(calls) == 2:
            raise ValueError("bad header")
        return load_weights(folder)

    artifacts.cached("toy", build=build_weights, load=flaky_load, config=CONFIG)
    capsys.readouterr()
    artifacts.cached("toy", build=build_weights, load=flaky_load, config=CONFIG)
    assert "loading failed: ValueError: bad header" in capsys.readouterr().out


def test_failed_build_leaves_no_entry(cache_dir):
    def broken(folder):
        (folder / "half.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        artifacts.cached("broken", build=broken, load=load_weights, config=CONFIG)
    assert not artifacts.entry_dir("broken").exists()
    assert [p.name for p in artifacts.entry_dir("broken").parent.iterdir()] == [".broken.lock"]


def test_a_second_process_waits_for_the_build_and_reuses_it(cache_dir, tmp_path):
    """Two processes asking for one artifact at once: it is built once, and both get the same weights."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys, time, torch
        sys.path.insert(0, {str(artifacts.paths.NOTEBOOKS_DIR)!r})
        from llmlab import artifacts, paths
        paths.CACHE_DIR = __import__("pathlib").Path({str(cache_dir)!r})
        def build(folder):
            time.sleep(1.5)
            (folder / "w.txt").write_text(str(torch.initial_seed()) + " " + sys.argv[1])
        print(artifacts.cached("shared", build=build, load=lambda f: (f / "w.txt").read_text(), config={{}}))
    """)
    runs = [subprocess.Popen([sys.executable, "-c", script, tag], stdout=subprocess.PIPE, text=True)
            for tag in ("first", "second")]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert sum("building it" in out for out in outputs) == 1
    assert outputs[0].strip().splitlines()[-1] == outputs[1].strip().splitlines()[-1]
