"""Pretraining data: packing with <|endoftext|>, rows and shifted targets, the split, the mixture, batches."""

import pytest
import torch

from llmlab import corpora
from llmlab.data import (IGNORE_INDEX, batches, cut_rows, inputs_and_targets, mixture_documents, pack_documents,
                         sample_mixture, shakespeare_documents, split_documents, tinystories_documents)

EOT = 0
DOCS = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [15]]


def test_pack_documents_puts_eot_before_every_document_and_keeps_their_tokens():
    stream = pack_documents(DOCS, EOT).tolist()
    assert stream == [0, 5, 6, 7, 0, 8, 9, 0, 10, 11, 12, 13, 14, 0, 15]
    # splitting at EOT gives the documents back, in order
    pieces, current = [], None
    for token in stream:
        if token == EOT:
            current = []
            pieces.append(current)
        else:
            current.append(token)
    assert pieces == DOCS


@pytest.mark.parametrize("block_size", [1, 3, 4, 14, 20])
def test_rows_have_block_size_plus_one_tokens_and_lose_no_token(block_size):
    stream = pack_documents(DOCS, EOT)
    rows = cut_rows(stream, block_size)
    assert rows.shape[1] == block_size + 1
    inputs, targets = inputs_and_targets(rows, pad_id=EOT)
    assert inputs.shape == targets.shape == (rows.shape[0], block_size)
    # targets are the inputs shifted by one: within a row, input t+1 is target t
    real = targets != IGNORE_INDEX
    assert torch.equal(inputs[:, 1:][real[:, :-1]], targets[:, :-1][real[:, :-1]])
    # every token after the first is a target exactly once, in order; every (input, target) pair of the stream
    assert targets[real].tolist() == stream[1:].tolist()
    assert inputs[real].tolist() == stream[:-1].tolist()
    # padding only at the very end, and padded inputs are a real id
    assert (~real).sum() < block_size
    assert (inputs >= 0).all()


def test_cut_rows_of_an_exact_multiple_has_no_padding():
    stream = torch.arange(13)  # 12 pairs = 3 rows of 4
    rows = cut_rows(stream, 4)
    assert rows.tolist() == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8], [8, 9, 10, 11, 12]]


def test_bad_inputs_get_clear_messages():
    with pytest.raises(ValueError, match="block_size"):
        cut_rows(torch.arange(10), 0)
    with pytest.raises(ValueError, match="two tokens"):
        cut_rows(torch.arange(1), 4)
    with pytest.raises(ValueError, match="val_fraction"):
        split_documents(DOCS, 1.5)
    with pytest.raises(KeyError, match="unknown source"):
        mixture_documents(["Wikipedia"])


def test_split_holds_out_whole_documents_deterministically():
    documents = [f"doc {i}" for i in range(100)]
    train, val = split_documents(documents, 0.1, seed=3)
    assert len(val) == 10 and len(train) == 90
    assert set(train) | set(val) == set(documents) and not set(train) & set(val)
    assert split_documents(documents, 0.1, seed=3) == (train, val)
    assert split_documents(documents, 0.1, seed=4) != (train, val)


def test_sample_mixture_follows_the_proportions_and_counts_epochs():
    sources = {"small": [[1] * 10] * 10, "big": [[2] * 10] * 1000}  # 100 and 10,000 tokens
    drawn, table = sample_mixture(sources, {"small": 0.5, "big": 0.5}, total_tokens=1000, seed=0)
    rows = {row.source: row for row in table}
    assert rows["small"].sampled_tokens == 500 and rows["small"].epochs == pytest.approx(5.0)
    assert rows["big"].sampled_tokens == 500 and rows["big"].epochs == pytest.approx(0.05)
    tokens = [t for d in drawn for t in d]
    assert tokens.count(1) == 500 and tokens.count(2) == 500
    with pytest.raises(ValueError, match="add up to 1"):
        sample_mixture(sources, {"small": 0.5, "big": 0.6}, total_tokens=10)


def test_batches_give_shifted_rows_and_reshuffle_every_pass():
    stream = torch.arange(1, 202)
    generator = torch.Generator().manual_seed(0)
    it = batches(stream, block_size=10, batch_size=4, pad_id=0, generator=generator)
    seen = [next(it) for _ in range(10)]  # 20 rows per pass: 5 batches a pass, so two passes
    for x, y in seen:
        assert x.shape == y.shape == (4, 10)
        real = y != IGNORE_INDEX
        assert torch.equal((x + 1)[real], y[real])  # this stream counts up: each target is its input + 1
    first_pass = sorted(int(x[i, 0]) for x, _ in seen[:5] for i in range(4))
    assert first_pass == list(range(1, 201, 10))  # the first pass covers every row once
    second_pass = {int(x[i, 0]) for x, _ in seen[5:] for i in range(4)}
    assert second_pass != set(first_pass)  # cut at a new offset


def test_real_corpora_become_documents():
    stories = tinystories_documents()
    assert 500 < len(stories) < 2000
    assert sum(s.startswith("Once upon a time") for s in stories) > 0.6 * len(stories)
    passages = shakespeare_documents(max_chars=1500)
    assert "\n\n".join(passages) == corpora.shakespeare().strip()  # cut between speeches, nothing lost
    assert max(len(p) for p in passages) < 4000


def test_sample_mixture_cuts_the_last_document_to_fit():
    sources = {"long": [[1] * 1000] * 3, "short": [[2] * 5] * 100}
    drawn, table = sample_mixture(sources, {"long": 0.25, "short": 0.75}, total_tokens=400, seed=1)
    assert [row.sampled_tokens for row in table] == [100, 300]
    assert sum(len(d) for d in drawn) == 400


def test_mojibake_is_repaired_to_the_characters_it_hid():
    from llmlab.corpora import repair_mojibake

    assert repair_mojibake("â€œHi,â€ she said. Itâ€™s fine â€“ ok") == ("“Hi,” she said. It’s fine – ok", 4)
    assert repair_mojibake("plain text") == ("plain text", 0)
    from llmlab import corpora

    assert not any("â€" in story for story in corpora.tinystories())


def test_train_and_validation_stories_do_not_overlap():
    from llmlab import corpora

    train, val = corpora.tinystories_train(), corpora.tinystories()
    assert len(train) > 2000 and "<|endoftext|>" not in "".join(train)
    train_paragraphs = {p.strip() for story in train for p in story.split("\n") if len(p) > 200}
    assert not [p for p in val if len(p) > 200 and p in train_paragraphs]


def test_nats_per_character_is_total_nats_over_characters():
    from llmlab.pretraining import PretrainingData

    targets = torch.tensor([[5, 6, IGNORE_INDEX], [7, IGNORE_INDEX, IGNORE_INDEX]])
    data = PretrainingData(torch.tensor([1, 2]), {"S": (targets, targets)}, [], 0, {"S": 12})
    assert data.nats_per_character("S", 2.0) == pytest.approx(2.0 * 3 / 12)
