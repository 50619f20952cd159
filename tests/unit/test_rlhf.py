"""RLHF and DPO (notebook 10): sampling measured, mode collapse measured, the RLHF loop and its leash, DPO."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from llmlab import chat, rl, rlhf, tasks
from llmlab.checks import CourseError
from llmlab.gpt import GPT, GPTConfig


def tiny_gpt(vocab, seed=0, block_size=64):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=2, n_head=2, n_embd=32)).eval()


def with_end_raised(model, tokenizer, by: float):
    """The model with <|end|>'s logit raised by about `by` at every position (so answers end now and then)."""
    end = tokenizer.convert_tokens_to_ids(chat.END)
    direction = model.lm_head.weight[end].detach().clone()
    with torch.no_grad():
        model.transformer.ln_f.bias += by * direction / direction.norm() ** 2
    return model


# --- sampling, measured -------------------------------------------------------------------------------------------

def test_batched_greedy_sampling_equals_row_by_row_on_prompts_of_mixed_lengths(tokenizer):
    model = tiny_gpt(len(tokenizer))
    prompts = [[1, 5, 6, 7, 8, 9], [1, 7], [1, 300, 301, 302], [1]]
    speed = rlhf.sampling_speed(model, prompts, max_new_tokens=6, temperature=0, repeats=1)
    assert speed["batched == row by row"] is True
    assert speed["new tokens"] == 4 * 6 and speed["rows"] == 4
    assert speed["speed-up"] == pytest.approx(speed["batched tokens/s"] / speed["single-row tokens/s"])


def test_prompts_past_the_context_window_are_refused(tokenizer):
    with pytest.raises(CourseError, match="no room for 40 new tokens"):
        rlhf.encode_prompts(tokenizer, ["word " * 60], max_new_tokens=40, block_size=64)
    with pytest.raises(CourseError, match="list of prompts"):
        rlhf.encode_prompts(tokenizer, "How many 'r's?", max_new_tokens=8, block_size=64)
    ids = rlhf.encode_prompts(tokenizer, [tasks.STRAWBERRY.question], max_new_tokens=8, block_size=64)
    assert ids == [chat.prompt_ids(tokenizer, [{"role": "user", "content": tasks.STRAWBERRY.question}])]


# --- mode collapse, measured --------------------------------------------------------------------------------------

def test_distinct_ngrams_by_hand():
    samples = [[1, 2, 3], [1, 2, 4]]
    assert rlhf.distinct_ngrams(samples, 1) == pytest.approx(4 / 6)  # 1 2 3 1 2 4: four distinct of six
    assert rlhf.distinct_ngrams(samples, 2) == pytest.approx(3 / 4)  # (1,2) twice, (2,3), (2,4)
    assert rlhf.distinct_ngrams(samples, 3) == 1.0
    assert rlhf.distinct_ngrams(["the cat sat", "the cat sat"], 2) == pytest.approx(2 / 4)
    with pytest.raises(CourseError, match="no 4-gram"):
        rlhf.distinct_ngrams(samples, 4)


def test_entropy_in_bits_by_hand():
    assert rlhf.entropy_bits([0.25] * 4) == pytest.approx(2.0)
    assert rlhf.entropy_bits([1.0, 0.0, 0.0]) == 0.0
    assert rlhf.entropy_bits([0.5, 0.25, 0.25]) == pytest.approx(1.5)


def test_first_token_entropy_is_the_entropy_of_the_next_token_distribution(tokenizer):
    model = tiny_gpt(len(tokenizer))
    prompt = [1, 20, 30]
    entropy, top = rlhf.first_token_entropy(model, prompt)
    with torch.no_grad():
        logits, _ = model(torch.tensor([prompt]))
    probs = torch.softmax(logits[0, -1].double(), -1)
    assert entropy == pytest.approx(float(-(probs * probs.log2()).sum()), rel=1e-6)
    assert len(top) == 5 and max(top.values()) == pytest.approx(probs.max().item())
    sure = with_end_raised(tiny_gpt(len(tokenizer)), tokenizer, by=40.0)  # <|end|> all but certain
    assert rlhf.first_token_entropy(sure, prompt)[0] < 0.01 < entropy


def test_diversity_of_a_collapsed_model_is_lower(tokenizer):
    model = tiny_gpt(len(tokenizer))
    prompt = rlhf.story_prompt(tokenizer, "assistant", "Once upon a time")
    free = rlhf.diversity(model, tokenizer, prompt, samples=8, max_new_tokens=6)
    collapsed = copy.deepcopy(model)
    token = 500
    direction = collapsed.lm_head.weight[token].detach().clone()
    with torch.no_grad():  # token 500 nearly always: a model collapsed onto one answer
        collapsed.transformer.ln_f.bias += 30 * direction / direction.norm() ** 2
    narrow = rlhf.diversity(collapsed, tokenizer, prompt, samples=8, max_new_tokens=6)
    assert narrow["distinct-1"] < free["distinct-1"] and narrow["distinct-2"] < free["distinct-2"]
    assert narrow["first-token entropy (bits)"] < 0.5 < free["first-token entropy (bits)"]
    assert narrow["distinct first tokens"] == 1 and len(free["texts"]) == 8


# --- RLHF: the loop, its leash, bad input ---------------------------------------------------------------------------

TOY_CONFIG = {**rlhf.RLHF_CONFIG, "steps": 25, "questions_per_step": 4, "group_size": 4, "max_new_tokens": 6,
              "learning_rate": 3e-3, "eval_interval": 25, "eval_questions": 4, "seed": 0}


def toy_run(tokenizer, kl_coef):
    """A tiny model that ends its answer early about half the time, rewarded for longer answers: the length
    bias of notebook 09's labeler, in miniature."""
    reference = with_end_raised(tiny_gpt(len(tokenizer)), tokenizer, by=8.5)
    policy = copy.deepcopy(reference)

    def score(questions, answers):
        return torch.tensor([float(len(tokenizer.encode(a))) for a in answers])

    questions = [q.question for q in tasks.letter_count_questions(tasks.word_split().train, 8, seed=1)]
    history = rlhf.train_rlhf(policy, reference, score, questions, kl_coef=kl_coef, config=TOY_CONFIG,
                              progress=False)
    return reference, policy, history


def mean_answer_tokens(model, tokenizer):
    prompts = [chat.prompt_ids(tokenizer, [{"role": "user", "content": "Hi"}])] * 64
    _, completions, truncated = rl.sample_groups(model, tokenizer, prompts, 1, 6,
                                                 generator=torch.Generator().manual_seed(123))
    return sum(len(c) for c in completions) / len(completions)


def test_rlhf_moves_the_policy_toward_what_the_reward_pays_for(tokenizer):
    reference, policy, history = toy_run(tokenizer, kl_coef=0.0)
    before, after = mean_answer_tokens(reference, tokenizer), mean_answer_tokens(policy, tokenizer)
    assert after > before + 0.5, (before, after)
    first, last = history["train"][:5], history["train"][-5:]
    assert sum(m["reward"] for m in last) > sum(m["reward"] for m in first)
    assert history["eval_steps"] == [0, 25] and set(history["eval"][0]) == {"accuracy", "reward", "answer words"}


def test_the_kl_leash_keeps_the_policy_nearer_the_reference(tokenizer):
    _, _, loose = toy_run(tokenizer, kl_coef=0.0)
    _, _, leashed = toy_run(tokenizer, kl_coef=5.0)
    kl = lambda h: sum(m["kl"] for m in h["train"][-5:]) / 5  # noqa: E731
    assert kl(leashed) < kl(loose)
    assert loose["train"][0]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1 samples from the reference itself


def test_a_negative_kl_coefficient_or_no_questions_is_refused(tokenizer):
    model = tiny_gpt(len(tokenizer))
    with pytest.raises(CourseError, match="kl_coef"):
        rlhf.train_rlhf(model, model, lambda q, a: torch.zeros(len(a)), ["Hi"], kl_coef=-0.1)
    with pytest.raises(CourseError, match="kl_coef"):
        rlhf.rlhf_model(kl_coef=float("nan"))
    with pytest.raises(CourseError, match="empty"):
        rlhf.train_rlhf(model, model, lambda q, a: torch.zeros(len(a)), [], kl_coef=0.1)


def test_artifact_names_of_the_sweep():
    assert rlhf.artifact_name(rlhf.KL_COEF) == "rlhf"
    assert rlhf.artifact_name(0) == "rlhf-leash-off"
    assert rlhf.artifact_name(0.02) == "rlhf-kl-0p02"
    with pytest.raises(CourseError):
        rlhf.artifact_name(-1)


# --- DPO ----------------------------------------------------------------------------------------------------------

PAIRS = [
    {"prompt": "How many 'a's are in the word \"banana\"?", "chosen": "There are 3 'a's in \"banana\".",
     "rejected": "There are 2 'a's in \"banana\"."},
    {"prompt": "Spell the word \"cat\".", "chosen": "c a t", "rejected": "c a t s and more words here"},
    {"prompt": "What is the first letter of the word \"dog\"?", "chosen": "The first letter of \"dog\" is 'd'.",
     "rejected": "d"},
]


def test_dpo_loss_on_pairs_equals_the_formula_on_log_probs_computed_row_by_row(tokenizer):
    policy, reference = tiny_gpt(len(tokenizer), seed=1), tiny_gpt(len(tokenizer), seed=2)
    beta = 0.3
    loss, chosen, rejected = rlhf.dpo_batch_loss(policy, reference, rlhf.preference_batch(tokenizer, PAIRS), beta)
    end = tokenizer.convert_tokens_to_ids(chat.END)

    def logprob(model, prompt, answer):  # one row alone, no padding: sum of log p(answer token | before it)
        p = chat.prompt_ids(tokenizer, [{"role": "user", "content": prompt}])
        a = tokenizer.encode(answer, add_special_tokens=False) + [end]
        logits, _ = model(torch.tensor([p + a[:-1]]))
        return -F.cross_entropy(logits[0, len(p) - 1:], torch.tensor(a), reduction="sum").item()

    losses = []
    for pair in PAIRS:
        r_c = beta * (logprob(policy, pair["prompt"], pair["chosen"]) - logprob(reference, pair["prompt"], pair["chosen"]))
        r_r = beta * (logprob(policy, pair["prompt"], pair["rejected"]) -
                      logprob(reference, pair["prompt"], pair["rejected"]))
        losses.append(math.log1p(math.exp(-(r_c - r_r))))  # -log sigmoid(margin)
    assert loss.item() == pytest.approx(sum(losses) / len(losses), rel=1e-4)
    assert chosen.shape == rejected.shape == (3,)


def test_dpo_training_ranks_the_chosen_answers_first(tokenizer):
    reference = tiny_gpt(len(tokenizer), seed=1)
    policy = copy.deepcopy(reference)
    config = {**rlhf.DPO_CONFIG, "epochs": 15, "batch_size": 3, "learning_rate": 3e-3}
    history = rlhf.train_dpo(policy, reference, PAIRS, config, progress=False)
    assert history["loss"][0] == pytest.approx(math.log(2), rel=1e-4)  # policy == reference at the start
    assert history["loss"][-1] < 0.5 * math.log(2) and history["reward accuracy"][-1] == 1.0


def test_an_empty_preference_set_is_refused(tokenizer):
    model = tiny_gpt(len(tokenizer))
    with pytest.raises(CourseError, match="preference set is empty"):
        rlhf.train_dpo(model, model, [])
    with pytest.raises(CourseError, match="preference set is empty"):
        rlhf.preference_batch(tokenizer, [])


def test_the_dpo_exercise_checker_accepts_the_formula_and_rejects_a_wrong_sign(capsys):
    def right(pi_c, pi_r, ref_c, ref_r, beta):
        return -F.logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))).mean()

    def wrong(pi_c, pi_r, ref_c, ref_r, beta):
        return -F.logsigmoid(beta * ((pi_r - ref_r) - (pi_c - ref_c))).mean()

    def todo(*args):
        raise NotImplementedError

    assert rlhf.check_dpo_loss(right) is True
    assert rlhf.check_dpo_loss(wrong) is False
    assert rlhf.check_dpo_loss(todo) is False
    assert "Not done yet" in capsys.readouterr().out
