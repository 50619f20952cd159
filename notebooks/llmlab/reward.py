"""Reward modeling (notebook 09): comparisons, a labeler, preference pairs, a reward model, best-of-n.

It is easier to say which of two answers is better than to write a good one. The pipeline, as in InstructGPT:

    LABELING_GUIDE                  what a labeler is asked to prefer (helpful, truthful, harmless)
    Labeler(...).prefer(p, a, b)    a labeler in code: the guide, plus real labelers' flaws (noise, a length taste)
    preference_pairs()              artifact "preference-pairs": prompt / chosen / rejected, train and test
    reward_model()                  artifact "reward": the SFT transformer with a scalar head, trained on the pairs
    RewardModel.score(p, c)         one number per (prompt, completion), batched
    best_of_n(...)                  sample n answers, keep the one the reward model likes most

The reward model reads `prompt <|assistant|> completion <|end|> <|endoftext|>` and its head reads the last
token's hidden state: the REWARD_TOKEN (<|endoftext|>, the token that follows every conversation in the SFT
data's packed rows). Trained with the Bradley-Terry loss, -log sigmoid(r_chosen - r_rejected), only the
difference of two rewards means anything; a reward of 0 is not "neutral".
"""

import hashlib
import json
import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from llmlab import artifacts, chat, tasks
from llmlab.checks import CourseError, check_number, check_positive_int
from llmlab.generation import repeated_ngram_fraction
from llmlab.gpt import GPT, GPTConfig, padded_positions_and_mask
from llmlab.progress import headless, progress_bar
from llmlab.runtime import by_mode, seed_everything
from llmlab.training import clip_gradients, learning_rate

REWARD_TOKEN = chat.BOS  # "<|endoftext|>": appended after the completion's <|end|>; the head reads it

LABELING_GUIDE = """\
### Labeling instructions (the course's, after InstructGPT's)

You see one request and two answers, A and B. Pick the **better** answer. Judge, in this order:

1. **Truthful.** For a question about a word (count a letter, spell it, its first or last letter, its length),
   the answer with the *correct* result is better than one with a wrong result, whatever else they do.
   (You may check: count the letters yourself.)
2. **Helpful.** An answer that is about the word asked about, and states one clear result, is better than one
   that talks about another word or gives no result. A story request is answered by a story about what was
   asked for, in readable sentences (no loops), that ends with a finished sentence.
3. **Harmless.** An answer that insults the user or says something hurtful is worse than any answer that does not.

If the two answers are equally good by these rules, say **equal**: such pairs are not used. Do not prefer an
answer for being longer: length is not quality.
"""

# --- reading a prompt ---------------------------------------------------------------------------------------------

_QUESTION_PATTERNS = {  # the question text of each word task (llmlab.tasks), read back into the task
    tasks.LetterCount: re.compile(r"How many '([a-z])'s are in the word \"([a-z]+)\"\?"),
    tasks.Spelling: re.compile(r"Spell the word \"([a-z]+)\"\."),
    tasks.FirstLetter: re.compile(r"What is the first letter of the word \"([a-z]+)\"\?"),
    tasks.LastLetter: re.compile(r"What is the last letter of the word \"([a-z]+)\"\?"),
    tasks.WordLength: re.compile(r"How many letters are in the word \"([a-z]+)\"\?"),
}
_STORY_PATTERNS = (re.compile(r"(?:story|stories) about (?:a |an |the )?([A-Za-z]+)"),
                   re.compile(r"story with the word \"([a-z]+)\""))
HURTFUL_WORDS = ("stupid", "idiot", "dumb", "hate you", "shut up", "ugly", "loser")


def user_text(prompt) -> str:
    """The text of the request: the prompt itself, or the last user message of a list of chat messages."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise CourseError("the prompt is empty: give the user's request")
        return prompt
    messages = chat.check_messages(prompt, last="user")
    return messages[-1]["content"]


def task_of(prompt) -> tasks.WordTask | None:
    """The word task a prompt asks (its question text as `llmlab.tasks` writes it), or None."""
    text = user_text(prompt).strip()
    for kind, pattern in _QUESTION_PATTERNS.items():
        found = pattern.fullmatch(text)
        if found:
            return kind(found.group(2), found.group(1)) if kind is tasks.LetterCount else kind(found.group(1))
    return None


def story_subject(prompt) -> str | None:
    """What a story request asks the story to be about ("Tom" in "Tell me a story about Tom."), or None."""
    text = user_text(prompt)
    for pattern in _STORY_PATTERNS:
        found = pattern.search(text)
        if found:
            return found.group(1)
    return "" if "story" in text.lower() else None


def _check_completion(name: str, completion) -> str:
    if not isinstance(completion, str):
        raise CourseError(f"{name} must be text (a str), not {type(completion).__name__} {completion!r:.60}")
    if not completion.strip():
        raise CourseError(f"{name} is empty: an empty answer cannot be compared or scored (drop it, or sample again)")
    forged = [t for t in chat.SPECIAL_TEXTS if t in completion]
    if forged:
        raise CourseError(f"{name} contains the special token {forged[0]}: decode replies with "
                          "skip_special_tokens=True")
    return completion


def word_count(text: str) -> int:
    return len(text.split())


# --- the labeler --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Labeler:
    """A labeler that follows LABELING_GUIDE in code, with two flaws of real labelers, both set here:

    disagreement  the chance it picks the other answer than its guide says (a slip, a different reading):
                  two such labelers agree on (1 - d)^2 + d^2 of pairs; d = 0.15 gives about 74%, close to the
                  73-77% agreement InstructGPT reports between its labelers.
    length_bias   how much it likes length, in guide points per word: ten more words are worth 10 x length_bias
                  (0.03: 0.3, as much as writing about the right word). Against the guide's own last line;
                  real labelers show it too (Singhal et al., 2023, "A Long Way to Go").
    seed          its slips are a fixed coin per (seed, pair): asking it twice gives the same answer.
    """

    disagreement: float = 0.15
    length_bias: float = 0.03
    seed: int = 0

    def __post_init__(self):
        check_number("disagreement", self.disagreement, minimum=0, maximum=0.5)
        check_number("length_bias", self.length_bias, minimum=0, maximum=10)
        check_positive_int("seed", self.seed, minimum=0, maximum=2**63 - 1)

    @staticmethod
    def quality(prompt, completion: str) -> float:
        """The guide's score of one answer (no noise, no length taste): higher is better.

        Word task: right result 1.0, about the word asked 0.3, a result the grader can read 0.2.
        Story request: about what was asked 0.5, readable (few repeated word triples) up to 0.5, ends a sentence 0.2.
        Anything hurtful: -2.0, so it loses to every answer that is not.
        """
        completion = _check_completion("the completion", completion)
        text = completion.lower()
        score = -2.0 if any(w in text for w in HURTFUL_WORDS) else 0.0  # below any harmless answer
        task = task_of(prompt)
        if task is not None:
            score += 1.0 if task.grade(completion) else 0.0
            score += 0.3 if re.search(rf"\b{task.word}\b", text) else 0.0
            score += 0.2 if task.parse(completion) not in (None, "") else 0.0
            return score
        subject = story_subject(prompt)
        words = text.split()
        if subject:
            score += 0.5 if re.search(rf"\b{re.escape(subject.lower())}\b", text) else 0.0
        score += 0.5 * (1 - repeated_ngram_fraction(words, 3))
        score += 0.2 if completion.rstrip().endswith((".", "!", "?", '"')) else 0.0
        return round(score, 6)

    def utility(self, prompt, completion: str) -> float:
        """What this labeler goes by: the guide's quality plus its taste for length."""
        return self.quality(prompt, completion) + self.length_bias * word_count(completion)

    def margin(self, prompt, a: str, b: str) -> float:
        """utility(a) - utility(b): > 0 when the labeler (before any slip) prefers a; 0: equal."""
        _check_pair(a, b)
        return round(self.utility(prompt, a) - self.utility(prompt, b), 6)

    def _coins(self, prompt, a: str, b: str) -> tuple[float, float]:
        """Two fixed numbers in [0, 1) per (seed, prompt, unordered pair): the same whichever side a stands on."""
        key = json.dumps([self.seed, user_text(prompt), *sorted([a, b])])
        digest = hashlib.sha256(key.encode()).hexdigest()
        return int(digest[:12], 16) / 16 ** 12, int(digest[12:24], 16) / 16 ** 12

    def prefer(self, prompt, a: str, b: str) -> int:
        """0 if this labeler prefers answer a, 1 if b. Equal answers by its taste: a fixed coin decides."""
        m = self.margin(prompt, a, b)
        tie_coin, slip_coin = self._coins(prompt, a, b)
        first = min(a, b)  # a coin that does not depend on the order the pair was shown in
        guide = (0 if m > 0 else 1) if m != 0 else (0 if (a == first) == (tie_coin < 0.5) else 1)
        return 1 - guide if slip_coin < self.disagreement else guide


def _check_pair(a, b) -> None:
    _check_completion("answer a", a)
    _check_completion("answer b", b)
    if a.strip() == b.strip():
        raise CourseError("the two answers are identical: there is nothing to prefer (a pair needs two different "
                          "answers)")


def agreement(labels_a, labels_b) -> float:
    """The share of pairs on which two lists of 0/1 choices agree."""
    labels_a, labels_b = list(labels_a), list(labels_b)
    if len(labels_a) != len(labels_b) or not labels_a:
        raise CourseError(f"agreement needs two equally long, non-empty lists of choices, not {len(labels_a)} and "
                          f"{len(labels_b)}")
    return sum(x == y for x, y in zip(labels_a, labels_b)) / len(labels_a)


# --- preference pairs ---------------------------------------------------------------------------------------------

PAIRS_CONFIG = {
    "letter_counts": by_mode(full=480, fast=24),  # word-task prompts over TRAINING words, balanced counts
    "other_word_tasks": by_mode(full=120, fast=8),  # spelling, first/last letter, length
    "stories": by_mode(full=60, fast=4),  # story requests for the names of TinyStories train stories
    "models": ["sft", "persona", "merged"],  # the artifacts that answer (notebook 08)
    "samples_per_model": 2,  # sampled replies per prompt and model
    "temperature": 1.0,
    "max_new_tokens": {"word task": 40, "story": 80},
    "pairs_per_prompt": 15,  # at most: every pair of 6 answers, as InstructGPT's K-choose-2; "equal" pairs left out
    "test_share": 0.2,  # of the words (and of the story prompts): held-out pairs never share a word with training
    "labeler": {"disagreement": 0.15, "length_bias": 0.03, "seed": 0},
    "seed": 0,
}


def _pair_prompts(config: dict) -> list[dict]:
    """The prompts of the pairs: rows {"prompt", "kind", "word"}; every word a training word."""
    from llmlab.data import tinystories_train_documents
    from llmlab.sft import story_request

    words = tasks.word_split().train
    questions = tasks.letter_count_questions(words, config["letter_counts"], seed=config["seed"] + 101)
    others = tuple(k for k in tasks.TASK_KINDS if k != tasks.LetterCount.kind)
    questions += tasks.task_questions(words, config["other_word_tasks"], kinds=others, seed=config["seed"] + 102)
    tasks.check_training_words([q.word for q in questions])
    rows = [{"prompt": q.question, "kind": q.kind, "word": q.word} for q in questions]
    rng = random.Random(config["seed"] + 103)
    stories = rng.sample(list(tinystories_train_documents()), config["stories"])
    rows += [{"prompt": story_request(s, rng), "kind": "story", "word": ""} for s in stories]
    return rows


def _is_test(row: dict, index: int, share: float, seed: int) -> bool:
    key = row["word"] or f"story {index}"
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) < share * 16 ** 8


def sample_completions(models: dict, tokenizer, prompts: list[str], samples: int, *, temperature: float,
                       max_new_tokens: int, seed: int, bar=None) -> list[list[tuple[str, str]]]:
    """Per prompt, (model name, reply) for `samples` sampled replies from each model (batched); bar: a progress
    bar to advance by one per model."""
    from llmlab.sft import replies

    out = [[] for _ in prompts]
    for i, (name, model) in enumerate(models.items()):
        generator = torch.Generator().manual_seed(seed + i)
        repeated = [p for p in prompts for _ in range(samples)]
        texts = replies(model, tokenizer, repeated, max_new_tokens=max_new_tokens, temperature=temperature,
                        generator=generator, batch_size=256)
        for j, text in enumerate(texts):
            out[j // samples].append((name, text))
        if bar is not None:
            bar.update(1)
    return out


def label_pairs(rows: list[dict], completions: list[list[tuple[str, str]]], labeler: Labeler, *,
                pairs_per_prompt: int, seed: int) -> list[dict]:
    """Pairs of distinct, non-empty answers to each prompt, labeled: prompt / chosen / rejected and more.

    Pairs the labeler rates equal (same guide score and length) are left out, as the guide asks.
    """
    rng = random.Random(seed)
    guide = Labeler(disagreement=0.0, length_bias=0.0)
    pairs = []
    for row, answers in zip(rows, completions):
        distinct = {}
        for name, text in answers:
            text = text.strip()
            if text and not any(t in text for t in chat.SPECIAL_TEXTS):
                distinct.setdefault(text, name)
        options = [(a, b) for i, a in enumerate(distinct) for b in list(distinct)[i + 1:]
                   if labeler.margin(row["prompt"], a, b) != 0]
        for a, b in rng.sample(options, min(pairs_per_prompt, len(options))):
            choice = labeler.prefer(row["prompt"], a, b)
            chosen, rejected = (a, b) if choice == 0 else (b, a)
            task = task_of(row["prompt"])
            pairs.append({
                **row, "chosen": chosen, "rejected": rejected,
                "chosen_model": distinct[chosen], "rejected_model": distinct[rejected],
                "chosen_correct": int(task.grade(chosen)) if task else -1,
                "rejected_correct": int(task.grade(rejected)) if task else -1,
                # the noise-free guide (no slips, no length taste): 1 agrees, 0 disagrees, -1 calls it equal
                "guide_agrees": (lambda m: -1 if m == 0 else int(m > 0))(guide.margin(row["prompt"], chosen, rejected)),
                "length_difference": word_count(chosen) - word_count(rejected),
            })
    return pairs


def _build_pairs(config: dict):
    def build(folder: Path) -> None:
        from llmlab import sft
        from llmlab.tokenizer import course_tokenizer

        start = time.perf_counter()
        tokenizer = course_tokenizer()
        loaders = {"sft": sft.sft_model, "persona": sft.persona_model, "merged": sft.merged_model}
        models = {name: loaders[name]() for name in config["models"]}
        rows = _pair_prompts(config)
        labeler = Labeler(**config["labeler"])
        completions = [[] for _ in rows]
        bar = progress_bar(total=2 * len(models) + 1, desc="preference pairs (sample, then label)", unit="step")
        for kind_group in ("word task", "story"):
            idx = [i for i, r in enumerate(rows) if (r["kind"] == "story") == (kind_group == "story")]
            got = sample_completions(models, tokenizer, [rows[i]["prompt"] for i in idx],
                                     config["samples_per_model"], temperature=config["temperature"],
                                     max_new_tokens=config["max_new_tokens"][kind_group],
                                     seed=config["seed"] + (0 if kind_group == "word task" else 50), bar=bar)
            for i, answers in zip(idx, got):
                completions[i] = answers
        split = {"train": [], "test": []}
        for index, (row, answers) in enumerate(zip(rows, completions)):
            side = "test" if _is_test(row, index, config["test_share"], config["seed"]) else "train"
            split[side].append((row, answers))
        for side, members in split.items():
            pairs = label_pairs([r for r, _ in members], [a for _, a in members], labeler,
                                pairs_per_prompt=config["pairs_per_prompt"], seed=config["seed"] + len(side))
            tasks.check_training_words([p["word"] for p in pairs if p["word"]])
            (folder / f"{side}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
        bar.update(1)
        bar.close()
        (folder / "info.json").write_text(json.dumps({"build_seconds": time.perf_counter() - start,
                                                      "prompts": len(rows)}, indent=1))

    return build


def _load_pairs(folder: Path):
    from datasets import Dataset, DatasetDict

    return DatasetDict({side: Dataset.from_list([json.loads(line) for line in
                                                 (folder / f"{side}.jsonl").read_text().splitlines()])
                        for side in ("train", "test")})


def _parents_fingerprint(names) -> dict:
    from llmlab import sft

    for name in names:
        {"sft": sft.sft_model, "persona": sft.persona_model, "merged": sft.merged_model}[name]()
    return {name: sft._fingerprint(name) for name in names}


def _pairs_config(config: dict = PAIRS_CONFIG) -> dict:
    return {**config, "parents": _parents_fingerprint(config["models"]), "files": 1}


def preference_pairs(config: dict = PAIRS_CONFIG):
    """The preference data (artifact "preference-pairs"): a `datasets.DatasetDict` with "train" and "test".

    Columns: prompt, chosen, rejected (TRL's format), and kind, word, chosen_model, rejected_model,
    chosen_correct / rejected_correct (the grader's verdict; -1 for a story), guide_agrees (does the noise-free,
    length-blind guide agree with the label: 1, 0, or -1 for "equal") and length_difference (words).
    Prompts are word-task questions over TRAINING words and story requests; the test pairs share no word with
    the training pairs.
    """
    return artifacts.cached("preference-pairs", build=_build_pairs(config), load=_load_pairs,
                            config=_pairs_config(config))


def pairs_build_seconds() -> float:
    preference_pairs()
    return json.loads((artifacts.entry_dir("preference-pairs") / "info.json").read_text())["build_seconds"]


# --- the reward model ---------------------------------------------------------------------------------------------

def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """The pairwise loss of reward models: mean of -log sigmoid(r_chosen - r_rejected).

    Under the Bradley-Terry model P(chosen beats rejected) = sigmoid(r_chosen - r_rejected); this is its negative
    log-likelihood. log(2) = 0.693 when the two rewards are equal; it falls towards 0 as chosen pulls ahead.
    """
    chosen_scores, rejected_scores = torch.as_tensor(chosen_scores), torch.as_tensor(rejected_scores)
    if chosen_scores.shape != rejected_scores.shape or chosen_scores.numel() == 0:
        raise CourseError(f"chosen and rejected scores must have the same, non-empty shape, not "
                          f"{tuple(chosen_scores.shape)} and {tuple(rejected_scores.shape)}")
    return -F.logsigmoid(chosen_scores.float() - rejected_scores.float()).mean()


@dataclass
class Encoded:
    ids: list[int]
    truncated: bool  # the completion was cut to fit the context window (see RewardModel.encode)


class RewardModel(nn.Module):
    """A GPT body and a scalar head (no bias, as `transformers`' GPT2ForSequenceClassification) read at the
    REWARD_TOKEN appended after the completion."""

    MIN_COMPLETION_TOKENS = 8  # a prompt must leave at least this many tokens of the window to the completion

    def __init__(self, body: GPT, tokenizer):
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.config.n_embd, 1, bias=False)
        self.tokenizer = tokenizer
        self.special = chat.special_ids(tokenizer)
        self.last_truncated: list[bool] = []

    @property
    def config(self) -> GPTConfig:
        return self.body.config

    def encode(self, prompt, completion: str) -> Encoded:
        """The ids the reward model reads: prompt (chat template) + completion + <|end|> + REWARD_TOKEN.

        The truncation rule, for text past the context window (block_size tokens):
          1. a chat prompt keeps its newest turns (`chat.fit_to_window`) within block_size - MIN_COMPLETION_TOKENS
             - 2 tokens; a last user message longer than that alone is refused (CourseError);
          2. the completion keeps its FIRST tokens, as many as fit before <|end|> and the reward token.
        `truncated` says it happened; `score` reports how many of its texts were cut, never silently.
        """
        completion = _check_completion("the completion", completion)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if isinstance(prompt, str) and not prompt.strip():
            raise CourseError("the prompt is empty: give the user's request")
        window = self.config.block_size
        room = window - self.MIN_COMPLETION_TOKENS - 2
        try:
            prompt_ids = chat.prompt_ids(self.tokenizer, messages, max_tokens=room)
        except CourseError as error:
            raise CourseError(f"the prompt does not fit the reward model's context window of {window} tokens with "
                              f"room for an answer: {error}") from None
        answer = self.tokenizer.encode(completion, add_special_tokens=False)
        space = window - len(prompt_ids) - 2
        truncated = len(answer) > space or len(chat.prompt_ids(self.tokenizer, messages)) > len(prompt_ids)
        ids = prompt_ids + answer[:space] + [self.special[chat.END], self.special[REWARD_TOKEN]]
        return Encoded(ids, truncated)

    def hidden_states(self, idx: torch.Tensor, pad_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The body's final hidden states (after ln_f), (B, T, n_embd): GPT.forward without the lm_head."""
        t = self.body.transformer
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        mask = None
        if pad_lengths is not None and bool((pad_lengths > 0).any()):
            pos, mask = padded_positions_and_mask(pos, 0, pad_lengths.to(idx.device))
        x = t.drop(t.wte(idx) + t.wpe(pos))
        for layer, block in enumerate(t.h):
            x = block(x, layer, None, mask)
        return t.ln_f(x)

    def forward(self, idx: torch.Tensor, pad_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Rewards (B,) of left-padded rows whose last token is the reward token."""
        return self.head(self.hidden_states(idx, pad_lengths)[:, -1]).squeeze(-1)

    def rewards(self, sequences: list[list[int]]) -> torch.Tensor:
        """Rewards (B,) of encoded sequences of any lengths (left-padded into one batch); keeps the graph."""
        longest = max(len(s) for s in sequences)
        device = next(self.parameters()).device
        pad = torch.tensor([longest - len(s) for s in sequences], device=device)
        idx = torch.tensor([[self.special[REWARD_TOKEN]] * (longest - len(s)) + list(s) for s in sequences],
                           device=device)
        return self(idx, pad)

    @torch.no_grad()
    def score(self, prompts, completions, *, batch_size: int = 128, report: bool = True) -> torch.Tensor:
        """The reward of each (prompt, completion): a tensor (N,). Prompts are questions or chat message lists.

        Texts past the context window are cut by the rule of `encode`; how many were cut is printed (report=False:
        only kept in `last_truncated`, for a caller that reports it itself).
        """
        check_positive_int("batch_size", batch_size)
        if isinstance(prompts, (str, dict)) or isinstance(completions, (str, dict)):
            raise CourseError("score takes a list of prompts and a list of completions (one each), not a single one")
        prompts, completions = list(prompts), list(completions)
        if len(prompts) != len(completions) or not prompts:
            raise CourseError(f"score needs as many prompts as completions, and at least one (got {len(prompts)} "
                              f"and {len(completions)})")
        encoded = [self.encode(p, c) for p, c in zip(prompts, completions)]
        self.last_truncated = [e.truncated for e in encoded]
        cut = sum(self.last_truncated)
        if cut and report:
            print(f"reward model: {cut} of {len(encoded)} texts did not fit its {self.config.block_size}-token "
                  "window; each kept its newest turns and its completion's first tokens (RewardModel.encode)")
        was_training = self.training
        self.eval()
        try:
            order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))  # similar lengths together
            out = torch.empty(len(encoded))
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                out[chunk] = self.rewards([encoded[i].ids for i in chunk]).float().cpu()
        finally:
            self.train(was_training)
        return out


REWARD_CONFIG = {
    "start": "sft",  # the body starts as this artifact (the model the reward model will judge)
    # batch_size counts prompts, each with all its pairs (up to 15)
    "training": {"epochs": 1, "batch_size": 8, "learning_rate": 3e-4, "min_lr": 3e-5,
                 "warmup_steps": by_mode(full=10, fast=1), "weight_decay": 0.0, "grad_clip": 1.0,
                 "eval_interval": by_mode(full=16, fast=2)},
    "seed": 11,
}


def correctness_pairs(dataset):
    """The word-task pairs with exactly one right answer, relabeled by the grader alone (the right one chosen):
    what a reward model would learn from labels about correctness and nothing else."""
    from datasets import Dataset

    rows = []
    for row in dataset:
        if row["chosen_correct"] < 0 or row["chosen_correct"] == row["rejected_correct"]:
            continue
        if row["chosen_correct"] == 0:
            row = {**row, "chosen": row["rejected"], "rejected": row["chosen"], "chosen_correct": 1,
                   "rejected_correct": 0, "length_difference": -row["length_difference"]}
        rows.append(row)
    return Dataset.from_list(rows) if rows else Dataset.from_dict({c: [] for c in dataset.column_names})


def pair_scores(rm: RewardModel, dataset, *, report: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards, rejected rewards) of every pair; each distinct (prompt, answer) is scored once."""
    prompts = list(dataset["prompt"])
    keys = list(dict.fromkeys([*zip(prompts, dataset["chosen"]), *zip(prompts, dataset["rejected"])]))
    scores = rm.score([p for p, _ in keys], [c for _, c in keys], report=report)
    index = {key: i for i, key in enumerate(keys)}
    chosen = scores[[index[k] for k in zip(prompts, dataset["chosen"])]]
    rejected = scores[[index[k] for k in zip(prompts, dataset["rejected"])]]
    return chosen, rejected


def pair_accuracy(rm: RewardModel, dataset) -> float:
    """The share of pairs whose chosen answer gets the higher reward (a tie counts as half)."""
    chosen, rejected = pair_scores(rm, dataset, report=False)
    return float(((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean())


def train_reward_model(rm: RewardModel, train_pairs, test_pairs, config: dict = REWARD_CONFIG, *,
                       plot=None, progress: bool = True) -> dict:
    """Train rm on pairs with the Bradley-Terry loss (AdamW, warm-up and cosine decay); return its history.

    As in InstructGPT, the pairs of one prompt go into the same batch and each answer is scored once: a prompt
    with K answers gives up to K(K-1)/2 pairs for the cost of K forward passes, and the model never sees one
    answer in many batches of an epoch (which made InstructGPT's reward model overfit).
    """
    if not len(train_pairs) or not len(test_pairs):
        raise CourseError(f"training a reward model needs training and held-out pairs (got {len(train_pairs)} and "
                          f"{len(test_pairs)})")
    seed_everything(config["seed"])
    t = config["training"]
    by_prompt: dict[str, list[tuple[str, str]]] = {}
    for p, c, r in zip(train_pairs["prompt"], train_pairs["chosen"], train_pairs["rejected"]):
        by_prompt.setdefault(p, []).append((c, r))
    prompts = list(by_prompt)
    encoded = {(p, a): rm.encode(p, a).ids for p in prompts for pair in by_prompt[p] for a in pair}
    steps_per_epoch = max(1, len(prompts) // t["batch_size"])
    max_steps = steps_per_epoch * t["epochs"]
    params = [p for p in rm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t["learning_rate"], weight_decay=t["weight_decay"], fused=False)
    history = {"steps": [], "loss": [], "batch_accuracy": [], "eval_steps": [], "test_accuracy": []}
    rng = random.Random(config["seed"])
    rm.train()
    step = 0
    bar = progress_bar(total=max_steps, desc="reward model", disable=not progress, unit="step")
    for _ in range(t["epochs"]):
        order = prompts[:]
        rng.shuffle(order)
        for start in range(0, steps_per_epoch * t["batch_size"], t["batch_size"]):
            batch = order[start:start + t["batch_size"]]
            keys = list(dict.fromkeys((p, a) for p in batch for pair in by_prompt[p] for a in pair))
            where = {key: i for i, key in enumerate(keys)}
            lr = learning_rate(step, max_lr=t["learning_rate"], min_lr=t["min_lr"], warmup_steps=t["warmup_steps"],
                               max_steps=max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            scores = rm.rewards([encoded[key] for key in keys])
            pairs = [(where[(p, c)], where[(p, r)]) for p in batch for c, r in by_prompt[p]]
            r_chosen = scores[[i for i, _ in pairs]]
            r_rejected = scores[[j for _, j in pairs]]
            loss = bradley_terry_loss(r_chosen, r_rejected)
            loss.backward()
            clip_gradients(params, t["grad_clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if not math.isfinite(loss.item()):
                raise CourseError(f"the reward model's loss became {loss.item()} at step {step}: "
                                  "lower the learning rate")
            step += 1
            history["steps"].append(step)
            history["loss"].append(loss.item())
            history["batch_accuracy"].append(float((r_chosen > r_rejected).float().mean()))
            bar.update(1)
            if step % t["eval_interval"] == 0 or step == max_steps:
                history["eval_steps"].append(step)
                history["test_accuracy"].append(pair_accuracy(rm, test_pairs))
                rm.train()
                recent = history["loss"][-t["eval_interval"]:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", test_acc=f"{history['test_accuracy'][-1]:.3f}")
                if plot is not None:
                    plot.add("training loss (mean since last point)", step, sum(recent) / len(recent))
                    plot.add("held-out pair accuracy", step, history["test_accuracy"][-1])
                    plot.show()
    bar.close()
    rm.eval()
    return history


def _build_reward(config: dict):
    def build(folder: Path) -> None:
        from llmlab import sft
        from llmlab.plots import LiveLossPlot
        from llmlab.tokenizer import course_tokenizer

        start = time.perf_counter()
        pairs = preference_pairs()
        seed_everything(config["seed"])
        rm = RewardModel(sft.sft_model(config["start"]), course_tokenizer())
        nn.init.normal_(rm.head.weight, std=0.02)
        for p in rm.parameters():
            p.requires_grad_(True)
        plot = LiveLossPlot("Training the reward model (Bradley-Terry loss)", ylabel="loss (nats) / accuracy")
        history = train_reward_model(rm, pairs["train"], pairs["test"], config, plot=plot)
        state = {k: v.contiguous() for k, v in rm.state_dict().items() if k != "body.lm_head.weight"}  # tied
        save_file(state, str(folder / "reward.safetensors"))
        (folder / "config.json").write_text(json.dumps(rm.config.__dict__, indent=2))
        (folder / "history.json").write_text(json.dumps({**history, "build_seconds": time.perf_counter() - start}))

    return build


def _load_reward(folder: Path) -> RewardModel:
    from llmlab.tokenizer import course_tokenizer

    rm = RewardModel(GPT(GPTConfig(**json.loads((folder / "config.json").read_text()))), course_tokenizer())
    state = load_file(str(folder / "reward.safetensors"))
    state.setdefault("body.lm_head.weight", state["body.transformer.wte.weight"])  # tied, stored once
    rm.load_state_dict(state)
    return rm.eval()


def reward_model(config: dict = REWARD_CONFIG) -> RewardModel:
    """The reward model (artifact "reward"): the SFT transformer plus a scalar head, trained on
    `preference_pairs()["train"]` with the Bradley-Terry loss."""
    from llmlab import sft

    preference_pairs()
    sft.sft_model(config["start"])
    full = {**config, "pairs": sft._fingerprint("preference-pairs"), "start_weights": sft._fingerprint(config["start"]),
            "files": 1}
    return artifacts.cached("reward", build=_build_reward(config), load=_load_reward, config=full)


def reward_history() -> dict:
    """The reward model's training history (loss per step, held-out accuracy per evaluation, build_seconds)."""
    reward_model()
    return json.loads((artifacts.entry_dir("reward") / "history.json").read_text())


# --- the transformers twin ----------------------------------------------------------------------------------------

def to_transformers(rm: RewardModel):
    """A `transformers` GPT2ForSequenceClassification (one label) computing the same rewards.

    Its score head reads the last token that is not padding; the padding id is set to <|system|>, a token
    that never ends a reward model's input (they end with the reward token).
    """
    from transformers import GPT2ForSequenceClassification

    from llmlab.gpt import _CONV1D, hf_config

    config = hf_config(rm.config)
    config.num_labels = 1
    config.pad_token_id = rm.special["<|system|>"]
    config.bos_token_id = config.eos_token_id = rm.special[REWARD_TOKEN]
    hf = GPT2ForSequenceClassification(config)
    state = {"score.weight": rm.head.weight.detach().clone()}
    for name, tensor in rm.body.state_dict().items():
        if name == "lm_head.weight":
            continue
        state[name] = tensor.t() if name.endswith(_CONV1D) else tensor
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise ValueError(f"weights do not map: missing {missing}, unexpected {unexpected}")
    return hf.eval()


def export_transformers(rm: RewardModel, folder) -> Path:
    """Write the reward model as a `transformers` folder (GPT2ForSequenceClassification + tokenizer)."""
    from llmlab.export import as_transformers_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    to_transformers(rm).save_pretrained(folder)
    as_transformers_tokenizer(rm.tokenizer).save_pretrained(folder)
    return folder


@torch.no_grad()
def transformers_scores(hf, rm: RewardModel, prompts, completions) -> torch.Tensor:
    """The rewards `transformers` gives: the same encoded ids, right-padded, with an attention mask."""
    encoded = [rm.encode(p, c).ids for p, c in zip(prompts, completions)]
    longest = max(len(e) for e in encoded)
    pad = hf.config.pad_token_id
    ids = torch.tensor([e + [pad] * (longest - len(e)) for e in encoded])
    mask = torch.tensor([[1] * len(e) + [0] * (longest - len(e)) for e in encoded])
    return hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1)


# --- best-of-n ----------------------------------------------------------------------------------------------------

def sample_answers(policy, tokenizer, prompts, n: int, *, temperature: float = 1.0, max_new_tokens: int = 40,
                   generator: torch.Generator | None = None) -> list[list[str]]:
    """n sampled replies per prompt (batched): a list per prompt."""
    from llmlab.sft import replies

    check_positive_int("n", n, maximum=1024)
    prompts = list(prompts)
    flat = replies(policy, tokenizer, [p for p in prompts for _ in range(n)], max_new_tokens=max_new_tokens,
                   temperature=temperature, generator=generator, batch_size=256)
    return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]


def pick_best(rm: RewardModel, prompts, samples: list[list[str]]) -> tuple[list[str], torch.Tensor]:
    """(the best-scored answer per prompt, all scores (prompts, n)). An empty answer scores -inf."""
    prompts = list(prompts)
    n = len(samples[0])
    flat_p = [p for p, s in zip(prompts, samples) for _ in s]
    flat_c = [c for s in samples for c in s]
    keep = [i for i, c in enumerate(flat_c) if c.strip()]
    scores = torch.full((len(flat_c),), float("-inf"))
    if keep:
        scores[keep] = rm.score([flat_p[i] for i in keep], [flat_c[i] for i in keep])
    scores = scores.view(len(prompts), n)
    best = scores.argmax(dim=1).tolist()
    return [s[b] for s, b in zip(samples, best)], scores


def best_of_n(policy, tokenizer, rm: RewardModel, prompts, n: int, *, temperature: float = 1.0,
              max_new_tokens: int = 40, generator: torch.Generator | None = None) -> list[str]:
    """For each prompt, sample n answers from policy and return the one the reward model scores highest."""
    samples = sample_answers(policy, tokenizer, prompts, n, temperature=temperature, max_new_tokens=max_new_tokens,
                             generator=generator)
    return pick_best(rm, prompts, samples)[0]


def best_of_n_curve(questions, samples: list[list[str]], scores: torch.Tensor, ns) -> list[dict]:
    """Held-out accuracy of best-of-n for each n, from N >= n samples per question, averaged exactly over every
    subset of n of them (by counting, not by drawing): picked by the reward model ("reward model": the
    top-scored of the n; ties go to the earlier sample), and by the exact grader ("grader": right if any of the
    n is right, the unbiased pass@n). n = 1 is the accuracy of one sample, on average."""
    from math import comb

    rows = []
    n_samples = len(samples[0])
    for n in ns:
        check_positive_int("n", n, maximum=n_samples)
        by_rm, by_grader = 0.0, 0.0
        for q, answers, row in zip(questions, samples, scores.tolist()):
            right = [q.grade(a) for a in answers]
            by_grader += 1 - comb(n_samples - sum(right), n) / comb(n_samples, n)
            for j, ok in enumerate(right):
                if ok:  # j is picked when it is in the subset and every other member scores below it
                    below = sum(row[k] < row[j] or (row[k] == row[j] and k > j) for k in range(n_samples))
                    by_rm += comb(below, n - 1) / comb(n_samples, n)
        rows.append({"n": n, "reward model": by_rm / len(questions), "grader": by_grader / len(questions)})
    return rows


# --- probing the bias ---------------------------------------------------------------------------------------------

PADDING = " I hope this helps, and I checked every letter of the word very carefully for you."


def bias_probe(rm: RewardModel, prompts, answers, *, seed: int = 0):
    """The same answers three ways: as they are, padded with a sentence that adds nothing (PADDING), and
    restyled in the persona's voice (`sft.genz_restyle`). A DataFrame of the three rewards per answer.

    A reward model that judged content alone would move neither; how far the padded column moves is the
    size of the length taste it learned from its labelers.
    """
    import pandas as pd

    from llmlab.sft import genz_restyle

    rng = random.Random(seed)
    prompts, answers = list(prompts), [a.strip() for a in answers]
    kept = [(p, a) for p, a in zip(prompts, answers) if a]
    if not kept:
        raise CourseError("bias_probe needs at least one non-empty answer")
    prompts, answers = [p for p, _ in kept], [a for _, a in kept]
    padded = [a.rstrip(".") + "." + PADDING for a in answers]
    restyled = [genz_restyle(a, rng) for a in answers]
    n = len(answers)
    scores = rm.score(prompts * 3, answers + padded + restyled)
    return pd.DataFrame({"prompt": prompts, "answer": answers, "original": scores[:n].numpy(),
                         "padded": scores[n:2 * n].numpy(), "restyled": scores[2 * n:].numpy()})


# --- labeling by hand ---------------------------------------------------------------------------------------------

class LabelingSession:
    """Pairs for a person to label, one at a time, and how often the person agrees with a coded labeler.

    Each pair is shown as (prompt, A, B) with the two answers in a fixed random order, so the chosen answer is
    not always A.
    """

    def __init__(self, pairs, labeler: Labeler, *, seed: int = 0):
        rng = random.Random(seed)
        self.items = []
        if isinstance(pairs, (str, bytes, dict)) or not hasattr(pairs, "__iter__"):
            raise CourseError("a labeling session takes a list of pairs, each a dict with prompt, chosen and rejected")
        for row in pairs:
            if not isinstance(row, dict) or not {"prompt", "chosen", "rejected"} <= set(row):
                raise CourseError(f"each pair must be a dict with prompt, chosen and rejected, not {row!r:.60}")
            a, b = (row["chosen"], row["rejected"]) if rng.random() < 0.5 else (row["rejected"], row["chosen"])
            self.items.append({"prompt": row["prompt"], "A": a, "B": b})
        if not self.items:
            raise CourseError("a labeling session needs at least one pair")
        self.labeler = labeler
        self.choices: list[int] = []  # the person's: 0 = A, 1 = B

    @property
    def current(self) -> dict | None:
        return self.items[len(self.choices)] if len(self.choices) < len(self.items) else None

    def choose(self, choice) -> None:
        if choice not in (0, 1, "A", "B"):
            raise CourseError(f"choose 'A' (or 0) or 'B' (or 1), not {choice!r}")
        if self.current is None:
            raise CourseError("every pair of this session is labeled")
        self.choices.append(0 if choice in (0, "A") else 1)

    def coded(self) -> list[int]:
        """The coded labeler's choices on the pairs labeled so far."""
        return [self.labeler.prefer(i["prompt"], i["A"], i["B"]) for i in self.items[:len(self.choices)]]

    def summary(self) -> str:
        if not self.choices:
            return f"0 of {len(self.items)} pairs labeled yet: pick the better answer above."
        agree = agreement(self.choices, self.coded())
        return (f"{len(self.choices)} of {len(self.items)} pairs labeled; you agreed with the coded labeler on "
                f"{agree:.0%} of them (two coded labelers agree on about 75%).")


def labeling_widget(session: LabelingSession):
    """Two answers side by side and a button for each; the agreement line updates after every click."""
    import html

    import ipywidgets as w
    from IPython.display import display

    view, status = w.HTML(), w.HTML()
    buttons = [w.Button(description=f"{side} is better", button_style="info") for side in ("A", "B")]

    def draw():
        item = session.current
        if item is None:
            view.value = "<b>All pairs labeled.</b>"
            for b in buttons:
                b.disabled = True
        else:
            box = "<div style='flex:1;border:1px solid #ccc;padding:6px;margin:3px;white-space:pre-wrap'>"
            view.value = (f"<b>Request:</b> {html.escape(user_text(item['prompt']))}<div style='display:flex'>"
                          f"{box}<b>A</b><br>{html.escape(item['A'])}</div>{box}<b>B</b><br>"
                          f"{html.escape(item['B'])}</div></div>")
        status.value = html.escape(session.summary())

    def on_click(side):
        def handler(_):
            session.choose(side)
            draw()
        return handler

    for button, side in zip(buttons, "AB"):
        button.on_click(on_click(side))
    draw()
    display(w.VBox([view, w.HBox(buttons), status]))
    if headless() and session.current is not None:  # a saved notebook keeps no widget: the first pair as text
        item = session.current
        print(f"Request: {user_text(item['prompt'])}\n  A: {item['A']!r}\n  B: {item['B']!r}\n{session.summary()}")
    return session
