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


RIGHT = "st:s0t0|raw:r1a1w1|berry:b1e1r2r3y3, so 3"  # strawberry, cut as the full course tokenizer cuts it


def test_the_trace_of_strawberry_by_hand():
    assert reasoning.trace_of_pieces(["st", "raw", "berry"], "r") == RIGHT
    assert reasoning.trace_of_pieces(["ban", "ana"], "a") == "ban:b0a1n1|ana:a2n2a3, so 3"
    assert reasoning.trace_of_pieces(["cat"], "z") == "cat:c0a0t0, so 0"


def test_the_trace_copies_the_tokenizers_own_pieces(tokenizer):
    pieces = reasoning.token_pieces(tokenizer, "strawberry")
    assert "".join(pieces) == "strawberry"
    assert reasoning.trace("strawberry", "r") == reasoning.trace_of_pieces(pieces, "r")
    assert reasoning.trace(STRAWBERRY) == reasoning.trace("Strawberry", "R")


def test_every_copied_token_letter_and_count_is_one_token_and_the_letter_is_the_questions_token(tokenizer):
    words = tasks.word_split().train[:300] + ("quixotic", "xylophone", "jazz")
    for word in words:
        letter = word[len(word) // 2]
        pieces = reasoning.token_pieces(tokenizer, word)
        got = reasoning.trace_tokens(tokenizer, reasoning.trace(word, letter, tokenizer))
        want, count = [], 0
        for i, piece in enumerate(pieces):
            want += [piece, ":"]
            for ch in piece:
                count += ch == letter
                want += [ch, str(count)]
            want += ["|"] if i < len(pieces) - 1 else []
        assert got[:len(want)] == want, (word, got)  # the copy is the question's own token, re-cut the same
        assert letter in reasoning.trace_tokens(tokenizer, tasks.LetterCount(word, letter).question)
    assert len(reasoning.trace_tokens(tokenizer, " q")) == 2 or tokenizer.vocab_size < 4096  # why no spaces


def test_reading_a_trace():
    assert reasoning.read_trace(RIGHT) == ("strawberry", [0, 0, 1, 1, 1, 1, 1, 2, 3, 3])
    assert reasoning.read_trace("S:S0|TR:T0R1, so 1") == ("str", [0, 0, 1])
    assert reasoning.read_trace("s0t0r1, so 1") == ("str", [0, 0, 1])  # no copies: the letters still read
    for junk in ("", "There are 3 'r's.", None, 42, "s0t0, so", "::||:", "a1:b2|c3"):
        letters, counts = reasoning.read_trace(junk)
        assert len(letters) == len(counts)


def test_where_a_trace_first_slipped(tokenizer):
    task = tasks.LetterCount("strawberry", "r")
    pieces = reasoning.token_pieces(tokenizer, "strawberry")
    right = reasoning.trace_of_pieces(pieces, "r")
    assert reasoning.first_slip(tokenizer, task, right) == ""
    wrong_copy = reasoning.trace_of_pieces(["x", *pieces[1:]], "r")
    assert reasoning.first_slip(tokenizer, task, wrong_copy) == "copied a wrong token"
    assert reasoning.first_slip(tokenizer, task, reasoning.trace_of_pieces(pieces[:-1], "r")) == "copied a wrong token"
    misspelled = right.replace(f"{pieces[0]}:{pieces[0][0]}", f"{pieces[0]}:q", 1)
    assert reasoning.first_slip(tokenizer, task, misspelled) == "misspelled a token"
    miscounted = reasoning.trace_of_pieces(pieces, "r").replace("r1", "r2", 1)
    assert reasoning.first_slip(tokenizer, task, miscounted) == "miscounted"
    assert reasoning.first_slip(tokenizer, task, right[:-1] + "4") == "answered off its count"
    for junk in (None, "", "3", "so 3"):
        assert reasoning.first_slip(tokenizer, task, junk) in reasoning.SLIPS + ("",)


@pytest.mark.parametrize("completion, right", [
    ("st:s0t0|raw:r1a1w1|berry:b1e1r2r3y3, so 3", True),
    ("st:s0t0|raw:r1a1w1|berry:b1e1r2r3y3, so three", True),  # a number word
    ("st:s0t0|raw:r1a1w1|berry:b1e1r2r3y3, so 2 or 3", True),  # several numbers: the last one counts
    ("st:s0t0|raw:r1a1w1|berry:b1e1r2r3y3, so 3 or 2", False),
    ("st:s0t0|raw:r1a1w1|berry:b1e1r2r3y3", False),  # no number at all: the counts glued to letters are not answers
    ("st:s0t0|raw:r1a1w1|berry:b1e1r2r3y3, so -3", False),
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
    other = "st:s0t0|raw:r1a1w1|berry:p1e1r2r3y3, so 3"  # 'b' written as 'p': not the target letter
    assert not reasoning.spelling_correct(STRAWBERRY, other) and reasoning.counts_consistent(STRAWBERRY, other)
    assert reasoning.wrong_letters(STRAWBERRY, other) == "other letters"
    assert reasoning.wrong_letters(STRAWBERRY, right) == ""
    target = "st:s0t0|raw:r1a1w1|berry:b1e1r2y2, so 2"  # one 'r' lost
    assert reasoning.wrong_letters(STRAWBERRY, target) == "target letter"
    lucky = "st:s0t0|raw:r1a1w1|berry:b1e1r2y2, so 3"  # an 'r' lost: the answer does not follow from the trace
    assert reasoning.answer_correct(STRAWBERRY, lucky) and not reasoning.counts_consistent(STRAWBERRY, lucky)
    assert not reasoning.counts_consistent(STRAWBERRY, "st:s0t0|raw:r0a0w0|berry:b0e0r0r0y0, so 0")


def test_the_reward_of_a_right_trace_is_one_and_of_a_right_answer_after_a_misspelling_too():
    """The notebook's decision: the reward is the grader's. A misspelled trace with the right count earns 1."""
    assert reasoning.reward(STRAWBERRY, reasoning.trace(STRAWBERRY)) == 1.0
    assert reasoning.reward(STRAWBERRY, "st:s0t0|raw:r1a1w1|berry:p1e1r2r3y3, so 3") == 1.0
    assert reasoning.reward(STRAWBERRY, "st:s0t0|raw:r1a1w1|berry:b1e1r2y2, so 2") == 0.0


def test_a_group_whose_rewards_are_equal_has_zero_advantage():
    completions = [RIGHT, RIGHT.replace("so 3", "so three"), "nope, so 2", "so 0"]
    rewards = [reasoning.reward(STRAWBERRY, c) for c in completions]
    assert rewards == [1.0, 1.0, 0.0, 0.0]
    advantages = rl.group_advantages(rewards, 2)
    assert advantages.tolist() == [0.0, 0.0, 0.0, 0.0]
    mixed = rl.group_advantages([1.0, 0.0, 0.0, 1.0], 2)
    assert mixed[0] > 0 > mixed[1] and mixed[3] > 0 > mixed[2]


def test_held_out_words_never_reach_a_training_set(tokenizer):
    held_out = set(tasks.word_split().held_out)
    data = reasoning.cold_start_dataset()
    assert data["word"] and not set(data["word"]) & held_out
    questions = reasoning.grpo_questions()
    assert questions and not {q.word for q in questions} & held_out
    for row in data:
        assert row["messages"][-1]["content"] == reasoning.trace(row["word"], row["letter"], tokenizer)
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
    longest = max(len(tokenizer.encode(reasoning.trace(w, w[0], tokenizer), add_special_tokens=False))
                  for w in tasks.dictionary_words() if len(w) >= 11)
    assert reasoning.REASONING_MAX_TOKENS >= longest + 1  # room for the longest dictionary word's trace and <|end|>


def test_made_up_words_hold_no_held_out_word_and_cut_back_into_their_tokens(tokenizer):
    words = reasoning.made_up_words(300, seed=3)
    assert len(words) == 300 and words == reasoning.made_up_words(300, seed=3)
    held_out = set(tasks.word_split().held_out)
    tasks.check_training_words(words)
    for word in words:
        pieces = reasoning.token_pieces(tokenizer, word)
        assert 3 <= len(word) <= 14 and 1 <= len(pieces) <= 4
        assert not any(piece in held_out for piece in pieces), word  # no held-out word as a token, e.g. 'berry'
        assert not any(named in word for named in tasks.NAMED_WORDS), word


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


def test_the_exercise_checker_takes_the_solution_and_refuses_a_slip(capsys):
    assert reasoning.check_trace(reasoning.trace_of_pieces) is True
    assert "✓" in capsys.readouterr().out

    def no_copies(pieces, letter):  # the old format: letters and counts without the copied tokens
        return reasoning.trace_of_pieces(["".join(pieces)], letter).split(":", 1)[1]

    assert reasoning.check_trace(no_copies) is False
    assert "✗" in capsys.readouterr().out

    def not_done(pieces, letter):
        raise NotImplementedError

    assert reasoning.check_trace(not_done) is False
    assert "Not done yet" in capsys.readouterr().out


def test_rare_tokens_are_asked_about_until_each_is_spelled_often_enough(tokenizer):
    words = list(tasks.word_split().train[:200])
    given = tasks.letter_count_questions(words, 40, seed=1)
    extra = reasoning.rare_token_questions(words, given, 3, seed=2, tokenizer=tokenizer)
    assert extra and {q.word for q in extra} <= set(words)
    held = [q for q in given + extra]
    for word in words:
        for piece in reasoning.token_pieces(tokenizer, word):
            assert sum(piece in reasoning.token_pieces(tokenizer, q.word) for q in held) >= 3, piece
    assert any(q.answer == 0 for q in extra) and any(q.answer > 0 for q in extra)
    assert reasoning.rare_token_questions(words, given + extra, 3, seed=2, tokenizer=tokenizer) == []
