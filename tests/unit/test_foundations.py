"""Notebook 00's helpers and the course plumbing: known values, references, round-trips."""

import json
import re

import pytest
import torch
import torch.nn.functional as F

from llmlab import bigram, colab, paths, results, sizing, tasks


def test_memory_of_a_70b_model_at_fp16_is_140_gb():
    assert sizing.memory_gb(70e9, "fp16 / bf16") == 140.0
    assert sizing.memory_gb(7e9, "int4") == 3.5
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        sizing.memory_gb(7e9, "fp8")


def test_training_compute_of_llama2_70b_fits_its_gpu_budget():
    flops = sizing.training_flops(70e9, 2e12)
    assert flops == pytest.approx(8.4e23)
    per_gpu = flops / (6000 * 12 * 86_400)
    assert 100e12 < per_gpu < 312e12  # a plausible share of an A100's 312 TFLOP/s bf16 peak


def test_memory_exercise_checker_passes_right_and_fails_wrong(capsys):
    assert sizing.check_memory_exercise(lambda n, bits: n * bits / 8 / 1e9)
    assert not sizing.check_memory_exercise(lambda n, bits: n * bits / 1e9)

    def unfinished(n, bits):
        raise NotImplementedError

    assert not sizing.check_memory_exercise(unfinished)
    assert "not done yet" in capsys.readouterr().out


def test_bigram_counts_and_probabilities_on_a_hand_checked_text():
    model = bigram.CharBigram("abab", smoothing=0.0)
    a, b = model.index["a"], model.index["b"]
    assert model.counts.tolist() == [[0, 2], [1, 0]]
    assert model.probs[a, b] == 1.0 and model.probs[b, a] == 1.0
    assert model.nll("abab") == pytest.approx(0.0)


def test_bigram_loss_equals_torch_cross_entropy():
    text = "the cat sat on the mat; the dog sat on the log."
    model = bigram.CharBigram(text)
    ids = model.encode(text)
    reference = F.cross_entropy(model.probs.log()[ids[:-1]], ids[1:]).item()
    assert model.nll(text) == pytest.approx(reference, rel=1e-6)


def test_bigram_sampling_is_seeded_and_rejects_unknown_characters():
    model = bigram.CharBigram("hello world")
    assert model.complete("h", 30, seed=3) == model.complete("h", 30, seed=3)
    with pytest.raises(ValueError, match=r"characters not in the vocabulary: 'z'"):
        model.encode("z")


@pytest.mark.parametrize(
    "reply, correct",
    [("3", True), ("There are three r's.", True), ("2", False), ("Two r's, not 3... no, 2", False),
     ("no idea", False), ("strawberry has 3", True)],
)
def test_strawberry_grading(reply, correct):
    assert tasks.STRAWBERRY.answer == 3
    assert tasks.STRAWBERRY.grade(reply) is correct
    assert tasks.STRAWBERRY.reward(reply) == float(correct)


def test_results_are_recorded_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMLAB_RESULTS", raising=False)
    assert results.record("x", 1.5) == 1.5
    target = tmp_path / "figures.json"
    monkeypatch.setenv("LLMLAB_RESULTS", str(target))
    results.record("loss", 1.88, "nats")
    results.record("steps", 2000)
    assert json.loads(target.read_text()) == {"loss": {"value": 1.88, "unit": "nats"}, "steps": 2000}


def test_colab_pins_come_from_environment_yml():
    assert colab.pinned("gguf").startswith("gguf==")
    assert "torch" not in colab.COLAB_LACKS.values() and "ipywidgets" not in colab.COLAB_LACKS.values()


def test_readme_has_a_colab_badge_per_notebook_pointing_at_the_repository():
    readme = (paths.REPO_ROOT / "README.md").read_text()
    repo = colab.REPO_URL.removeprefix("https://github.com/")
    for notebook in sorted(paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        badge = f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{notebook.name}"
        assert badge in readme, f"README lacks the Colab badge of {notebook.name}"


def test_readme_quick_start_is_make_lab_and_make_test():
    readme = (paths.REPO_ROOT / "README.md").read_text()
    quick_start = re.search(r"## Quick start\s+```bash\n(.*?)```", readme, re.S).group(1)
    assert [line.split("#")[0].strip() for line in quick_start.strip().splitlines()] == ["make lab", "make test"]


def test_ci_runs_the_readme_test_command():
    assert "make test" in (paths.REPO_ROOT / ".ci" / "run").read_text()


def test_data_readme_credits_every_corpus():
    credits = (paths.DATA_DIR / "README.md").read_text()
    for entry in paths.DATA_DIR.iterdir():
        if entry.name != "README.md":
            assert f"`{entry.name}" in credits, f"data/README.md does not credit {entry.name}"


def test_show_source_shows_the_real_definition(monkeypatch):
    from llmlab import show_source, source

    shown = []
    monkeypatch.setattr(source, "display", shown.append)
    show_source(sizing.memory_gb, tasks.LetterCount)
    assert shown[0].data.startswith("def memory_gb(") and "class LetterCount" in shown[0].data
