"""The arena leaderboard: Elo and Bradley-Terry against known strengths, hand values, style control, refusals."""

import math

import numpy as np
import pandas as pd
import pytest

from llmlab import leaderboard, tasks
from llmlab.checks import CourseError

TRUE = {"strong": 1200.0, "good": 1080.0, "fair": 1000.0, "weak": 880.0, "poor": 840.0}


@pytest.fixture(scope="module")
def league():
    return leaderboard.synthetic_battles(TRUE, 6000, seed=1)


def test_expected_score_by_hand():
    assert leaderboard.expected_score(1000, 1000) == 0.5
    assert leaderboard.expected_score(1400, 1000) == pytest.approx(10 / 11)  # 400 points: 10 to 1 odds
    assert leaderboard.expected_score(1000, 1400) == pytest.approx(1 / 11)


def test_one_online_update_by_hand():
    battles = pd.DataFrame([{"model_a": "x", "model_b": "y", "winner": "model_a"}])
    ratings = leaderboard.online_elo(battles, k=32)
    assert ratings["x"] == pytest.approx(1016.0) and ratings["y"] == pytest.approx(984.0)


def test_elo_and_bradley_terry_agree_on_a_league_of_known_strengths(league):
    truth = pd.Series(TRUE) - np.mean(list(TRUE.values())) + 1000
    bt = leaderboard.bradley_terry(league, bootstrap=50, seed=0)
    online = leaderboard.online_elo(league, k=4, seed=0)
    order = list(truth.sort_values(ascending=False).index)
    assert list(bt.index) == order
    assert list(online.index) == order
    assert (bt["rating"] - truth[bt.index]).abs().max() < 25
    assert (online - truth[online.index]).abs().max() < 60
    assert ((bt["lower"] <= truth[bt.index]) & (truth[bt.index] <= bt["upper"])).sum() >= 4
    assert (bt["lower"] <= bt["rating"]).all() and (bt["rating"] <= bt["upper"]).all()


def test_online_elo_depends_on_the_order_bradley_terry_does_not(league):
    a, b = leaderboard.online_elo(league, seed=1), leaderboard.online_elo(league, seed=2)
    assert (a - b[a.index]).abs().max() > 1
    shuffled = league.sample(frac=1.0, random_state=3)
    x, y = leaderboard.bradley_terry(league), leaderboard.bradley_terry(shuffled)
    assert np.allclose(x["rating"], y.loc[x.index, "rating"], atol=1e-6)


def test_ties_are_half_a_win():
    battles = pd.DataFrame([{"model_a": "x", "model_b": "y", "winner": "tie"}] * 10)
    bt = leaderboard.bradley_terry(battles)
    assert bt.loc["x", "rating"] == pytest.approx(bt.loc["y", "rating"])
    assert leaderboard.online_elo(battles)["x"] == pytest.approx(1000)


def test_style_control_takes_the_credit_that_length_earned():
    """Two models of equal quality; the judge prefers the longer answer and 'verbose' always writes more."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3000):
        la, lb = int(rng.integers(5, 40)), int(rng.integers(5, 40))
        a, b = ("verbose", "terse") if i % 2 else ("terse", "verbose")
        la, lb = (la + 20, lb) if a == "verbose" else (la, lb + 20)
        p_a = 1 / (1 + math.exp(-3 * (la - lb) / (la + lb)))  # the judge only likes length
        rows.append({"model_a": a, "model_b": b, "winner": "model_a" if rng.random() < p_a else "model_b",
                     "length_a": la, "length_b": lb})
    battles = pd.DataFrame(rows)
    plain = leaderboard.bradley_terry(battles)
    styled = leaderboard.bradley_terry(battles, style="length")
    assert plain.loc["verbose", "rating"] - plain.loc["terse", "rating"] > 100
    assert abs(styled.loc["verbose", "rating"] - styled.loc["terse", "rating"]) < 40
    assert styled.attrs["style_coefficient"] > 0.5


def test_arena_with_the_grader_ranks_the_model_that_is_right_first():
    questions = tasks.heldout_questions(20)
    answers = {"right": [q.answer_text for q in questions],
               "wrong": [f"There are {q.answer + 1} letters." for q in questions],
               "mixed": [q.answer_text if i % 2 else "no idea" for i, q in enumerate(questions)]}
    table = leaderboard.arena(answers, [q.question for q in questions], leaderboard.grader_judge(questions),
                              bootstrap=20, shuffles=3)
    assert list(table.index) == ["right", "mixed", "wrong"]
    battles = table.attrs["battles"]
    assert len(battles) == 3 * 20
    right_vs_wrong = battles[battles["model_a"].isin(["right", "wrong"]) & battles["model_b"].isin(["right", "wrong"])]
    assert len(right_vs_wrong) == 20
    wins = [(r.model_a if r.winner == "model_a" else r.model_b) for r in right_vs_wrong.itertuples()]
    assert wins == ["right"] * 20
    assert table.loc["right", "win rate"] == pytest.approx(1.0 - 0.5 * 10 / 40)  # ties with "mixed" on 10


def test_bad_input_is_refused_in_one_sentence():
    questions = tasks.heldout_questions(4)
    answers = {"a": ["1"] * 4, "b": ["2"] * 4}
    prompts = [q.question for q in questions]
    with pytest.raises(CourseError, match="unknown model 'c'"):
        leaderboard.run_battles(answers, prompts, leaderboard.grader_judge(questions), models=["a", "c"])
    with pytest.raises(CourseError, match="3 answers for 4 prompts"):
        leaderboard.run_battles({"a": ["1"] * 4, "b": ["2"] * 3}, prompts, leaderboard.grader_judge(questions))
    with pytest.raises(CourseError, match="at least two models"):
        leaderboard.run_battles({"a": ["1"] * 4}, prompts, leaderboard.grader_judge(questions))
    with pytest.raises(CourseError, match="no battles"):
        leaderboard.online_elo(pd.DataFrame(columns=["model_a", "model_b", "winner"]))
    with pytest.raises(CourseError, match="winner must be"):
        leaderboard.bradley_terry(pd.DataFrame([{"model_a": "a", "model_b": "b", "winner": "a"}]))
    with pytest.raises(CourseError, match="unknown style"):
        leaderboard.bradley_terry(leaderboard.synthetic_battles({"a": 1000, "b": 900}, 10), style="font")


def test_the_elo_exercise_checker_accepts_the_update_and_rejects_a_wrong_one(capsys):
    def right(ra, rb, score, k):
        e = 1 / (1 + 10 ** ((rb - ra) / 400))
        return ra + k * (score - e), rb - k * (score - e)

    def wrong(ra, rb, score, k):
        e = 1 / (1 + 10 ** ((ra - rb) / 400))  # sides swapped
        return ra + k * (score - e), rb - k * (score - e)

    assert leaderboard.check_elo_update(right)
    assert not leaderboard.check_elo_update(wrong)
    assert "✗" in capsys.readouterr().out


def test_course_answers_knows_the_course_models_and_refuses_others():
    questions = tasks.heldout_questions(3)
    prompts = [q.question for q in questions]
    answers = leaderboard.course_answers(["bigram", "sft"], prompts)
    assert set(answers) == {"bigram", "sft"} and all(len(a) == 3 for a in answers.values())
    assert all(isinstance(a, str) for a in answers["bigram"])
    with pytest.raises(CourseError, match="unknown model 'gpt-5'"):
        leaderboard.course_answers(["gpt-5"], prompts)
    with pytest.raises(CourseError, match="reward model"):
        leaderboard.course_answers(["best-of-n"], prompts)


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = st.sampled_from(["a", "b", "c", "d"])
BATTLE = st.fixed_dictionaries({"model_a": NAMES, "model_b": NAMES,
                                "winner": st.sampled_from(["model_a", "model_b", "tie", "a", None]),
                                "length_a": st.integers(0, 50), "length_b": st.integers(0, 50)})
BAD = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**6), st.none(), st.text(max_size=3))


@FEW
@given(rows=st.lists(BATTLE, max_size=30), k=BAD, bootstrap=st.one_of(st.integers(-2, 5), BAD))
def test_ratings_are_finite_or_refused_for_any_battles(rows, k, bootstrap, refused_or_ok):
    battles = pd.DataFrame(rows, columns=["model_a", "model_b", "winner", "length_a", "length_b"])
    online = refused_or_ok(lambda: leaderboard.online_elo(battles, k=k))
    if online is not None:
        assert np.isfinite(online).all() and online.mean() == pytest.approx(1000)
    for style in (None, "length"):
        bt = refused_or_ok(lambda: leaderboard.bradley_terry(battles, bootstrap=bootstrap, style=style))
        if bt is not None:
            assert np.isfinite(bt.to_numpy()).all() and bt["rating"].mean() == pytest.approx(1000)


@FEW
@given(names=st.lists(st.one_of(st.text(max_size=8), st.none(), st.integers()), max_size=3))
def test_unknown_contestants_are_refused_before_any_model_runs(names):
    if any(n in leaderboard.CONTESTANTS for n in names):
        return
    if names:
        with pytest.raises(CourseError):
            leaderboard.course_answers(names, ["How many 'a's are in the word \"banana\"?"])
