"""Reasoning: the worked trace, its tokens, the grader and the reward on tricky completions, the data's words,
GRPO's update, the cold start's loss."""

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmlab import reasoning, rl, tasks
from llmlab.checks import CourseError
from llmlab.gpt import GPT, GPTConfig

STRAWBERRY = tasks.STRAWBERRY


def test_the_trace_of_strawberry_by_hand():
    assert reasoning.trace("strawberry", "r") == "s0t0r1a1w1b1e1r2r3y3, so 3"
    assert reasoning.trace(STRAWBERRY) == reasoning.trace("strawberry", "r")
    assert reasoning.trace("Banana", "A") == "b0a1n1a2n2a3, so 3"
    assert reasoning.trace("cat", "z") == "c0a0t0, so 0"


def test_every_letter_and_every_count_is_one_token_and_the_letter_is_the_questions_token(tokenizer):
    words = tasks.word_split().train[:300] + ("quixotic", "xylophone", "jazz")
    for word in words:
        letter = word[len(word) // 2]
        pieces = reasoning.trace_tokens(tokenizer, reasoning.trace(word, letter))
        spelled = pieces[:2 * len(word)]
        assert "".join(spelled[0::2]) == word and all(len(p) == 1 for p in spelled), (word, pieces)
        assert [int(p) for p in spelled[1::2]] == [word[:i + 1].count(letter) for i in range(len(word))]
        assert letter in reasoning.trace_tokens(tokenizer, tasks.LetterCount(word, letter).question)
    assert len(reasoning.trace_tokens(tokenizer, " q")) == 2 or tokenizer.vocab_size < 4096  # why no spaces


def test_reading_a_trace():
    assert reasoning.read_trace("s0t0r1a1w1b1e1r2r3y3, so 3") == ("strawberry", [0, 0, 1, 1, 1, 1, 1, 2, 3, 3])
    assert reasoning.read_trace("S0T0R1, so 1") == ("str", [0, 0, 1])
    for junk in ("", "There are 3 'r's.", None, 42, "s0t0, so"):
        letters, counts = reasoning.read_trace(junk)
        assert len(letters) == len(counts)


@pytest.mark.parametrize("completion, right", [
    ("s0t0r1a1w1b1e1r2r3y3, so 3", True),
    ("s0t0r1a1w1b1e1r2r3y3, so three", True),  # a number word
    ("s0t0r1a1w1b1e1r2r3y3, so 2 or 3", True),  # several numbers: the last one counts
    ("s0t0r1a1w1b1e1r2r3y3, so 3 or 2", False),
    ("s0t0r1a1w1b1e1r2r3y3", False),  # no number at all: the counts glued to letters are not answers
    ("s0t0r1a1w1b1e1r2r3y3, so -3", False),
    ("", False),
    ("3", True),
])
def test_the_grader_on_tricky_completions(completion, right):
    assert reasoning.answer_correct(STRAWBERRY, completion) is right
    assert reasoning.reward(STRAWBERRY, completion) == (1.0 if right else 0.0)


def test_the_grader_never_crashes_on_what_is_not_text():
    for junk in (None, 3, ["s0"], b"3"):
        assert reasoning.answer_correct(STRAWBERRY, junk) is False
        assert reasoning.reward(STRAWBERRY, junk) == 0.0
        assert reasoning.spelling_correct(STRAWBERRY, junk) is False


def test_spelling_and_consistency_by_hand():
    right = reasoning.trace(STRAWBERRY)
    assert reasoning.spelling_correct(STRAWBERRY, right) and reasoning.counts_consistent(STRAWBERRY, right)
    other = "s0t0r1a1w1p1e1r2r3y3, so 3"  # 'b' written as 'p': not the target letter
    assert not reasoning.spelling_correct(STRAWBERRY, other) and reasoning.counts_consistent(STRAWBERRY, other)
    assert reasoning.wrong_letters(STRAWBERRY, other) == "other letters"
    assert reasoning.wrong_letters(STRAWBERRY, right) == ""
    target = "s0t0r1a1w1b1e1r2y2, so 2"  # one 'r' lost
    assert reasoning.wrong_letters(STRAWBERRY, target) == "target letter"
    lucky = "s0t0r1a1w1b1e1r2y2, so 3"  # an 'r' lost: the answer does not follow from the trace
    assert reasoning.answer_correct(STRAWBERRY, lucky) and not reasoning.counts_consistent(STRAWBERRY, lucky)
    assert not reasoning.counts_consistent(STRAWBERRY, "s0t0r0a0w0b0e0r0r0y0, so 0")


def test_the_reward_of_a_right_trace_is_one_and_of_a_right_answer_after_a_misspelling_too():
    """The notebook's decision: the reward is the grader's. A misspelled trace with the right count earns 1."""
    assert reasoning.reward(STRAWBERRY, reasoning.trace(STRAWBERRY)) == 1.0
    assert reasoning.reward(STRAWBERRY, "s0t0r1a1w1p1e1r2r3y3, so 3") == 1.0
    assert reasoning.reward(STRAWBERRY, "s0t0r1a1w1b1e1r2y2, so 2") == 0.0


def test_a_group_whose_rewards_are_equal_has_zero_advantage():
    completions = ["s0t0r1a1w1b1e1r2r3y3, so 3", "s0t0r1a1w1b1e1r2r3y3, so three", "nope, so 2", "so 0"]
    rewards = [reasoning.reward(STRAWBERRY, c) for c in completions]
    assert rewards == [1.0, 1.0, 0.0, 0.0]
    advantages = rl.group_advantages(rewards, 2)
    assert advantages.tolist() == [0.0, 0.0, 0.0, 0.0]
    mixed = rl.group_advantages([1.0, 0.0, 0.0, 1.0], 2)
    assert mixed[0] > 0 > mixed[1] and mixed[3] > 0 > mixed[2]


def test_held_out_words_never_reach_a_training_set():
    held_out = set(tasks.word_split().held_out)
    data = reasoning.cold_start_dataset()
    assert data["word"] and not set(data["word"]) & held_out
    questions = reasoning.grpo_questions()
    assert questions and not {q.word for q in questions} & held_out
    for row in data:
        assert row["messages"][-1]["content"] == reasoning.trace(row["word"], row["letter"])
    with pytest.raises(CourseError, match="held-out"):
        tasks.check_training_words(list(data["word"]) + ["strawberry"])


@pytest.mark.parametrize("word, letter", [("straw berry", "r"), ("c4t", "c"), ("café", "c"), ("", "a"),
                                          ("cat", ""), ("cat", "ab"), ("cat", "1"), ("a" * 41, "a"), (None, "a")])
def test_bad_questions_are_refused_in_one_sentence(word, letter):
    with pytest.raises(CourseError):
        reasoning.question(word, letter)


def test_room_for_the_trace_grows_with_the_word(tokenizer):
    assert reasoning.max_new_tokens("cat") == reasoning.REASONING_MAX_TOKENS
    assert reasoning.max_new_tokens("a" * 40) >= 2 * 40 + 4
    longest = max(len(tokenizer.encode(reasoning.trace(w, w[0]), add_special_tokens=False))
                  for w in tasks.dictionary_words() if len(w) >= 11)
    assert reasoning.REASONING_MAX_TOKENS >= longest + 1  # room for the longest dictionary word's trace and <|end|>


def _tiny_model(tokenizer, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=len(tokenizer), block_size=96, n_layer=1, n_head=2, n_embd=16)).eval()


def test_the_answer_loss_is_the_models_loss(tokenizer):
    model = _tiny_model(tokenizer)
    ids = torch.randint(10, 200, (3, 20))
    targets = ids.clone()
    targets[:, :8] = -100
    targets[2, 15:] = -100
    _, expected = model(ids, targets)
    _, got = reasoning.AnswerLoss(model)(ids, targets)
    assert torch.allclose(got, expected, atol=1e-5)


def test_grpo_leaves_the_model_alone_when_no_group_has_a_signal(tokenizer, monkeypatch):
    """Every trace rewarded the same (0, as a random model's would be): no group has a signal, no update is made."""
    monkeypatch.setattr(reasoning, "reward", lambda task, completion: 0.0)
    model = _tiny_model(tokenizer)
    before = copy.deepcopy(model.state_dict())
    settings = {**reasoning.REASONER_CONFIG["grpo"], "steps": 2, "prompts_per_step": 2, "group_size": 3,
                "kl_every": 1}
    questions = [tasks.LetterCount("cat", "q"), tasks.LetterCount("dog", "o")]
    result = reasoning.grpo(model, tokenizer, questions, settings, reference=copy.deepcopy(model), progress=False)
    curves = result["curves"]
    assert curves["step"] == [1, 2]
    assert curves["reward"] == [0.0, 0.0] and curves["no_signal"] == [1.0, 1.0]
    assert all(k == pytest.approx(0.0, abs=1e-6) for k in curves["kl"])  # the model did not move from its start
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_grpo_raises_the_reward_of_what_it_rewards(tokenizer):
    """One question, one step at a high learning rate: the rewarded traces become more likely."""
    model = _tiny_model(tokenizer, seed=1)
    task = tasks.LetterCount("cat", "a")
    prompt = reasoning.chat.prompt_ids(tokenizer, [{"role": "user", "content": task.question}])
    right = tokenizer.encode(reasoning.trace(task), add_special_tokens=False)
    wrong = tokenizer.encode("c0a0t0, so 0", add_special_tokens=False)
    ids, mask = rl.completion_batch([prompt, prompt], [right, wrong], tokenizer.eos_token_id)
    with torch.no_grad():
        before = rl.sequence_logprobs(model, ids, mask)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    advantages = rl.group_advantages([reasoning.reward(task, reasoning.trace(task)),
                                      reasoning.reward(task, "c0a0t0, so 0")], 2)
    for _ in range(5):
        logp = rl.token_logprobs(model, ids, mask)
        loss = rl.policy_gradient_loss(logp, logp.detach(), advantages, mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        after = rl.sequence_logprobs(model, ids, mask)
    assert after[0] > before[0] and after[1] < before[1]


# --- any input: a grade, a reading or a CourseError, never a crash -------------------------------------------------

TEXT = st.one_of(st.text(max_size=60), st.text(alphabet="abrsy0123456789, so-three", max_size=40))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(completion=TEXT)
def test_any_completion_is_graded_without_a_crash(completion):
    assert reasoning.reward(STRAWBERRY, completion) in (0.0, 1.0)
    letters, counts = reasoning.read_trace(completion)
    assert len(letters) == len(counts) and set(letters) <= set(tasks.LETTERS)
    assert isinstance(reasoning.counts_consistent(STRAWBERRY, completion), bool)
    assert reasoning.wrong_letters(STRAWBERRY, completion) in ("", "other letters", "target letter")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(word=st.one_of(st.text(max_size=45), st.none(), st.integers()),
       letter=st.one_of(st.text(max_size=3), st.none()))
def test_any_question_is_a_trace_or_a_course_error(word, letter):
    try:
        task = reasoning.question(word, letter)
    except CourseError:
        return
    text = reasoning.trace(task)
    assert reasoning.spelling_correct(task, text) and reasoning.counts_consistent(task, text)
    assert reasoning.reward(task, text) == 1.0
