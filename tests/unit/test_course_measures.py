"""The measuring helpers of notebooks 00-03: standard errors, the fit exercise, subword vectors and probes,
the fair recurrence timing and the free-running copy accuracy."""

import math

import numpy as np
import torch

from llmlab import bow, sizing
from llmlab import embeddings as E
from llmlab import sequences as seq


def test_accuracy_and_standard_error_on_a_known_case():
    accuracy, error = bow.accuracy_and_standard_error([1, 0, 1, 1])
    assert accuracy == 0.75 and math.isclose(error, math.sqrt(0.75 * 0.25 / 4))


def test_paired_difference_cancels_shared_answers():
    a = np.array([1, 1, 1, 0, 0, 1])
    b = np.array([1, 1, 0, 0, 0, 1])
    difference, error = bow.paired_difference(a, b)
    assert math.isclose(difference, 1 / 6)
    assert math.isclose(error, np.std(a - b, ddof=1) / math.sqrt(6))
    assert bow.paired_difference(a, a) == (0.0, 0.0)


def test_fit_exercise_checker(capsys):
    assert sizing.check_fit_exercise(lambda memory, bits, reserve: (1 - reserve) * memory * 1e9 * 8 / bits)
    assert not sizing.check_fit_exercise(lambda memory, bits, reserve: memory * 1e9 * 8 / bits)  # forgot the reserve

    def unfinished(memory, bits, reserve):
        raise NotImplementedError

    assert not sizing.check_fit_exercise(unfinished)
    assert "not done yet" in capsys.readouterr().out


def test_subword_ngrams_mark_the_ends_and_keep_letters():
    assert E.subword_ngrams("ab", (1, 3)) == ["a", "b", "<a", "ab", "b>", "<ab", "ab>"]


def test_spelling_only_vectors_let_a_probe_read_a_letter():
    words = [a + b + c + d for a in "rstu" for b in "aeio" for c in "rnlm" for d in "aeio"]
    features = E.subword_vectors(words, 100)
    assert features.shape == (len(words), 100)
    assert np.allclose(np.linalg.norm(features, axis=1), 1)
    assert np.array_equal(features, E.subword_vectors(words, 100))  # deterministic
    has_r = np.array(["r" in w for w in words])  # 44 % of them: the majority guess scores 56 %
    assert E.probe_accuracy(features, has_r, folds=3) > 0.75


def test_batched_input_projection_computes_the_same_rnn():
    torch.manual_seed(0)
    rnn = seq.RNN(8, 16)
    x = torch.randn(30, 8)
    assert torch.allclose(seq.rnn_with_batched_input_projection(rnn.cell, x), rnn(x[None])[0][0], atol=1e-6)


def test_recurrence_timing_reports_every_way():
    times = seq.time_recurrence_and_attention([8, 16], width=16, repeats=1)
    assert set(times) == {"RNN, Python loop", "RNN, Python loop, input projection batched", "nn.RNN (loop in C++)",
                          "self-attention"}
    assert all(len(v) == 2 and all(t > 0 for t in v) for v in times.values())


def test_greedy_copy_matches_teacher_forcing_when_every_step_is_right():
    torch.manual_seed(0)
    model = seq.Seq2Seq(5, 16, use_attention=True)
    source, decoder_input, target = seq.copy_task_batch(4, 6, 5, torch.Generator().manual_seed(0))
    written = seq.greedy_copy(model, source)
    assert written.shape == source.shape
    # fed its own outputs, the first step sees the same input as under teacher forcing
    forced = model(source, decoder_input)[0].argmax(-1)
    assert torch.equal(written[:, 0], forced[:, 0])
    both = seq.copy_accuracy_by_length(model, [3, 6], 5, batch_size=8, teacher_forcing=False)
    assert len(both) == 2 and all(0 <= a <= 1 for a in both)
