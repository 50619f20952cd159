"""llmlab.sequences against torch.nn (RNNCell, RNN, LSTMCell, scaled_dot_product_attention) and known values."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab import sequences as seq


def test_rnn_cell_equals_torch_rnn_cell_given_the_same_weights():
    torch.manual_seed(0)
    reference = nn.RNNCell(6, 8)
    cell = seq.RNNCell(6, 8)
    cell.load_state_dict(reference.state_dict())  # same parameter names and shapes
    x, h = torch.randn(4, 6), torch.randn(4, 8)
    torch.testing.assert_close(cell(x, h), reference(x, h))
    torch.testing.assert_close(cell(x), reference(x))  # no state given: a zero state


def test_rnn_cell_initialises_like_torch():
    cell = seq.RNNCell(6, 100)
    bound = 1 / 100**0.5
    for p in cell.parameters():
        assert p.abs().max() <= bound
        assert p.abs().max() > 0.8 * bound  # uniform over the whole range, not all near zero


def test_unrolled_rnn_equals_torch_rnn_outputs_and_gradients():
    torch.manual_seed(1)
    reference = nn.RNN(5, 7, batch_first=True)
    ours = seq.RNN(5, 7).load_from_torch(reference)
    x, h0 = torch.randn(3, 11, 5), torch.randn(1, 3, 7)
    out_ref, h_ref = reference(x, h0)
    out, h = ours(x, h0)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(ours(x)[0], reference(x)[0])  # zero initial state
    # backpropagation through time gives the same gradients
    out_ref.square().sum().backward()
    out.square().sum().backward()
    torch.testing.assert_close(ours.cell.weight_hh.grad, reference.weight_hh_l0.grad)
    torch.testing.assert_close(ours.cell.weight_ih.grad, reference.weight_ih_l0.grad)


def test_char_vocabulary_round_trip_and_unknown_characters():
    vocab = seq.CharVocabulary("to be, or not to be")
    assert vocab.chars == sorted(set("to be, or not to be"))
    assert vocab.decode(vocab.encode("not to be")) == "not to be"
    with pytest.raises(ValueError, match="not in the vocabulary: 'QZ'"):
        vocab.encode("Zebe Q")


def test_split_keeps_the_last_tenth_for_validation():
    ids = torch.arange(100)
    train, val = seq.split_train_val(ids)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


def test_random_windows_targets_are_inputs_shifted_by_one():
    ids = torch.arange(1000)
    x, y = seq.random_windows(ids, 8, 20, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 20)
    assert torch.equal(y, x + 1)  # with ids = positions, the next id is the next position


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_char_lm_learns_a_repeating_text(kind):
    torch.manual_seed(0)
    text = "strawberry " * 200
    vocab = seq.CharVocabulary(text)
    ids = vocab.encode(text)
    model = seq.CharLM(len(vocab), 32, kind=kind, embed_size=16)
    before = seq.evaluate(model, ids, length=50)
    history = seq.train_char_lm(model, ids, ids, steps=60, batch_size=16, length=30, lr=1e-2, eval_every=60)
    after = seq.evaluate(model, ids, length=50)
    assert before > 1.5  # about log(8 letters) at the start
    assert after < 0.3 * before, (before, after)
    assert history["val"][-1] == pytest.approx(seq.evaluate(model, ids, max_chars=20_000), rel=1e-5)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        seq.CharLM(10, 8, kind="gru")


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_greedy_sampling_step_by_step_agrees_with_one_full_forward(kind):
    torch.manual_seed(0)
    vocab = seq.CharVocabulary("abcdefgh \n")
    model = seq.CharLM(len(vocab), 16, kind=kind, embed_size=8)
    prefix = "abc "
    generated = seq.sample(model, vocab, prefix, length=15, temperature=0)
    ids = vocab.encode(prefix + generated)
    logits, _, _ = model(ids[None, :-1])
    assert vocab.decode(logits[0, len(prefix) - 1 :].argmax(-1)) == generated  # the carried state is right


def test_sampling_is_seeded_and_checks_its_input():
    torch.manual_seed(0)
    vocab = seq.CharVocabulary("abcdefgh \n")
    model = seq.CharLM(len(vocab), 16, embed_size=8)
    assert seq.sample(model, vocab, "ab", 30, temperature=1.0, seed=3) == seq.sample(
        model, vocab, "ab", 30, temperature=1.0, seed=3)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        seq.sample(model, vocab, "xyz", 5)
    with pytest.raises(ValueError, match="temperature"):
        seq.sample(model, vocab, "ab", 5, temperature=-1)


def test_surprisal_is_the_cross_entropy_of_each_next_character():
    torch.manual_seed(0)
    vocab = seq.CharVocabulary("berry ")
    model = seq.CharLM(len(vocab), 8, kind="lstm", embed_size=4)
    pairs = seq.surprisal(model, vocab, "berry")
    ids = vocab.encode("berry")
    logits, _, _ = model(ids[None, :-1])
    expected = -F.log_softmax(logits[0], -1)[torch.arange(4), ids[1:]]
    assert [c for c, _ in pairs] == list("erry")
    torch.testing.assert_close(torch.tensor([s for _, s in pairs]), expected)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_gradient_at_distance_zero_is_the_read_out_gradient(kind):
    torch.manual_seed(0)
    vocab_size, hidden = 12, 10
    model = seq.CharLM(vocab_size, hidden, kind=kind, embed_size=6)
    x, y = torch.randint(0, vocab_size, (4, 9)), torch.randint(0, vocab_size, (4, 9))
    norms = seq.gradient_by_distance(model, x, y)
    assert norms.shape == (9,)
    # at the last position, d loss / d h_T = W_head^T (softmax - one_hot) / batch, by hand
    _, state = model.recurrent(model.embed(x))
    h_last = (state[0] if kind == "lstm" else state)[0]
    probs = F.softmax(model.head(h_last), -1)
    by_hand = (probs - F.one_hot(y[:, -1], vocab_size)) @ model.head.weight / len(x)
    assert norms[0].item() == pytest.approx(by_hand.norm(dim=-1).mean().item(), rel=1e-5)
    assert all(p.grad is None for p in model.parameters())  # the model is left clean


def test_attention_equals_torch_scaled_dot_product_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 3)
    out, weights = seq.attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))
    x = torch.randn(2, 6, 8)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    out, weights = seq.attention(x, x, x, mask=causal)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(x, x, x, is_causal=True))
    assert torch.all(weights.triu(1) == 0)  # no position looks ahead


def test_attention_picks_the_value_of_the_matching_key():
    keys = torch.eye(4) * 10  # four very different keys
    values = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    out, weights = seq.attention(keys[2:3], keys, values)
    assert out.item() == pytest.approx(3.0, abs=1e-3)
    assert weights.argmax().item() == 2


def test_copy_task_batch_shifts_the_decoder_input():
    source, dec_in, target = seq.copy_task_batch(4, 6, n_symbols=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(source, target)
    assert torch.all(dec_in[:, 0] == 0) and torch.equal(dec_in[:, 1:], target[:, :-1])
    assert source.min() >= 1 and source.max() <= 5


def test_seq2seq_with_attention_learns_to_copy():
    torch.manual_seed(0)
    model = seq.Seq2Seq(n_symbols=8, hidden_size=64, use_attention=True)
    seq.train_copy_task(model, steps=200, max_length=6, n_symbols=8, batch_size=32, lr=5e-3)
    accuracy = seq.copy_accuracy_by_length(model, [3, 6], n_symbols=8)
    assert min(accuracy) > 0.9, accuracy
    _, _, weights = model(*seq.copy_task_batch(2, 5, 8)[:2])
    assert weights.shape == (2, 5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))


def test_lstm_checker_accepts_a_right_answer_and_explains_wrong_ones(capsys):
    def right(x, h, c, w_ih, w_hh, b_ih, b_hh):
        i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def swapped_gates(x, h, c, w_ih, w_hh, b_ih, b_hh):
        f, i, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def not_written(*args):
        raise NotImplementedError

    assert seq.check_lstm_cell(right) is True
    assert "✓" in capsys.readouterr().out
    assert seq.check_lstm_cell(swapped_gates) is False
    assert "gate order" in capsys.readouterr().out
    assert seq.check_lstm_cell(not_written) is False
    assert "Hint" in capsys.readouterr().out
    assert seq.check_lstm_cell(lambda *a: 1 / 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out
