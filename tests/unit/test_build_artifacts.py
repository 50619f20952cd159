"""`make artifacts` builds every model the notebooks load, parents before children."""

import re
from pathlib import Path

import build_artifacts
from llmlab import pretraining, rlhf, sft, tokenizer

LLMLAB = Path(__file__).resolve().parents[2] / "notebooks" / "llmlab"
NOTEBOOK_CONFIGURED = {"word2vec"}  # notebook 02 trains it with the settings its cells choose


def artifact_names_in_llmlab() -> set[str]:
    names = set()
    for module in LLMLAB.glob("*.py"):
        names |= set(re.findall(r'artifacts\.cached\("([a-z0-9_-]+)"', module.read_text()))
    return names | {tokenizer.ARTIFACT_NAME, pretraining.ARTIFACT_NAME, *sft.VARIANTS,
                    *(rlhf.artifact_name(kl) for kl in rlhf.KL_SWEEP)}


def test_every_artifact_of_the_course_has_a_builder_once():
    names = [name for name, _ in build_artifacts.builders()]
    assert len(names) == len(set(names))
    assert set(names) == artifact_names_in_llmlab() - NOTEBOOK_CONFIGURED


def test_parents_are_built_before_their_children():
    order = [name for name, _ in build_artifacts.builders()]
    for parent, child in [("tokenizer", "base"), ("base", "sft"), ("sft", "persona"), ("sft", "merged"),
                          ("preference-pairs", "reward"), ("reward", "rlhf"), ("reward", "dpo"),
                          ("sft", "reasoner"), ("sft", "sft-tools")]:
        assert order.index(parent) < order.index(child), (parent, child)
