"""Reasoning (notebook 11): a model that spells the word out, keeps a running count, and only then answers.

    model = reasoner_model()                       # artifact "reasoner" (cached, or built in a few minutes)
    ask(model, tokenizer, "strawberry", "r")       # 'st:s0t0|raw:r1a1w1|berry:b1e1r2r3y3, so 3'

The course's model sees tokens, not letters ("strawberry" is 'st' 'raw' 'berry'), so it cannot count letters
in one step. Written out, the letters become tokens it can look at. The worked trace (`trace`) takes the word
token by token: it copies the token, then writes each of its letters followed by the count of the target letter
so far; the answer comes last:

    How many 'r's are in the word "strawberry"?   ->   st:s0t0|raw:r1a1w1|berry:b1e1r2r3y3, so 3

Copying first puts each token right before its letters, so spelling it is a look one step back rather than a
search for its place in the question. No spaces: with the course tokenizer a bare letter and a digit are always
one token each ("s" "0" "t" "0" ...), and the bare letter is the very token the question names the letter with
('r'); with spaces, " q" and " x" would be two tokens and " r" a different token from 'r'. `trace_tokens`
shows the split.

The reasoner is built in two stages, on TRAINING words and made-up words only (`tasks.check_training_words`):
  1. cold start: supervised fine-tuning of the "sft" model on worked traces (`cold_start_dataset`), over
     training words and over made-up words glued from the vocabulary's tokens (`made_up_words`), so that every
     token is spelled often, not only those common in dictionary words;
  2. GRPO: for each question a group of sampled traces, the reward from the grader (`reward`), advantages
     relative to the group, a clipped policy-gradient step (the pieces are `llmlab.rl`'s).
"""

import json
import random
import re
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from llmlab import artifacts, chat, rl, sft, tasks
from llmlab.checks import NOT_DONE, check_number, check_positive_int, learner_call
from llmlab.plots import LiveLossPlot
from llmlab.progress import progress_bar
from llmlab.runtime import by_mode, seed_everything
from llmlab.tokenizer import course_tokenizer
from llmlab.training import History, clip_gradients, load_model, save_model, train

# The longest trace of a dictionary word (12 letters) is 51 tokens with its answer (57 with the smaller tokenizer
# of fast mode); then <|end|>, and slack.
REASONING_MAX_TOKENS = 64
ANSWER_LEAD = ", so "
COPY, NEXT = ":", "|"  # "raw:" copies the token before its letters; "|" moves on to the next token
_PAIR = re.compile(r"([a-z])(\d+)")


def _task(word, letter) -> tasks.LetterCount:
    return word if isinstance(word, tasks.LetterCount) and letter is None else tasks.LetterCount(word, letter)


def trace_of_pieces(pieces, letter: str) -> str:
    """The worked trace for a word cut into pieces (its tokens), counting `letter`.

    trace_of_pieces(["st", "raw", "berry"], "r") == "st:s0t0|raw:r1a1w1|berry:b1e1r2r3y3, so 3"
    """
    count, segments = 0, []
    for piece in pieces:
        letters = ""
        for ch in piece:
            count += ch == letter
            letters += f"{ch}{count}"
        segments.append(f"{piece}{COPY}{letters}")
    return NEXT.join(segments) + f"{ANSWER_LEAD}{count}"


def trace(word, letter=None, tokenizer=None) -> str:
    """The worked trace for "how many `letter`s in `word`?", over the tokens the course tokenizer cuts it into.

    trace("strawberry", "r") == "st:s0t0|raw:r1a1w1|berry:b1e1r2r3y3, so 3" (a LetterCount works too: trace(task)).
    Loading the course tokenizer takes a few milliseconds: pass it in a loop.
    """
    task = _task(word, letter)
    return trace_of_pieces(token_pieces(tokenizer or course_tokenizer(), task.word), task.letter)


def max_new_tokens(word, tokenizer=None) -> int:
    """Room for the trace of word (checked), its answer and <|end|>, with a little slack."""
    tokenizer = tokenizer or course_tokenizer()
    needed = len(tokenizer.encode(trace(word, "a", tokenizer), add_special_tokens=False)) + 4
    return max(REASONING_MAX_TOKENS, needed)


def trace_tokens(tokenizer, text: str) -> list[str]:
    """The pieces the tokenizer cuts text into."""
    return [tokenizer.decode([i]) for i in tokenizer.encode(text, add_special_tokens=False)]


def token_pieces(tokenizer, word: str) -> list[str]:
    """The tokens the course tokenizer cuts word into, as the question shows it ("strawberry": st raw berry)."""
    return trace_tokens(tokenizer, tasks.LetterCount(word, "a").word)


def made_up_words(n: int, *, seed: int = 0, max_letters: int = 14, tokenizer=None) -> list[str]:
    """n made-up words of 3 to max_letters letters, each one to four tokens of the course vocabulary glued together
    ('ab' 'arn' 'lex').

    The cold start spells them beside the training words, so that every token of the vocabulary is spelled
    often, not only the tokens common in dictionary words. Held-out words stay unseen: no token that is itself a
    held-out word is used ('berry', 'self', ...), no made-up word is a held-out word or holds one of the words
    the course asks about by name, and each one cuts back into exactly the tokens it was glued from.
    """
    check_positive_int("n", n, maximum=100_000)
    tokenizer = tokenizer or course_tokenizer()
    held_out = set(tasks.word_split().held_out)
    pool = sorted({piece for piece in (tokenizer.decode([i]) for i in range(len(tokenizer)))
                   if re.fullmatch(r"[a-z]+", piece) and piece not in held_out})
    rng, words = random.Random(seed), set()
    for _ in range(100 * n):
        if len(words) == n:
            break
        pieces = [rng.choice(pool) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))]
        word = "".join(pieces)
        if (3 <= len(word) <= max_letters and word not in held_out and not any(w in word for w in tasks.NAMED_WORDS)
                and token_pieces(tokenizer, word) == pieces):
            words.add(word)
    return sorted(words)


def rare_token_questions(words, questions, minimum: int, *, seed: int = 0, tokenizer=None) -> list[tasks.LetterCount]:
    """Extra questions over words, so that every token the words hold is spelled in at least `minimum` questions
    (counting those given).

    A token sits in many made-up words unless it is a held-out word itself ('berry', 'box', 'self'): those, and
    tokens rare in dictionary words, are met in few questions. The words that hold such a token are asked again,
    in turn, each about a letter drawn at random (one time in four a letter the word lacks).
    """
    check_positive_int("minimum", minimum, minimum=0)
    tokenizer = tokenizer or course_tokenizer()
    pieces = {w: set(token_pieces(tokenizer, w)) for w in {*words, *(q.word for q in questions)}}
    holders: dict[str, list[str]] = {}
    for word in dict.fromkeys(words):
        for piece in sorted(pieces[word]):
            holders.setdefault(piece, []).append(word)
    seen = Counter(piece for q in questions for piece in pieces[q.word])
    rng, extra = random.Random(seed), []
    for piece in sorted(holders):
        for i in range(max(0, minimum - seen[piece])):
            word = holders[piece][i % len(holders[piece])]
            lacks = sorted(set(tasks.LETTERS) - set(word))
            letter = rng.choice(lacks) if rng.random() < 0.25 and lacks else rng.choice(sorted(set(word)))
            extra.append(tasks.LetterCount(word, letter))
    return extra


# --- reading and grading a completion ------------------------------------------------------------------------

def _segments(completion) -> list[tuple[str, str]]:
    """(copied token, its letters and counts) for each segment of a trace, before the answer."""
    body = completion.split(",")[0].lower()
    return [tuple(part.split(COPY, 1)) if COPY in part else ("", part) for part in body.split(NEXT)]


def read_trace(completion) -> tuple[str, list[int]]:
    """(the letters spelled, the running counts written) of a completion's trace, the part before the answer.

    The copied tokens are not letters spelled: "st:s0t0|raw:r1a1w1" reads as ("straw", [0, 0, 1, 1, 1]).
    A completion that is not a trace at all reads as ("", []): it is graded, never crashes the grader.
    """
    if not isinstance(completion, str):
        return "", []
    pairs = [pair for _, spelled in _segments(completion) for pair in _PAIR.findall(spelled)]
    return "".join(p[0] for p in pairs), [int(p[1]) for p in pairs]


SLIPS = ("copied a wrong token", "misspelled a token", "miscounted", "answered off its count")


def first_slip(tokenizer, task: tasks.LetterCount, completion) -> str:
    """Where a trace first went wrong, reading it token by token: "" (nowhere), or one of SLIPS.

    A token copied wrong (or a token left out or added) comes first, then a wrong spelling of a token copied
    right, then a wrong running count; a trace right all the way can still end on another answer.
    """
    if not isinstance(completion, str):
        return SLIPS[0]
    segments, pieces = _segments(completion), token_pieces(tokenizer, task.word)
    count = 0
    for i, piece in enumerate(pieces):
        copied, spelled = segments[i] if i < len(segments) else ("", "")
        if copied != piece:
            return SLIPS[0]
        pairs = _PAIR.findall(spelled)
        if "".join(p[0] for p in pairs) != piece:
            return SLIPS[1]
        for ch, written in pairs:
            count += ch == task.letter
            if int(written) != count:
                return SLIPS[2]
    if len(segments) != len(pieces):
        return SLIPS[0]
    return "" if task.grade(completion) else SLIPS[3]


def answer_correct(task: tasks.LetterCount, completion) -> bool:
    """The grader's verdict on the answer (the last number stated): `tasks.LetterCount.grade`."""
    return isinstance(completion, str) and task.grade(completion)


def spelling_correct(task: tasks.LetterCount, completion) -> bool:
    """Does the trace spell the word exactly?"""
    return read_trace(completion)[0] == task.word


def counts_consistent(task: tasks.LetterCount, completion) -> bool:
    """Are the running counts right for the letters the trace wrote, and is the answer the last count?

    A trace can be consistent and still misspell the word (a wrong letter that is not the target letter).
    """
    letters, counts = read_trace(completion)
    if not letters:
        return False
    running, expected = 0, []
    for ch in letters:
        running += ch == task.letter
        expected.append(running)
    return counts == expected and tasks.last_number(completion) == counts[-1]


def reward(task: tasks.LetterCount, completion) -> float:
    """The RL reward: the grader's, 1.0 for a right answer and 0.0 otherwise."""
    return task.reward(completion) if isinstance(completion, str) else 0.0




def wrong_letters(task: tasks.LetterCount, completion) -> str:
    """How a trace's spelling went wrong: "" (spelled right), "other letters" (only letters that are not the
    target letter differ: the count can still be right) or "target letter" (the target letter's places differ)."""
    letters, _ = read_trace(completion)
    if letters == task.word:
        return ""
    where = lambda text: [i for i, ch in enumerate(text) if ch == task.letter]  # noqa: E731
    rest = lambda text: text.replace(task.letter, "")  # noqa: E731
    if where(letters) == where(task.word) or (letters.count(task.letter) == task.answer
                                              and rest(letters) != rest(task.word)):
        return "other letters"
    return "target letter"


# --- asking the model --------------------------------------------------------------------------------------------

def question(word, letter) -> tasks.LetterCount:
    """The letter-count question, checked (a CourseError says why): a word of 1-40 letters a-z, one letter a-z."""
    return tasks.LetterCount(word, letter)


PROMPT_ROOM = 48  # tokens kept for the question in the context window (a 40-letter word's question fits)


def room(model, words=(), tokenizer=None) -> int:
    """max_new_tokens for the traces of words: what they need, within the model's context window."""
    tokenizer = tokenizer or (course_tokenizer() if words else None)
    needed = max([REASONING_MAX_TOKENS] + [max_new_tokens(w, tokenizer) for w in words])
    return max(1, min(needed, model.config.block_size - PROMPT_ROOM))


def replies(model, tokenizer, questions, *, temperature: float = 0.0, generator=None) -> list[str]:
    """The model's replies to letter-count questions, with room for each trace (greedy by default)."""
    questions = list(questions)
    room_ = room(model, {q.word for q in questions}, tokenizer)
    return sft.replies(model, tokenizer, [q.question for q in questions], max_new_tokens=room_,
                       temperature=temperature, generator=generator)


def ask(model, tokenizer, word, letter, *, temperature: float = 0.0, generator=None) -> str:
    """The model's reply to "How many `letter`s are in the word `word`?" (room for a whole trace)."""
    return replies(model, tokenizer, [question(word, letter)], temperature=temperature, generator=generator)[0]


def stream_answer(model, tokenizer, word, letter, *, temperature: float = 0.0, generator=None):
    """Yield the reply to the question piece by piece, as the model writes it."""
    task = question(word, letter)
    yield from sft.stream_reply(model, tokenizer, task.question, max_new_tokens=room(model, [task.word], tokenizer),
                                temperature=temperature, generator=generator)


def verdict(task: tasks.LetterCount, completion: str) -> str:
    """The grader's verdict on one reply, in words."""
    said = tasks.last_number(completion)
    answer = f"answer {said}" if said is not None else "no answer"
    right = "✓ right" if task.grade(completion) else f"✗ wrong (the word has {task.answer})"
    spelling = "spelled right" if spelling_correct(task, completion) else "misspelled"
    return f"{answer}: {right}; the trace is {spelling}"


# --- stage 1: the cold start --------------------------------------------------------------------------------------

REASONER_CONFIG = {
    "cold_start": {
        # questions balanced over the count 0 / 1 / 2 / 3+, over training words and over made-up words
        "questions": by_mode(full=16000, fast=32), "made_up_questions": by_mode(full=8000, fast=16),
        "made_up_words": by_mode(full=4000, fast=50), "made_up_seed": 5,
        "token_minimum": by_mode(full=32, fast=2),  # then training words asked again until every token they hold
                                                    # is spelled in this many questions (`rare_token_questions`)
        # 6,000 steps: on the base of 4.1 M tokens, 4,000 left the held-out accuracy still climbing (92 %)
        "training": {"max_steps": by_mode(full=6000, fast=6), "batch_size": 2, "learning_rate": 2e-3,
                     "min_lr": 2e-4, "warmup_steps": by_mode(full=20, fast=1), "betas": [0.9, 0.99],
                     "weight_decay": 0.0, "grad_clip": 1.0, "eval_interval": by_mode(full=1500, fast=3),
                     "eval_rows": None},
        "count_weight": 3.0,  # each count digit weighs three times a letter or a copied token in the loss
        "seed": 11,
    },
    "grpo": {
        "questions": by_mode(full=4000, fast=16), "steps": by_mode(full=20, fast=2),
        "prompts_per_step": by_mode(full=16, fast=2), "group_size": by_mode(full=8, fast=4),
        "temperature": 1.0, "learning_rate": 5e-5, "clip": 0.2, "kl": 0.0, "epochs": 1,
        "kl_every": by_mode(full=5, fast=1), "eval_every": by_mode(full=10, fast=1), "seed": 12,
    },
    "eval_questions": by_mode(full=200, fast=8),  # held-out questions scored along the way (the curves)
}


def cold_start_dataset(config: dict = REASONER_CONFIG, tokenizer=None):
    """Letter-count questions over TRAINING words and made-up words answered with their worked trace: a
    `datasets.Dataset` (the column "made_up" says which)."""
    from datasets import Dataset

    c = config["cold_start"]
    tokenizer = tokenizer or course_tokenizer()
    questions = tasks.letter_count_questions(tasks.word_split().train, c["questions"], seed=c["seed"])
    made_up = tasks.letter_count_questions(made_up_words(c["made_up_words"], seed=c["made_up_seed"],
                                                         tokenizer=tokenizer),
                                           c["made_up_questions"], seed=c["seed"] + 1)
    questions += rare_token_questions(tasks.word_split().train, questions + made_up, c["token_minimum"],
                                      seed=c["seed"] + 2, tokenizer=tokenizer)
    tasks.check_training_words([q.word for q in questions + made_up])
    return Dataset.from_list([
        {"messages": [{"role": "user", "content": q.question},
                      {"role": "assistant", "content": trace(q, tokenizer=tokenizer)}],
         "word": q.word, "letter": q.letter, "count": q.answer, "made_up": i >= len(questions)}
        for i, q in enumerate(questions + made_up)])


class AnswerLoss(torch.nn.Module):
    """A GPT whose forward gives the loss on the target tokens only, with the counts weighted count_weight times.

    With count_weight 1 it is the same loss as GPT(inputs, targets); but the vocabulary projection (a third of
    this small model's work) is skipped at the positions that carry no loss (the questions and the padding).
    A count_weight above 1 makes each digit of the trace weigh more than a letter in the mean.
    """

    def __init__(self, model, count_weight: float = 1.0, digit_ids=()):
        super().__init__()
        self.model = model
        self.count_weight = check_number("count_weight", count_weight, minimum=0, strict_minimum=True)
        self.register_buffer("digit_ids", torch.tensor(sorted(digit_ids), dtype=torch.long), persistent=False)

    def forward(self, idx, targets):
        m = self.model
        pos = torch.arange(idx.size(1), device=idx.device)
        x = m.transformer.drop(m.transformer.wte(idx) + m.transformer.wpe(pos))
        for layer, block in enumerate(m.transformer.h):
            x = block(x, layer)
        keep = targets != -100
        wanted = targets[keep]
        logits = m.lm_head(m.transformer.ln_f(x[keep]))
        if self.count_weight == 1 or not len(self.digit_ids):
            return None, F.cross_entropy(logits, wanted)
        weights = 1 + (self.count_weight - 1) * torch.isin(wanted, self.digit_ids).float()
        losses = F.cross_entropy(logits, wanted, reduction="none")
        return None, (losses * weights).sum() / weights.sum()


def digit_ids(tokenizer) -> list[int]:
    return tokenizer.convert_tokens_to_ids(list("0123456789"))


def cold_start(model, tokenizer, config: dict = REASONER_CONFIG, *, eval_questions=(), plot=None,
               progress: bool = True) -> tuple[History, dict]:
    """Supervised fine-tuning of model (in place) on worked traces: (History, held-out accuracy by step)."""
    c = config["cold_start"]
    seed_everything(c["seed"])
    examples = [e for e in sft.encode_dataset(cold_start_dataset(config, tokenizer), tokenizer)
                if len(e.ids) <= model.config.block_size + 1]  # all fit the course model; fast mode's is tiny
    rows = sft.row_batches(examples, model.config.block_size, c["training"]["batch_size"], answer_only=True,
                           pad_id=tokenizer.eos_token_id, seed=c["seed"])
    evals = {"step": [], "accuracy": []}

    def on_eval(step, wrapped, history):
        if eval_questions:
            evals["step"].append(step)
            evals["accuracy"].append(tasks.accuracy(eval_questions, replies(model, tokenizer, eval_questions)))
            wrapped.train()

    loss = AnswerLoss(model, c["count_weight"], digit_ids(tokenizer))
    history = train(loss, rows, sft.train_config(c), plot=plot, on_eval=on_eval, progress=progress,
                    desc="cold start (SFT on traces)")
    return history, evals


# --- stage 2: GRPO -------------------------------------------------------------------------------------------------

CURVES = ("reward", "spelling", "right_from_wrong_spelling", "no_signal", "truncated", "length", "entropy", "kl")


def grpo(model, tokenizer, questions, settings: dict, *, reference=None, eval_questions=(), plot=None,
         progress: bool = True) -> dict:
    """GRPO on model (in place): per step, groups of sampled traces for a few questions, rewarded by the grader.

    Per step: prompts_per_step questions, group_size traces each at `temperature`; rewards (`reward`); GRPO
    advantages (each reward against its group's mean and spread); groups whose traces all got the same reward
    carry no signal and are left out of the update; the clipped policy-gradient loss (`rl.policy_gradient_loss`)
    plus kl x the KL to `reference` when kl > 0. The KL to reference is measured every kl_every steps either way.
    Returns the curves: per step the mean reward and what RL practitioners watch, and held-out accuracy.
    """
    check_number("kl", settings["kl"], minimum=0)
    seed_everything(settings["seed"])
    generator = torch.Generator().manual_seed(settings["seed"])
    P, G = settings["prompts_per_step"], settings["group_size"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings["learning_rate"],
                                  betas=(0.9, 0.99), weight_decay=0.0)
    pad = tokenizer.eos_token_id
    curves = {"step": [], **{k: [] for k in CURVES}, "seconds": []}
    evals = {"step": [], "accuracy": []}
    start = time.perf_counter()

    def evaluate(step):
        if eval_questions:
            evals["step"].append(step)
            evals["accuracy"].append(tasks.accuracy(eval_questions, replies(model, tokenizer, eval_questions)))
            if plot is not None:
                plot.add("held-out accuracy (greedy)", step, evals["accuracy"][-1])
                plot.show()

    evaluate(0)
    bar = progress_bar(range(settings["steps"]), desc="GRPO", unit="step", disable=not progress)
    for step in bar:
        batch = [questions[(step * P + i) % len(questions)] for i in range(P)]
        prompt_ids = [chat.prompt_ids(tokenizer, [{"role": "user", "content": q.question}]) for q in batch]
        prompts, completions, truncated = rl.sample_groups(model, tokenizer, prompt_ids, G, room(model),
                                                           temperature=settings["temperature"], generator=generator)
        texts = [tokenizer.decode(c, skip_special_tokens=True) for c in completions]
        row_tasks = [q for q in batch for _ in range(G)]
        rewards = torch.tensor([reward(q, t) for q, t in zip(row_tasks, texts)])
        advantages = rl.group_advantages(rewards, G)
        signal = rewards.view(-1, G).std(dim=1) > 0
        keep = signal.repeat_interleave(G).nonzero().flatten().tolist()
        measure_kl = reference is not None and (settings["kl"] > 0 or (step + 1) % settings["kl_every"] == 0)
        rows = keep if keep else list(range(len(completions))) if measure_kl else []
        entropy = kl_value = float("nan")
        if rows:
            ids, mask = rl.completion_batch([prompts[i] for i in rows], [completions[i] for i in rows], pad)
            model.train()
            for epoch in range(settings["epochs"]):
                logp = rl.token_logprobs(model, ids, mask)
                if epoch == 0:
                    old_logp = logp.detach()
                    entropy = float(-rl.masked_mean(old_logp, mask))  # -log p of sampled tokens: entropy's estimate
                loss = rl.policy_gradient_loss(logp, old_logp, advantages[rows], mask, clip=settings["clip"])
                if measure_kl and epoch == 0:
                    with torch.no_grad():
                        ref_logp = rl.token_logprobs(reference, ids, mask)
                    kl = rl.masked_mean(rl.kl_per_token(logp, ref_logp), mask)
                    kl_value = float(kl.detach())
                    loss = loss + settings["kl"] * kl
                if keep:
                    loss.backward()
                    clip_gradients(list(model.parameters()), 1.0)
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            model.eval()
        right = rewards > 0
        misspelled = torch.tensor([not spelling_correct(q, t) for q, t in zip(row_tasks, texts)])
        values = {"reward": float(rewards.mean()), "spelling": float(1 - misspelled.float().mean()),
                  "right_from_wrong_spelling": float((right & misspelled).sum() / right.sum().clamp(min=1)),
                  "no_signal": float(1 - signal.float().mean()), "truncated": sum(truncated) / len(truncated),
                  "length": sum(map(len, completions)) / len(completions), "entropy": entropy, "kl": kl_value}
        curves["step"].append(step + 1)
        for key, value in values.items():
            curves[key].append(value)
        curves["seconds"].append(time.perf_counter() - start)
        if plot is not None:
            plot.add("mean reward (sampled, T = 1)", step + 1, values["reward"])
        if (step + 1) % settings["eval_every"] == 0 or step + 1 == settings["steps"]:
            evaluate(step + 1)
        bar.set_postfix(reward=f"{values['reward']:.2f}")
    bar.close()
    return {"curves": curves, "evals": evals}


# --- the artifact -------------------------------------------------------------------------------------------------

def grpo_questions(config: dict = REASONER_CONFIG) -> list[tasks.LetterCount]:
    g = config["grpo"]
    questions = tasks.letter_count_questions(tasks.word_split().train, g["questions"], seed=g["seed"])
    tasks.check_training_words([q.word for q in questions])
    return questions


def _build_reasoner(folder: Path) -> None:
    start = time.perf_counter()
    tokenizer = course_tokenizer()
    model = sft.sft_model()
    eval_questions = tasks.heldout_questions(REASONER_CONFIG["eval_questions"])
    plot = LiveLossPlot("Reasoner, stage 1: cold start on worked traces", ylabel="cross-entropy (nats/token)")
    history, cold_evals = cold_start(model, tokenizer, eval_questions=eval_questions, plot=plot)
    cold_seconds = time.perf_counter() - start
    save_model(model, folder / "cold_start")
    reference = load_model(folder / "cold_start")  # where GRPO starts: the KL is measured against it
    plot = LiveLossPlot("Reasoner, stage 2: GRPO", ylabel="share")
    result = grpo(model, tokenizer, grpo_questions(), REASONER_CONFIG["grpo"], reference=reference,
                  eval_questions=eval_questions, plot=plot)
    save_model(model, folder)
    (folder / "history.json").write_text(json.dumps({
        "cold_start": {**history.to_json(), "evals": cold_evals}, "grpo": result,
        "cold_start_seconds": cold_seconds, "build_seconds": time.perf_counter() - start}, indent=1))


def reasoner_model() -> "torch.nn.Module":
    """The reasoner (artifact "reasoner"): the SFT model, cold-started on worked traces, then trained with GRPO."""
    sft.sft_model()
    config = {**REASONER_CONFIG, "format": trace("strawberry", "r"), "sft": sft._fingerprint("sft"),
              "kl_reference": "cold start", "files": 1}
    return artifacts.cached("reasoner", build=_build_reasoner, load=load_model, config=config)


def cold_start_model():
    """The reasoner after stage 1 only (saved beside it): what GRPO started from."""
    reasoner_model()
    return load_model(artifacts.entry_dir("reasoner") / "cold_start")


def reasoner_history() -> dict:
    """What the build left: the cold start's History and accuracies, GRPO's curves, and the build times."""
    reasoner_model()
    data = json.loads((artifacts.entry_dir("reasoner") / "history.json").read_text())
    data["cold_start"] = {"history": History.from_json({k: v for k, v in data["cold_start"].items()
                                                        if k != "evals"}),
                          "evals": data["cold_start"]["evals"]}
    return data


# --- what was learned -------------------------------------------------------------------------------------------

def doubled_letter(word: str) -> bool:
    """Does the word hold a letter twice in a row ("bookkeeper", "mississippi")?"""
    return any(a == b for a, b in zip(word, word[1:]))


def accuracy_by(questions, completions, key, name: str):
    """Held-out accuracy grouped by key(question): a table with the questions and the accuracy of each group."""
    import pandas as pd

    rows = [{name: key(q), "right": q.grade(c)} for q, c in zip(questions, completions)]
    table = pd.DataFrame(rows).groupby(name)["right"].agg(questions="size", accuracy="mean")
    return table


def token_spelling(tokenizer, questions, completions, words) -> "pd.DataFrame":
    """One row per token of each held-out word: was it spelled right in the trace, and how many of `words` (the
    words the cold start asked about) hold that token.

    Tokens are read left to right up to the first wrong letter: the tokens before it were spelled right, the
    one that holds it was spelled wrong, and those after it are not judged (the trace had lost its place).
    """
    import pandas as pd

    seen = Counter(piece for word in set(words) for piece in token_pieces(tokenizer, word))
    rows = []
    for q, completion in zip(questions, completions):
        letters, _ = read_trace(completion)
        start = 0
        for piece in token_pieces(tokenizer, q.word):
            end = start + len(piece)
            right = letters[start:end] == piece
            rows.append({"token": piece, "word": q.word, "spelled right": right, "words holding it": seen[piece]})
            if not right:
                break
            start = end
    return pd.DataFrame(rows)


def strawberry_samples(model, tokenizer, n: int = 20, *, temperature: float = 0.7, seed: int = 0) -> list[str]:
    """n sampled replies to the strawberry question (temperature 0.7, seeded)."""
    check_positive_int("n", n, maximum=1000)
    generator = torch.Generator().manual_seed(seed)
    return replies(model, tokenizer, [tasks.STRAWBERRY] * n, temperature=temperature, generator=generator)


# --- exercise ----------------------------------------------------------------------------------------------------

def check_trace(fn) -> bool:
    """Exercise: fn(pieces, letter) writes the worked trace of a word cut into its tokens
    (fn(["st", "raw", "berry"], "r") == "st:s0t0|raw:r1a1w1|berry:b1e1r2r3y3, so 3"). Checked on words with the
    letter at the start, the end, doubled, and absent, cut as the course tokenizer cuts them."""
    tokenizer = course_tokenizer()
    cases = [("strawberry", "r"), ("banana", "a"), ("cat", "z"), ("bookkeeper", "e"), ("mississippi", "s"),
             ("apple", "a"), ("letter", "r")]
    for word, letter in cases:
        pieces = token_pieces(tokenizer, word)
        got = learner_call(fn, list(pieces), letter, not_done=(
            "Not done yet: for each piece write the piece and ':', then each of its letters followed by a counter "
            "that goes up by 1 at each target letter; join the pieces with '|', then ', so ' and the final count."))
        if got is NOT_DONE:
            return False
        want = trace(word, letter, tokenizer)
        if got != want:
            print(f"✗ for ({pieces!r}, {letter!r}) you give {got!r:.70}; it should be {want!r}")
            return False
    print(f"✓ your trace matches llmlab's on {len(cases)} questions")
    return True
