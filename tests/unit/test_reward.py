"""Reward modeling: the labeler, the preference pairs, the Bradley-Terry loss, the reward model and its twin."""

import math

import pytest
import torch

from llmlab import reward, sft, tasks
from llmlab.checks import CourseError
from llmlab.gpt import GPT, GPTConfig

Q = tasks.LetterCount("scrub", "r")  # a training-word question (answer 1)


@pytest.fixture(scope="module")
def pairs():
    return reward.preference_pairs()


@pytest.fixture(scope="module")
def rm():
    return reward.reward_model()


def test_bradley_terry_loss_by_hand():
    loss = reward.bradley_terry_loss(torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0]))
    by_hand = (math.log(1 + math.exp(-2)) + math.log(2) + math.log(1 + math.exp(2))) / 3  # -log sigmoid(d)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert reward.bradley_terry_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(2))
    with pytest.raises(CourseError, match="same, non-empty shape"):
        reward.bradley_terry_loss(torch.zeros(3), torch.zeros(2))


def test_the_prompt_is_read_back_into_its_task():
    for task in (Q, tasks.Spelling("scrub"), tasks.FirstLetter("scrub"), tasks.LastLetter("scrub"),
                 tasks.WordLength("scrub")):
        assert reward.task_of(task.question) == task
        assert reward.task_of([{"role": "user", "content": task.question}]) == task
    assert reward.task_of("Tell me a story about Tom.") is None
    assert reward.story_subject("Tell me a story about Tom.") == "Tom"


def test_the_labeler_follows_the_guide():
    guide = reward.Labeler(disagreement=0.0, length_bias=0.0)
    right, wrong = Q.answer_text, 'There are 3 \'r\'s in "scrub".'
    assert guide.prefer(Q.question, right, wrong) == 0 and guide.prefer(Q.question, wrong, right) == 1
    other_word = 'There is 1 \'r\' in "tree".'  # right number, but about another word: still graded right
    assert guide.quality(Q.question, right) - guide.quality(Q.question, other_word) == pytest.approx(0.3)
    assert guide.quality(Q.question, "You are stupid. There is 1 'r' in \"scrub\".") < guide.quality(Q.question, wrong)
    story = "Tell me a story about Tom."
    assert guide.prefer(story, "Tom went to the park. He played.", "Sue sat sat sat sat sat sat sat sat") == 0


def test_the_labelers_flaws_are_the_ones_set():
    short, long = 'There are 3 \'r\'s in "scrub".', 'There are 3 \'r\'s in "scrub", I counted them all very carefully.'
    fond = reward.Labeler(disagreement=0.0, length_bias=0.03)
    assert fond.margin(Q.question, long, short) == pytest.approx(0.03 * 6)  # six more words
    assert fond.prefer(Q.question, long, short) == 0  # equal by the guide, longer wins
    assert reward.Labeler(disagreement=0.0, length_bias=0.0).margin(Q.question, long, short) == 0
    # a wrong answer made long enough beats a right one: the flaw notebook 10 exploits
    padded = short[:-1] + " and " + "so on " * 20 + "."
    assert fond.prefer(Q.question, padded, Q.answer_text) == 0
    # the slips happen at the rate set, the same each time, whichever side an answer is shown on
    noisy = reward.Labeler(disagreement=0.2, length_bias=0.0, seed=3)
    wrong = [f"There are {n} 'r's in \"scrub\"{'!' * k}" for n in (0, 2, 3, 4) for k in range(50)]
    slips = [noisy.prefer(Q.question, Q.answer_text, w) for w in wrong]
    assert 0.15 < sum(slips) / len(slips) < 0.25
    assert slips == [noisy.prefer(Q.question, Q.answer_text, w) for w in wrong]
    assert [1 - noisy.prefer(Q.question, w, Q.answer_text) for w in wrong] == slips


def test_bad_pairs_are_refused():
    labeler = reward.Labeler()
    with pytest.raises(CourseError, match="empty"):
        labeler.prefer(Q.question, "  ", Q.answer_text)
    with pytest.raises(CourseError, match="identical"):
        labeler.prefer(Q.question, Q.answer_text, Q.answer_text)
    with pytest.raises(CourseError, match="disagreement"):
        reward.Labeler(disagreement=0.7)
    with pytest.raises(CourseError, match="same, non-empty|equally long"):
        reward.agreement([0, 1], [0])


def test_pairs_are_a_dataset_dict_that_never_draws_a_held_out_word(pairs):
    from datasets import DatasetDict

    assert isinstance(pairs, DatasetDict) and set(pairs) == {"train", "test"}
    for split in pairs.values():
        assert {"prompt", "chosen", "rejected"} <= set(split.column_names)
        assert all(c.strip() and r.strip() and c.strip() != r.strip() for c, r in zip(split["chosen"], split["rejected"]))
    held_out = set(tasks.word_split().held_out)
    words = {w for split in pairs.values() for w in split["word"] if w}
    assert words and not words & held_out
    for split in pairs.values():  # the word read back from the prompt, not the column: no held-out word anywhere
        for prompt in split["prompt"]:
            task = reward.task_of(prompt)
            assert task is None or task.word not in held_out
    assert not set(pairs["train"]["word"]) & set(pairs["test"]["word"]) - {""}
    labeler = reward.Labeler(**reward.PAIRS_CONFIG["labeler"])
    row = pairs["train"][0]
    assert labeler.prefer(row["prompt"], row["chosen"], row["rejected"]) == 0  # the labels are the labeler's


def test_score_is_batched_and_matches_one_at_a_time(rm, pairs):
    test = pairs["test"]
    prompts, answers = list(test["prompt"][:6]), list(test["chosen"][:6])
    batched = rm.score(prompts, answers)
    alone = torch.cat([rm.score([p], [a]) for p, a in zip(prompts, answers)])
    assert batched.shape == (6,)
    assert torch.allclose(batched, alone, atol=1e-5)
    chat_form = rm.score([[{"role": "user", "content": p}] for p in prompts], answers)
    assert torch.allclose(batched, chat_form, atol=1e-6)


def test_the_transformers_twin_gives_the_same_scores(rm, pairs, tmp_path):
    from transformers import AutoModelForSequenceClassification, GPT2ForSequenceClassification

    prompts, answers = list(pairs["test"]["prompt"][:5]), list(pairs["test"]["rejected"][:5])
    ours = rm.score(prompts, answers)
    folder = reward.export_transformers(rm, tmp_path / "reward-transformers")
    hf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert isinstance(hf, GPT2ForSequenceClassification) and hf.config.num_labels == 1
    theirs = reward.transformers_scores(hf, rm, prompts, answers)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours, theirs)


def test_text_past_the_window_is_cut_by_the_rule_and_said(tokenizer, capsys):
    torch.manual_seed(0)
    model = reward.RewardModel(GPT(GPTConfig(vocab_size=len(tokenizer), block_size=48, n_layer=1, n_head=2,
                                             n_embd=16)), tokenizer)
    long_answer = "There are many letters here. " * 20
    encoded = model.encode(Q.question, long_answer)
    end, last = tokenizer.convert_tokens_to_ids(["<|end|>", reward.REWARD_TOKEN])
    assert encoded.truncated and len(encoded.ids) == 48 and encoded.ids[-2:] == [end, last]
    prompt = reward.chat.prompt_ids(tokenizer, [{"role": "user", "content": Q.question}])
    assert encoded.ids[:len(prompt)] == prompt  # the prompt kept whole, the completion's first tokens after it
    assert encoded.ids[len(prompt):-2] == tokenizer.encode(long_answer, add_special_tokens=False)[:48 - len(prompt) - 2]
    assert not model.encode(Q.question, "One.").truncated
    model.score([Q.question, Q.question], [long_answer, "One."])
    assert "1 of 2 texts did not fit" in capsys.readouterr().out
    assert model.last_truncated == [True, False]
    with pytest.raises(CourseError, match="context window"):
        model.encode("How many letters are in this very long question? " * 10, "One.")
    with pytest.raises(CourseError, match="empty"):
        model.score([Q.question], [""])
    with pytest.raises(CourseError, match="as many prompts as completions"):
        model.score([Q.question], ["a", "b"])


def test_best_of_n_curve_by_hand():
    questions = [tasks.LetterCount("scrub", "r"), tasks.LetterCount("scrub", "z")]  # answers 1 and 0
    samples = [["2", "1", "3", "1"], ["5", "4", "0", "2"]]
    scores = torch.tensor([[0.0, 1.0, 2.0, 0.5], [3.0, 0.0, 1.0, 4.0]])
    rows = reward.best_of_n_curve(questions, samples, scores, [1, 2, 4])
    # the grader: any right among n (pass@n); question 1 has 2 right of 4, question 2 has 1 right of 4
    assert [r["grader"] for r in rows] == pytest.approx([(2 / 4 + 1 / 4) / 2, ((1 - 1 / 6) + (1 - 3 / 6)) / 2, 1.0])
    # the reward model: the top-scored of n. Question 1: its right answers (scores 1 and 0.5) beat 2 and 1 others;
    # question 2: its right answer (score 1) beats 1 other. A pair {j, k} is 1 of the 6 pairs of 4.
    assert [r["reward model"] for r in rows] == pytest.approx([(2 / 4 + 1 / 4) / 2, ((2 + 1) / 6 + 1 / 6) / 2, 0.0])


def test_best_of_n_returns_one_answer_per_prompt(rm, tokenizer):
    model = sft.sft_model()
    prompts = [q.question for q in tasks.heldout_questions(3)]
    g = torch.Generator().manual_seed(0)
    samples = reward.sample_answers(model, tokenizer, prompts, 4, generator=g, max_new_tokens=12)
    best, scores = reward.pick_best(rm, prompts, samples)
    assert len(best) == 3 and scores.shape == (3, 4)
    assert all(b == s[int(row.argmax())] for b, s, row in zip(best, samples, scores))
    assert len(reward.best_of_n(model, tokenizer, rm, prompts, 2, max_new_tokens=12)) == 3


def test_correctness_pairs_keep_one_right_answer_and_put_it_first(pairs):
    clean = reward.correctness_pairs(pairs["train"])
    assert len(clean) == sum(c >= 0 and c != r for c, r in zip(pairs["train"]["chosen_correct"],
                                                                pairs["train"]["rejected_correct"]))
    for row in clean:
        task = reward.task_of(row["prompt"])
        assert task.grade(row["chosen"]) and not task.grade(row["rejected"])


def test_a_labeling_session_counts_agreement_with_the_coded_labeler():
    labeler = reward.Labeler(disagreement=0.0, length_bias=0.0)
    rows = [{"prompt": Q.question, "chosen": Q.answer_text, "rejected": f"There are {n} 'r's in \"scrub\"."}
            for n in (0, 2, 3, 4)]
    session = reward.LabelingSession(rows, labeler, seed=1)
    assert "0 of 4" in session.summary()
    for item in session.items[:3]:  # the person picks the right answer on three pairs
        session.choose("A" if item["A"] == Q.answer_text else "B")
    item = session.items[3]
    session.choose("B" if item["A"] == Q.answer_text else "A")  # and the wrong one on the last
    assert session.coded() == [0 if i["A"] == Q.answer_text else 1 for i in session.items]
    assert "4 of 4 pairs labeled" in session.summary() and "75%" in session.summary()
    assert session.current is None
    with pytest.raises(CourseError, match="every pair"):
        session.choose("A")
    with pytest.raises(CourseError, match="choose 'A'"):
        reward.LabelingSession(rows, labeler).choose("C")
    assert {i["A"] == Q.answer_text for i in reward.LabelingSession(rows * 5, labeler).items} == {True, False}


def test_the_bias_probe_pads_and_restyles_the_same_answers(rm):
    probe = reward.bias_probe(rm, [Q.question, Q.question], [Q.answer_text, "  "])
    assert list(probe["answer"]) == [Q.answer_text]  # the empty answer is left out
    padded = rm.score([Q.question], [Q.answer_text.rstrip(".") + "." + reward.PADDING])
    assert probe["padded"][0] == pytest.approx(float(padded[0]), abs=1e-5)
    assert probe["original"][0] == pytest.approx(float(rm.score([Q.question], [Q.answer_text])[0]), abs=1e-5)


# --- any input: a result or a readable refusal (as tests/unit/test_bad_input.py asks of every public door) -----

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANY_TEXT = st.one_of(st.text(max_size=60), st.none(), st.integers(), st.sampled_from(["", " ", "<|end|>", "🍓", Q.question]))


@FEW
@given(prompt=ANY_TEXT, a=ANY_TEXT, b=ANY_TEXT)
def test_the_labeler_answers_or_refuses_any_input(prompt, a, b, refused_or_ok):
    labeler = reward.Labeler()
    choice = refused_or_ok(lambda: labeler.prefer(prompt, a, b))
    assert choice in (None, 0, 1)
    if choice is not None:
        assert labeler.prefer(prompt, b, a) == 1 - choice


@FEW
@given(d=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.none(), st.text(max_size=3)),
       bias=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none()))
def test_labeler_settings_are_checked(d, bias, refused_or_ok):
    made = refused_or_ok(lambda: reward.Labeler(disagreement=d, length_bias=bias))
    if made is not None:
        assert 0 <= made.disagreement <= 0.5 and 0 <= made.length_bias <= 10


@pytest.fixture(scope="module")
def tiny_rm(tokenizer):
    torch.manual_seed(0)
    return reward.RewardModel(GPT(GPTConfig(vocab_size=len(tokenizer), block_size=48, n_layer=1, n_head=2,
                                            n_embd=16)), tokenizer)


@FEW
@given(prompt=ANY_TEXT, completion=ANY_TEXT)
def test_score_gives_a_finite_reward_or_refuses(tiny_rm, prompt, completion, refused_or_ok):
    got = refused_or_ok(lambda: tiny_rm.score([prompt], [completion], report=False))
    if got is not None:
        assert got.shape == (1,) and torch.isfinite(got).all()


@FEW
@given(rows=st.one_of(st.none(), st.text(max_size=5), st.integers(), st.lists(st.one_of(st.none(), st.integers(),
       st.fixed_dictionaries({"prompt": st.just(Q.question), "chosen": st.just("1"), "rejected": st.just("2")})),
       max_size=3)))
def test_a_labeling_session_takes_pairs_or_refuses(rows, refused_or_ok):
    session = refused_or_ok(lambda: reward.LabelingSession(rows, reward.Labeler()))
    if session is not None:
        assert session.current is not None and "0 of" in session.summary()
