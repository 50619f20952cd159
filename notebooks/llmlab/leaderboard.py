"""An arena leaderboard (notebooks 09 and 12): models answer the same prompts, a judge decides pairwise battles,
ratings come out, as on public LLM arenas (LMSYS Chatbot Arena).

    battles = run_battles(answers, prompts, judge)     one row per (prompt, pair of models): who won
    online_elo(battles, k=4, seed=...)                 chess-style Elo, updated battle by battle (order matters)
    bradley_terry(battles, bootstrap=200)              one maximum-likelihood fit of all battles, with intervals
    bradley_terry(battles, style="length")             the same with a length covariate: "style control"
    arena(answers, prompts, judge)                     all of it as one table (the function notebook 12 reuses)

A judge scores each answer on its own: `grader_judge(questions)` (the exact grader of llmlab.tasks: 1 right,
0 wrong) or `reward_judge(rm)` (the reward model's score). The higher score wins a battle; equal scores are a tie,
counted as half a win for each side (as the arena does).

Ratings are on the Elo scale: a gap of 400 points means the stronger side wins 10 times out of 11
(P = 1 / (1 + 10^(-gap / 400))); the mean rating is 1000.
"""

import itertools
import math
import random
from typing import Callable

import numpy as np
import pandas as pd
import torch

from llmlab.checks import NOT_DONE, CourseError, check_number, check_positive_int, learner_call

SCALE = 400.0  # Elo points per factor of 10 in the odds
BASE = 1000.0  # the mean rating
BATTLE_COLUMNS = ("prompt", "model_a", "model_b", "winner", "length_a", "length_b")


def expected_score(rating_a: float, rating_b: float) -> float:
    """The chance that a beats b under the Elo model: 1 / (1 + 10^((rating_b - rating_a) / 400))."""
    return 1.0 / (1.0 + 10 ** ((rating_b - rating_a) / SCALE))


def _check_battles(battles) -> pd.DataFrame:
    if not isinstance(battles, pd.DataFrame) or not {"model_a", "model_b", "winner"} <= set(battles.columns):
        raise CourseError("battles must be a pandas DataFrame with the columns model_a, model_b and winner "
                          "('model_a', 'model_b' or 'tie'), as run_battles makes")
    if battles.empty:
        raise CourseError("there are no battles to rate")
    bad = set(battles["winner"]) - {"model_a", "model_b", "tie"}
    if bad:
        raise CourseError(f"winner must be 'model_a', 'model_b' or 'tie', not {sorted(map(repr, bad))[:3]}")
    if (battles["model_a"] == battles["model_b"]).any():
        raise CourseError("a model cannot battle itself: model_a and model_b must differ in every row")
    return battles


def models_of(battles) -> list[str]:
    battles = _check_battles(battles)
    return sorted(set(battles["model_a"]) | set(battles["model_b"]))


def _score_a(winner: str) -> float:
    return {"model_a": 1.0, "model_b": 0.0, "tie": 0.5}[winner]


# --- online Elo ---------------------------------------------------------------------------------------------------

def online_elo(battles, *, k: float = 4.0, seed: int | None = None) -> pd.Series:
    """Elo ratings from updating after each battle in turn: r_a += k * (score_a - expected_score(r_a, r_b)).

    The result depends on the ORDER of the battles (the last ones move the ratings most): seed=None keeps the
    order given, a seed shuffles it first. A small k means slow, steady ratings; a large one, jumpy ones.
    """
    battles = _check_battles(battles)
    check_number("k", k, minimum=0, strict_minimum=True, maximum=400)
    rows = list(zip(battles["model_a"], battles["model_b"], battles["winner"]))
    if seed is not None:
        random.Random(seed).shuffle(rows)
    ratings = {m: BASE for m in models_of(battles)}
    for a, b, winner in rows:
        expected = expected_score(ratings[a], ratings[b])
        change = k * (_score_a(winner) - expected)
        ratings[a] += change
        ratings[b] -= change
    return pd.Series(ratings, name="online Elo").sort_values(ascending=False)


# --- Bradley-Terry ------------------------------------------------------------------------------------------------

STYLES = {"length": ("length_a", "length_b")}


def _design(battles, models: list[str], style: str | None):
    """Rows for logistic regression: +1 for model_a, -1 for model_b (and the style covariate); a tie becomes
    half a win for each side (two rows of weight 0.5)."""
    index = {m: i for i, m in enumerate(models)}
    n = len(battles)
    x = np.zeros((n, len(models)))
    x[np.arange(n), battles["model_a"].map(index).to_numpy()] = 1.0
    x[np.arange(n), battles["model_b"].map(index).to_numpy()] = -1.0
    if style is not None:
        a, b = (battles[c].to_numpy(dtype=float) for c in STYLES[style])
        # the normalised difference LMSYS uses, then centred and scaled to unit spread
        diff = (a - b) / np.maximum(a + b, 1.0)
        spread = diff.std() or 1.0
        x = np.column_stack([x, diff / spread])
    score = battles["winner"].map(_score_a).to_numpy()
    xs = np.concatenate([x, x])
    ys = np.concatenate([np.ones(n), np.zeros(n)])
    ws = np.concatenate([score, 1.0 - score])
    keep = ws > 0
    return xs[keep], ys[keep], ws[keep]


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float) -> np.ndarray:
    """Weighted logistic regression without intercept, by Newton's method (a small L2 keeps it finite)."""
    beta = np.zeros(x.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(x @ beta)))
        grad = x.T @ (w * (p - y)) + l2 * beta
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(beta))
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return beta


def _to_elo(beta: np.ndarray) -> np.ndarray:
    ratings = beta * SCALE / math.log(10)
    return ratings - ratings.mean() + BASE


def bradley_terry(battles, *, bootstrap: int = 0, seed: int = 0, style: str | None = None,
                  l2: float = 1e-2, confidence: float = 0.95) -> pd.DataFrame:
    """Ratings from one Bradley-Terry fit of all battles: P(a beats b) = sigmoid(beta_a - beta_b).

    Unlike online Elo the result does not depend on the order of the battles. bootstrap > 0 refits on that many
    resamplings of the battles (with replacement) for a confidence interval per model. style="length" adds the
    answers' normalised length difference as a covariate ("style control"): the ratings then say how good a model
    is at equal length, and `attrs["style_coefficient"]` how much length alone sways the judge (in log-odds per
    standard deviation of the length difference).
    """
    battles = _check_battles(battles)
    if style is not None and style not in STYLES:
        raise CourseError(f"unknown style covariate {style!r}; the covariates are {list(STYLES)}")
    if style is not None and not set(STYLES[style]) <= set(battles.columns):
        raise CourseError(f"style={style!r} needs the columns {STYLES[style]} in the battles")
    check_positive_int("bootstrap", bootstrap, minimum=0, maximum=10_000)
    check_number("confidence", confidence, minimum=0.5, maximum=0.999)
    models = models_of(battles)
    beta = _fit(*_design(battles, models, style), l2)
    table = pd.DataFrame({"rating": _to_elo(beta[:len(models)])}, index=pd.Index(models, name="model"))
    if bootstrap:
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(bootstrap):
            resampled = battles.iloc[rng.integers(0, len(battles), len(battles))]
            fitted = _fit(*_design(resampled, models, style), l2)
            samples.append(_to_elo(fitted[:len(models)]))
        samples = np.array(samples)
        tail = (1 - confidence) / 2 * 100
        table["lower"] = np.percentile(samples, tail, axis=0)
        table["upper"] = np.percentile(samples, 100 - tail, axis=0)
    table = table.sort_values("rating", ascending=False)
    table.attrs["style_coefficient"] = float(beta[-1]) if style is not None else None
    return table


# --- judges and battles -------------------------------------------------------------------------------------------

Judge = Callable[[list, list[str]], list[float]]


def grader_judge(questions) -> Judge:
    """The exact grader as a judge: 1.0 for a right answer, 0.0 for a wrong one (prompts must be the questions)."""
    by_text = {q.question: q for q in questions}

    def judge(prompts, answers):
        missing = [p for p in prompts if p not in by_text]
        if missing:
            raise CourseError(f"the grader has no question for the prompt {missing[0]!r:.80}")
        return [float(by_text[p].grade(a)) for p, a in zip(prompts, answers)]

    judge.name = "exact grader"
    return judge


def reward_judge(rm) -> Judge:
    """The reward model as a judge: its score of each answer (an empty answer scores -inf)."""

    def judge(prompts, answers):
        keep = [i for i, a in enumerate(answers) if isinstance(a, str) and a.strip()]
        scores = [float("-inf")] * len(answers)
        if keep:
            got = rm.score([prompts[i] for i in keep], [answers[i] for i in keep])
            for i, s in zip(keep, got.tolist()):
                scores[i] = s
        return scores

    judge.name = "reward model"
    return judge


def _check_answers(answers: dict, prompts) -> tuple[dict, list]:
    if not isinstance(answers, dict) or len(answers) < 2:
        raise CourseError("answers must be a dict {model name: list of answers} with at least two models")
    prompts = list(prompts)
    if not prompts:
        raise CourseError("there are no prompts: give the prompts every model answered")
    for name, got in answers.items():
        if not isinstance(name, str) or not name:
            raise CourseError(f"model names must be non-empty text, not {name!r}")
        if isinstance(got, str) or len(got) != len(prompts):
            raise CourseError(f"model {name!r} has {len(got)} answers for {len(prompts)} prompts; give one each, "
                              "in the prompts' order")
    return answers, prompts


def select(answers: dict, models) -> dict:
    """The answers of the named models only; an unknown name is refused with the names there are."""
    if models is None:
        return answers
    unknown = [m for m in models if m not in answers]
    if unknown:
        raise CourseError(f"unknown model {unknown[0]!r} on the leaderboard; the models are {list(answers)}")
    return {m: answers[m] for m in models}


def run_battles(answers: dict, prompts, judge: Judge, *, models=None) -> pd.DataFrame:
    """Every pair of models on every prompt, judged: a DataFrame with BATTLE_COLUMNS (lengths in words).

    The judge scores each answer once; the higher score wins, equal scores tie. Sides are alternated so that
    neither model_a nor model_b is always the same model.
    """
    answers, prompts = _check_answers(select(answers, models), prompts)
    scores = {name: judge(prompts, list(got)) for name, got in answers.items()}
    rows = []
    for pair_index, (a, b) in enumerate(itertools.combinations(answers, 2)):
        for i, prompt in enumerate(prompts):
            x, y = (a, b) if (i + pair_index) % 2 == 0 else (b, a)
            sx, sy = scores[x][i], scores[y][i]
            winner = "model_a" if sx > sy else "model_b" if sy > sx else "tie"
            rows.append({"prompt": prompt if isinstance(prompt, str) else str(prompt), "model_a": x, "model_b": y,
                         "winner": winner, "length_a": len(str(answers[x][i]).split()),
                         "length_b": len(str(answers[y][i]).split())})
    return pd.DataFrame(rows, columns=list(BATTLE_COLUMNS))


def leaderboard_table(battles, *, k: float = 4.0, bootstrap: int = 200, seed: int = 0,
                      shuffles: int = 20) -> pd.DataFrame:
    """One table: Bradley-Terry rating with its interval, the length-controlled rating, online Elo (in the
    given order) and its spread over `shuffles` shuffled orders, win rate and mean answer length."""
    battles = _check_battles(battles)
    bt = bradley_terry(battles, bootstrap=bootstrap, seed=seed)
    table = bt.rename(columns={"rating": "Bradley-Terry", "lower": "BT lower", "upper": "BT upper"})
    if {"length_a", "length_b"} <= set(battles.columns):
        styled = bradley_terry(battles, style="length")
        table["length-controlled"] = styled["rating"]
        table.attrs["style_coefficient"] = styled.attrs["style_coefficient"]
    table["online Elo"] = online_elo(battles, k=k)
    if shuffles:
        runs = pd.DataFrame([online_elo(battles, k=k, seed=seed + s) for s in range(shuffles)])
        table["online Elo min"], table["online Elo max"] = runs.min(), runs.max()
    long = pd.concat([
        pd.DataFrame({"model": battles["model_a"], "score": battles["winner"].map(_score_a),
                      "length": battles.get("length_a", 0)}),
        pd.DataFrame({"model": battles["model_b"], "score": 1 - battles["winner"].map(_score_a),
                      "length": battles.get("length_b", 0)})])
    grouped = long.groupby("model")
    table["win rate"] = grouped["score"].mean()
    table["battles"] = grouped.size()
    if {"length_a", "length_b"} <= set(battles.columns):
        table["mean words"] = grouped["length"].mean()
    return table


def arena(answers: dict, prompts, judge: Judge, *, models=None, k: float = 4.0, bootstrap: int = 200,
          seed: int = 0, shuffles: int = 20) -> pd.DataFrame:
    """The leaderboard of named models' answers to the same prompts under one judge: battles, then ratings."""
    battles = run_battles(answers, prompts, judge, models=models)
    table = leaderboard_table(battles, k=k, bootstrap=bootstrap, seed=seed, shuffles=shuffles)
    table.attrs["judge"] = getattr(judge, "name", "judge")
    table.attrs["battles"] = battles
    return table


# --- the course's contestants ------------------------------------------------------------------------------------

CONTESTANTS = ("bigram", "base", "sft", "persona", "merged", "best-of-n")


def course_answers(names, prompts, *, rm=None, n: int = 16, max_new_tokens: int = 40, seed: int = 0) -> dict:
    """Answers of the course's models to the same prompts (questions as text), by name:

        bigram     notebook 00's character bigram of Shakespeare, continuing the question (60 characters)
        base       notebook 06's base model, given the chat template (greedy)
        sft, persona, merged   notebook 08's models (greedy)
        best-of-n  n sampled SFT answers, the one the reward model rm scores highest (named "best-of-<n>")

    An unknown name is refused with the names there are. Notebook 12 adds its own models to the dict.
    """
    from llmlab import bigram, corpora, reward, sft
    from llmlab.pretraining import base_model
    from llmlab.tokenizer import course_tokenizer

    unknown = [m for m in names if m not in CONTESTANTS]
    if unknown:
        raise CourseError(f"unknown model {unknown[0]!r} on the leaderboard; the course's models are "
                          f"{list(CONTESTANTS)}")
    if "best-of-n" in names and rm is None:
        raise CourseError("best-of-n needs the reward model: pass rm=reward.reward_model()")
    prompts = [str(p) for p in prompts]
    tokenizer = course_tokenizer()
    models = {"base": base_model, "sft": sft.sft_model, "persona": sft.persona_model, "merged": sft.merged_model}
    answers = {}
    for name in names:
        if name == "bigram":
            text = corpora.shakespeare()
            model = bigram.CharBigram(text[:int(0.9 * len(text))])  # notebook 00's split
            known = [''.join(c for c in p if c in model.index) or "\n" for p in prompts]
            answers[name] = [model.complete(p, 60, seed=seed + i)[len(p):] for i, p in enumerate(known)]
        elif name == "best-of-n":
            generator = torch.Generator().manual_seed(seed)
            answers[f"best-of-{n}"] = reward.best_of_n(sft.sft_model(), tokenizer, rm, prompts, n,
                                                      max_new_tokens=max_new_tokens, generator=generator)
        else:
            answers[name] = sft.replies(models[name](), tokenizer, prompts, max_new_tokens=max_new_tokens)
    return answers


# --- a league whose strengths are known (for tests and the notebook's check) -----------------------------------------

def synthetic_battles(strengths: dict[str, float], n: int, *, seed: int = 0, tie_share: float = 0.0) -> pd.DataFrame:
    """n battles between random pairs of models whose true Elo ratings are `strengths`: a win drawn with the
    Elo probability; a share of battles drawn as ties. For checking that a rating method recovers the truth."""
    check_positive_int("n", n, maximum=10_000_000)
    check_number("tie_share", tie_share, minimum=0, maximum=1)
    if len(strengths) < 2:
        raise CourseError("a league needs at least two models")
    rng = random.Random(seed)
    names = list(strengths)
    rows = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        if rng.random() < tie_share:
            winner = "tie"
        else:
            winner = "model_a" if rng.random() < expected_score(strengths[a], strengths[b]) else "model_b"
        rows.append({"prompt": "", "model_a": a, "model_b": b, "winner": winner, "length_a": 1, "length_b": 1})
    return pd.DataFrame(rows, columns=list(BATTLE_COLUMNS))


def check_elo_update(fn) -> bool:
    """Exercise: fn(rating_a, rating_b, score_a, k) -> (new_a, new_b), the online Elo update. Checked on cases."""
    cases = [(1000, 1000, 1.0, 32), (1200, 1000, 0.0, 32), (1000, 1400, 0.5, 16), (1500, 1100, 1.0, 4)]
    for ra, rb, score, k in cases:
        expected = expected_score(ra, rb)
        want = (ra + k * (score - expected), rb - k * (score - expected))
        got = learner_call(fn, ra, rb, score, k, not_done=(
            "Not done yet: the expected score of a is 1 / (1 + 10 ** ((rating_b - rating_a) / 400)); "
            "a gains k * (score_a - expected), and b loses the same."))
        if got is NOT_DONE:
            return False
        try:
            ok = len(got) == 2 and all(math.isclose(float(g), w, abs_tol=1e-6) for g, w in zip(got, want))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            print(f"✗ for ratings {ra} and {rb}, score {score}, k={k} you give {got!r:.60}; "
                  f"it should be ({want[0]:.2f}, {want[1]:.2f})")
            return False
    print(f"✓ your Elo update matches on {len(cases)} battles")
    return True

