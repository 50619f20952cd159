"""The training loop's pieces: the schedule, clipping, a real loss that drops, checkpoints that round-trip."""

import math

import pytest
import torch

from llmlab import corpora
from llmlab.data import batches, cut_rows, inputs_and_targets
from llmlab.gpt import GPT, GPTConfig
from llmlab.runtime import native_bfloat16
from llmlab.training import (History, TrainConfig, check_learning_rate, clip_gradients, compiled, evaluate,
                             learning_rate, load_model, make_optimizer, mixed_precision, save_model, train,
                             training_step)

SCHEDULE = dict(max_lr=1e-3, min_lr=1e-4, warmup_steps=100, max_steps=2000)


def test_learning_rate_warms_up_linearly():
    assert learning_rate(0, **SCHEDULE) == pytest.approx(1e-5)
    assert learning_rate(49, **SCHEDULE) == pytest.approx(5e-4)
    assert learning_rate(99, **SCHEDULE) == pytest.approx(1e-3)


def test_learning_rate_follows_a_cosine_to_the_floor():
    assert learning_rate(100, **SCHEDULE) == pytest.approx(1e-3)
    assert learning_rate(1050, **SCHEDULE) == pytest.approx(5.5e-4)  # half-way: the mean of peak and floor
    quarter = 100 + 1900 // 4  # cos(pi/4) = sqrt(2)/2
    assert learning_rate(quarter, **SCHEDULE) == pytest.approx(1e-4 + 0.5 * (1 + math.sqrt(0.5)) * 9e-4)
    assert learning_rate(1999, **SCHEDULE) == pytest.approx(1e-4, rel=1e-4)
    assert learning_rate(2000, **SCHEDULE) == 1e-4
    assert learning_rate(10_000, **SCHEDULE) == 1e-4
    values = [learning_rate(s, **SCHEDULE) for s in range(100, 2001)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises after warm-up


def test_check_learning_rate_accepts_ours_and_rejects_a_constant(capsys):
    assert check_learning_rate(learning_rate)
    assert not check_learning_rate(lambda step, **kw: 1e-3)

    def unfinished(step, **kw):
        raise NotImplementedError

    assert not check_learning_rate(unfinished)
    assert "Not done yet" in capsys.readouterr().out


def _model_with_gradients(seed):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32))
    idx = torch.randint(50, (4, 16))
    _, loss = model(idx, idx)
    (loss * 100).backward()  # large gradients, so clipping has work to do
    return model


@pytest.mark.parametrize("max_norm", [0.5, 1.0, 1e6])
def test_clip_gradients_matches_torch(max_norm):
    ours, theirs = _model_with_gradients(0), _model_with_gradients(0)
    norm = clip_gradients(list(ours.parameters()), max_norm)
    norm_torch = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
    assert norm == pytest.approx(float(norm_torch), rel=1e-5)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-8)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ours.parameters()]))
    assert float(after) == pytest.approx(min(max_norm, float(norm)), rel=1e-4)


def test_optimizer_decays_matrices_but_not_biases_or_norms():
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    decay, no_decay = make_optimizer(model, TrainConfig(max_steps=1, batch_size=1)).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def _train_a_few_steps(steps=8, *, fused=True, bfloat16=False, compile=False, seed=0, one_batch=False):
    """(losses, final weights) of a small GPT trained on random token rows with the course's training_step
    (one_batch: the same rows at every step, to learn by heart)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32)).train()
    config = TrainConfig(max_steps=steps, batch_size=4, learning_rate=3e-3, bfloat16=bfloat16, compile=compile)
    optimizer = make_optimizer(model, config, fused=fused)
    autocast = mixed_precision(model, config.bfloat16)
    rows = [(torch.randint(64, (4, 32), generator=g), torch.randint(64, (4, 32), generator=g))
            for g in [torch.Generator().manual_seed(1)] for _ in range(steps)]
    if one_batch:
        rows = rows[:1] * steps
    forward = compiled(model, rows[0], autocast) if compile else model
    losses = [training_step(forward, optimizer, batch, autocast, config.grad_clip)[0] for batch in rows]
    return losses, [p.detach().clone() for p in model.parameters()]


def test_fused_adamw_takes_the_same_steps_as_torchs_default():
    fused_losses, fused_weights = _train_a_few_steps(fused=True)
    plain_losses, plain_weights = _train_a_few_steps(fused=False)
    assert fused_losses == pytest.approx(plain_losses, rel=1e-5)
    for a, b in zip(fused_weights, plain_weights):  # 8 steps of lr 3e-3 move a weight by up to 0.024
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)


def test_training_step_returns_the_loss_and_the_norm_before_clipping():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    reference = GPT(model.config)
    reference.load_state_dict(model.state_dict())
    batch = (torch.randint(50, (2, 16)), torch.randint(50, (2, 16)))
    config = TrainConfig(max_steps=1, batch_size=2)
    loss, norm = training_step(model, make_optimizer(model, config), batch, mixed_precision(model, False), 1.0)
    _, want = reference(*batch)
    want.backward()
    assert loss == pytest.approx(want.item(), rel=1e-6)
    assert norm == pytest.approx(float(torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)), rel=1e-5)
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next step
    assert not torch.equal(model.lm_head.weight, reference.lm_head.weight)  # and the weights moved


def test_bfloat16_autocast_runs_matrix_products_in_bfloat16_where_the_cpu_has_it():
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    x = torch.randn(3, 16)
    with mixed_precision(model, True):
        product = x @ x.T
    assert product.dtype == (torch.bfloat16 if native_bfloat16() else torch.float32)
    with mixed_precision(model, False):
        assert (x @ x.T).dtype == torch.float32


def test_bfloat16_training_learns_like_float32():
    low, _ = _train_a_few_steps(steps=30, bfloat16=True, one_batch=True)
    full, _ = _train_a_few_steps(steps=30, bfloat16=False, one_batch=True)
    assert low[-1] < low[0] - 0.3 and full[-1] < full[0] - 0.3  # both learn the random rows by heart
    assert max(abs(a - b) for a, b in zip(low, full)) < 0.1  # and take the same path, within bfloat16's precision


def test_compiled_training_takes_the_same_steps_as_eager():
    compiled_losses, compiled_weights = _train_a_few_steps(steps=4, compile=True)
    eager_losses, eager_weights = _train_a_few_steps(steps=4, compile=False)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    for a, b in zip(compiled_weights, eager_weights):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_compiled_falls_back_to_the_model_with_a_message_where_compiling_fails(monkeypatch, capsys):
    def no_compiler(model):
        def fails(*args, **kwargs):
            raise RuntimeError("no C++ compiler found")
        return fails

    monkeypatch.setattr(torch, "compile", no_compiler)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    batch = (torch.randint(50, (2, 16)), torch.randint(50, (2, 16)))
    assert compiled(model, batch, mixed_precision(model, False)) is model
    assert "torch.compile does not work here (RuntimeError: no C++ compiler found); training without it." in (
        capsys.readouterr().out)
    assert all(p.grad is None for p in model.parameters())


def test_a_tiny_model_learns_real_text():
    torch.manual_seed(0)
    text = corpora.shakespeare()[:50_000]
    chars = sorted(set(corpora.shakespeare()))
    ids = torch.tensor([chars.index(c) for c in text])
    config = GPTConfig(vocab_size=len(chars), block_size=32, n_layer=2, n_head=2, n_embd=48)
    model = GPT(config)
    val = inputs_and_targets(cut_rows(ids[45_000:], 32), pad_id=0)
    before = evaluate(model, *val)
    assert before == pytest.approx(math.log(len(chars)), abs=0.3)  # an untrained model guesses uniformly
    history = train(model, batches(ids[:45_000], 32, 16, pad_id=0, generator=torch.Generator().manual_seed(0)),
                    TrainConfig(max_steps=150, batch_size=16, learning_rate=3e-3, warmup_steps=10,
                                eval_interval=50),
                    val_sets={"val": val}, progress=False)
    assert history.final_val_loss["val"] < 2.9 < before  # far below uniform guessing (4.17 nats)
    assert history.final_val_loss["val"] == history.val_loss["val"][-1]  # eval_rows unset: all rows each time
    assert history.final_train_loss(20) < history.train_loss[0] - 1.0
    assert history.eval_steps == [50, 100, 150]
    assert history.tokens_seen == 150 * 16 * 32 and history.tokens_per_second > 0
    assert History.from_json(history.to_json()) == history


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=60, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False)).eval()
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.config == model.config and not loaded.training
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still tied after loading
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    idx = torch.randint(60, (2, 16))
    torch.testing.assert_close(model(idx)[0], loaded(idx)[0], rtol=0, atol=0)



def test_trainer_speed_compares_two_settings_side_by_side(tokenizer):
    from llmlab.pretraining import EARLIER_SPEED_SETTINGS, pretraining_data, trainer_speed

    data = pretraining_data(tokenizer)
    same = trainer_speed(tokenizer, data, rounds=5, tokens_per_turn=2048, after=EARLIER_SPEED_SETTINGS,
                         progress=False)
    assert same["tokens_per_s_before"] > 0 and same["tokens_per_s_after"] > 0
    low, high = same["speedup_quartiles"]
    assert low <= same["speedup"] <= high
    assert 0.5 < same["speedup"] < 2  # the same settings against themselves: about 1x, whatever the machine does
    assert same["compile_s"] < 1  # nothing compiled
