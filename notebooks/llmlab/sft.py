"""Supervised fine-tuning (notebook 08): from a model that continues documents to one that answers in its turn.

    model = sft_model()            # artifact "sft": the base model fine-tuned on conversations (cached)

The recipe is SFT_CONFIG: the instruction data (`sft_dataset`, a `datasets.Dataset` with a "messages" column
as the real tools use) and the training settings. The data, built offline from data/:
  * word tasks of `llmlab.tasks` over the TRAINING words only (letter counts balanced over the true count,
    spelling, first/last letter, length), answered with each task's own `answer_text`;
  * story requests ("Tell me a story about Lily.") answered with TinyStories train stories the base model read;
  * the self-instruct seed tasks (175 human-written tasks; a few kept out to show what the model makes of new
    ones).
Conversations are written with `llmlab.chat`'s template and packed whole into rows of the context window; the
loss is taken on the assistant's tokens only (`answer_only`), or on every token for the comparison.

The other artifacts of the notebook come from here too, each with its config beside it:
  "sft-all-tokens"  the same run with the loss on every token       (what masking the prompt changes)
  "sft-scratch"     the same data and steps from random weights      (what pretraining contributed)
  "persona"         a LoRA adapter on "sft", trained on Gen-Z restyled replies (`genz_restyle`), merged
  "merged"          a linear merge of "sft" and "persona" weights at MERGE_WEIGHT
"""

import hashlib
import json
import random
import re
import time
from functools import cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmlab import artifacts, chat, lora, tasks
from llmlab.checks import NOT_DONE, CourseError, check_number, check_positive_int, check_text, learner_call
from llmlab.data import tinystories_documents, tinystories_train_documents
from llmlab.generation import generate_batch, stream_tokens
from llmlab.gpt import GPT
from llmlab.paths import data_file
from llmlab.plots import LiveLossPlot
from llmlab.pretraining import BASE_CONFIG, base_model, model_config
from llmlab.runtime import by_mode, seed_everything
from llmlab.tokenizer import course_tokenizer
from llmlab.training import History, TrainConfig, load_model, save_model, train

SYSTEM_PROMPT = "You are a helpful assistant."

# Every setting the SFT model depends on. Sized so that one SFT run takes well under a minute on 2 CPU cores.
SFT_CONFIG = {
    "data": {
        "letter_counts": by_mode(full=3000, fast=64),  # balanced over the true count 0 / 1 / 2 / 3+
        "other_word_tasks": by_mode(full=2000, fast=32),  # spelling, first letter, last letter, length
        "stories": by_mode(full=250, fast=12),
        "story_chars": by_mode(full=700, fast=100),  # a story reply is its first sentences up to this length
        "self_instruct_shown": 10,  # seed tasks never trained on: shown to the model as new instructions
        "system_share": 0.2,  # conversations that open with a system message
        "seed": 0,
    },
    # Rows of 2 (as for the base model): at equal tokens, 600 small steps taught more than 150 of 8 rows
    # (held-out answer loss 1.81 against 2.27 nats/token, measured on a shorter-trained base).
    "training": {"max_steps": by_mode(full=600, fast=12), "batch_size": by_mode(full=2, fast=4),
                 "learning_rate": 2e-3, "min_lr": 2e-4, "warmup_steps": by_mode(full=30, fast=2),
                 "betas": [0.9, 0.99], "weight_decay": 0.1, "grad_clip": 1.0,
                 "eval_interval": by_mode(full=100, fast=6), "eval_rows": by_mode(full=12, fast=4)},
    "answer_only": True,  # loss on the assistant's tokens only
    "from_scratch": False,  # True: random weights instead of the base model
    "seed": 1337,
}
VALIDATION = {"heldout_conversations": by_mode(full=300, fast=24), "stories": by_mode(full=60, fast=6)}


# --- the instruction data ---------------------------------------------------------------------------------------

def _user(text: str, system: bool) -> list[dict]:
    return ([{"role": "system", "content": SYSTEM_PROMPT}] if system else []) + [{"role": "user", "content": text}]


def word_task_conversations(words, n_counts: int, n_other: int, *, seed: int = 0) -> list[dict]:
    """Rows {"messages", "source", "kind", "word"} of word-task questions over words, answered right."""
    questions = []
    if n_counts:
        questions += tasks.letter_count_questions(words, n_counts, seed=seed)
    if n_other:
        others = tuple(k for k in tasks.TASK_KINDS if k != tasks.LetterCount.kind)
        questions += tasks.task_questions(words, n_other, kinds=others, seed=seed + 1)
    return [{"messages": [{"role": "user", "content": q.question}, {"role": "assistant", "content": q.answer_text}],
             "source": "word tasks", "kind": q.kind, "word": q.word} for q in questions]


_NAME = re.compile(r"\b([A-Z][a-z]{2,})\b")
_NOT_NAMES = {"Once", "The", "One", "They", "She", "His", "Her", "When", "But", "Then", "After", "She", "And",
              "Mom", "Dad", "Mommy", "Daddy", "Every", "Suddenly", "There", "This", "What", "That", "Finally", "Let",
              "Can", "Yes", "Thank", "Look", "Why", "From", "Later", "Today", "Soon", "Sometimes", "Together", "You"}


def story_request(story: str, rng: random.Random) -> str:
    """A user's request that the story answers: about its main character, or with one of its words."""
    names = [n for n in _NAME.findall(story) if n not in _NOT_NAMES]
    if names:
        name = max(set(names), key=lambda n: (names.count(n), n))
        return rng.choice([f"Tell me a story about {name}.", f"Write a short story about {name}.",
                           f"Can you tell me a story about {name}?"])
    word = rng.choice(sorted(set(re.findall(r"\b[a-z]{5,}\b", story))) or ["friend"])
    return rng.choice([f"Write a short story with the word \"{word}\".", f"Tell me a story about a {word}.",
                       "Tell me a short story."])


def first_sentences(story: str, max_chars: int) -> str:
    """The story's first sentences, as many as fit in max_chars (at least one)."""
    sentences = re.findall(r"[^.!?]+[.!?]+[\"']?\s*", story.replace("\n", " "))
    text = ""
    for sentence in sentences:
        if text and len(text) + len(sentence) > max_chars:
            break
        text += sentence
    return text.strip() or story[:max_chars].strip()


def story_conversations(stories, n: int, max_chars: int, *, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    chosen = rng.sample(list(stories), min(n, len(stories)))
    return [{"messages": [{"role": "user", "content": story_request(s, rng)},
                          {"role": "assistant", "content": first_sentences(s, max_chars)}],
             "source": "story requests", "kind": "story", "word": ""} for s in chosen]


@cache
def self_instruct_tasks() -> tuple[dict, ...]:
    """The 175 self-instruct seed tasks (Wang et al., 2022): human-written instructions with one answer each."""
    rows = [json.loads(line) for line in data_file("self_instruct_seed_tasks.jsonl").read_text().splitlines()
            if line.strip()]
    return tuple(rows)


def self_instruct_conversation(task: dict) -> list[dict]:
    instance = task["instances"][0]
    prompt = task["instruction"].strip() + (f"\n\n{instance['input'].strip()}" if instance["input"].strip() else "")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": instance["output"].strip()}]


def self_instruct_split(n_shown: int) -> tuple[list[dict], list[dict]]:
    """(training tasks, shown tasks): the last n_shown seed tasks are never trained on."""
    tasks_ = list(self_instruct_tasks())
    return tasks_[:-n_shown], tasks_[-n_shown:]


def _fits(tokenizer, messages, max_tokens: int) -> bool:
    try:
        return len(chat.chat_example(tokenizer, messages).ids) <= max_tokens
    except CourseError:
        return False


@cache
def sft_dataset(data_json: str | None = None):
    """The instruction data as a `datasets.Dataset`: columns messages, source, kind, word.

    Conversations that do not fit the context window of the base model are left out (counted in the mixture).
    Every word-task word is a training word (`tasks.check_training_words`).
    """
    from datasets import Dataset

    d = json.loads(data_json) if data_json else SFT_CONFIG["data"]  # the "data" settings, as JSON (cacheable)
    tokenizer = course_tokenizer()
    rng = random.Random(d["seed"])
    rows = word_task_conversations(tasks.word_split().train, d["letter_counts"], d["other_word_tasks"], seed=d["seed"])
    tasks.check_training_words([r["word"] for r in rows])
    rows += story_conversations(tinystories_train_documents(), d["stories"], d["story_chars"], seed=d["seed"])
    train_tasks, _ = self_instruct_split(d["self_instruct_shown"])
    rows += [{"messages": self_instruct_conversation(t), "source": "self-instruct", "kind": "human-written",
              "word": ""} for t in train_tasks]
    for row in rows:  # some conversations open with a system message, so the model knows what one is
        if rng.random() < d["system_share"]:
            row["messages"] = [{"role": "system", "content": SYSTEM_PROMPT}, *row["messages"]]
    window = BASE_CONFIG["model"]["block_size"] + 1
    kept = [r for r in rows if _fits(tokenizer, r["messages"], window)]
    rng.shuffle(kept)
    return Dataset.from_list(kept)


def mixture_table(dataset, tokenizer, config: dict = SFT_CONFIG):
    """Per source: conversations, tokens, trained (answer) tokens, their share and the epochs training makes."""
    import pandas as pd

    t = config["training"]
    rows = {}
    for messages, source in zip(dataset["messages"], dataset["source"]):
        example = chat.chat_example(tokenizer, messages)
        row = rows.setdefault(source, {"source": source, "conversations": 0, "tokens": 0, "answer tokens": 0})
        row["conversations"] += 1
        row["tokens"] += len(example.ids)
        row["answer tokens"] += sum(example.loss_mask)
    table = pd.DataFrame(rows.values())
    table["share of tokens"] = (table["tokens"] / table["tokens"].sum()).round(3)
    trained_tokens = t["max_steps"] * t["batch_size"] * (BASE_CONFIG["model"]["block_size"] + 1)
    fill = packing_fill(dataset, tokenizer)
    table["epochs"] = (trained_tokens * fill / table["tokens"].sum()).round(2)
    return table


# --- packing conversations into rows ------------------------------------------------------------------------------

def encode_dataset(dataset, tokenizer) -> list[chat.ChatExample]:
    return [chat.chat_example(tokenizer, messages) for messages in dataset["messages"]]


def pack_rows(examples: list[chat.ChatExample], row_tokens: int, *, answer_only: bool, pad_id: int,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (rows, row_tokens): whole conversations packed into rows, shuffled by seed.

    A row holds whole conversations (each opens with <|endoftext|>) up to row_tokens + 1 tokens, padded at the
    end. Targets are the next tokens; with answer_only, only those the loss mask marks (the assistant's
    replies), everything else -100, which the loss skips. Padding is never a target.
    """
    check_positive_int("row_tokens", row_tokens)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    rows, current = [], []
    for i in order:
        ex = examples[i]
        if len(ex.ids) > row_tokens + 1:
            raise CourseError(f"a conversation of {len(ex.ids)} tokens does not fit a row of {row_tokens + 1}")
        if sum(len(examples[j].ids) for j in current) + len(ex.ids) > row_tokens + 1:
            rows.append(current)
            current = []
        current.append(i)
    if current:
        rows.append(current)
    inputs = torch.full((len(rows), row_tokens), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), row_tokens), -100, dtype=torch.long)
    for r, members in enumerate(rows):
        ids = [t for j in members for t in examples[j].ids]
        mask = [m if answer_only else 1 for j in members for m in examples[j].loss_mask]
        n = len(ids) - 1
        inputs[r, :n] = torch.tensor(ids[:-1])
        targets[r, :n] = torch.tensor([t if m else -100 for t, m in zip(ids[1:], mask[1:])])
    return inputs, targets


def packing_fill(dataset, tokenizer) -> float:
    """The share of row positions that hold real tokens after packing (the rest is padding)."""
    examples = encode_dataset(dataset, tokenizer)
    inputs, _ = pack_rows(examples, BASE_CONFIG["model"]["block_size"], answer_only=True, pad_id=-1)
    return float((inputs != -1).float().mean())


def row_batches(examples, row_tokens: int, batch_size: int, *, answer_only: bool, pad_id: int, seed: int = 0):
    """Endless batches of packed rows; every pass over the data repacks it in a new order."""
    check_positive_int("batch_size", batch_size)
    epoch = 0
    while True:
        inputs, targets = pack_rows(examples, row_tokens, answer_only=answer_only, pad_id=pad_id, seed=seed + epoch)
        if len(inputs) < batch_size:
            raise CourseError(f"the data packs into {len(inputs)} rows, fewer than a batch of {batch_size}")
        for start in range(0, len(inputs) - batch_size + 1, batch_size):
            yield inputs[start:start + batch_size], targets[start:start + batch_size]
        epoch += 1


# --- validation: answers on held-out words, and stories never read -------------------------------------------------

@cache
def validation_sets(row_tokens: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Answer-only (inputs, targets) rows: replies to word tasks on held-out words, and to requests for
    TinyStories validation stories. Every model of the notebook is scored on these same rows."""
    tokenizer = course_tokenizer()
    n = VALIDATION["heldout_conversations"]
    heldout = word_task_conversations(tasks.word_split().held_out, n // 2, n - n // 2, seed=99)
    stories = story_conversations(tinystories_documents(), VALIDATION["stories"], SFT_CONFIG["data"]["story_chars"],
                                  seed=99)
    pad = tokenizer.eos_token_id
    sets = {}
    for name, rows in (("held-out word answers", heldout), ("new stories", stories)):
        examples = [chat.chat_example(tokenizer, r["messages"]) for r in rows]
        examples = [e for e in examples if len(e.ids) <= row_tokens + 1]
        sets[name] = pack_rows(examples, row_tokens, answer_only=True, pad_id=pad, seed=0)
    return sets


# --- training -----------------------------------------------------------------------------------------------------

def train_config(config: dict) -> TrainConfig:
    settings = dict(config["training"])
    settings["betas"] = tuple(settings["betas"])
    return TrainConfig(**settings)


def finetune(model: GPT, examples: list[chat.ChatExample], config: dict, *, answer_only: bool = True,
             val_sets=None, plot=None, progress: bool = True, desc: str = "fine-tuning") -> History:
    """Train model on packed conversations with config["training"] (every trainable parameter; a LoRA model
    trains its adapters only). Returns the History."""
    seed_everything(config["seed"])
    tokenizer = course_tokenizer()
    settings = train_config(config)
    rows = row_batches(examples, model.config.block_size, settings.batch_size, answer_only=answer_only,
                       pad_id=tokenizer.eos_token_id, seed=config["seed"])
    return train(model, rows, settings, val_sets=val_sets, plot=plot, progress=progress, desc=desc)


def _fingerprint(name: str) -> str:
    """A short hash of an artifact's weights: a changed parent makes its children stale."""
    manifest = json.loads((artifacts.entry_dir(name) / artifacts.MANIFEST).read_text())
    return hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()[:16]


def _start_model(config: dict) -> GPT:
    if config["from_scratch"]:
        seed_everything(config["seed"])
        return GPT(model_config(course_tokenizer()))
    return base_model()


def _build_sft(config: dict, name: str):
    def build(folder: Path) -> None:
        start = time.perf_counter()
        tokenizer = course_tokenizer()
        model = _start_model(config)
        model.train()
        examples = encode_dataset(sft_dataset(json.dumps(config["data"])), tokenizer)
        plot = LiveLossPlot(f"Fine-tuning: {name}", ylabel="cross-entropy (nats/token)")
        history = finetune(model, examples, config, answer_only=config["answer_only"],
                           val_sets=validation_sets(model.config.block_size), plot=plot, desc=name)
        save_model(model, folder)
        (folder / "history.json").write_text(json.dumps(
            {**history.to_json(), "build_seconds": time.perf_counter() - start}, indent=1))

    return build


VARIANTS = {  # artifact name -> what differs from SFT_CONFIG
    "sft": {},
    "sft-all-tokens": {"answer_only": False},
    "sft-scratch": {"from_scratch": True},
}


def variant_config(name: str) -> dict:
    if name not in VARIANTS:
        raise CourseError(f"unknown SFT variant {name!r}; the variants are {list(VARIANTS)}")
    return {**SFT_CONFIG, **VARIANTS[name]}


def sft_model(name: str = "sft") -> GPT:
    """An SFT model (artifact "sft", or the variants "sft-all-tokens" and "sft-scratch"): cached, or trained."""
    config = variant_config(name)
    base_model()  # the parent first: its fingerprint is part of the config
    full_config = {**config, "base": _fingerprint("base"), "validation": VALIDATION, "files": 1}
    return artifacts.cached(name, build=_build_sft(config, name), load=load_model, config=full_config)


def sft_history(name: str = "sft") -> tuple[History, float]:
    """The training history of an SFT model and its build time in seconds."""
    sft_model(name)
    data = json.loads((artifacts.entry_dir(name) / "history.json").read_text())
    build_seconds = data.pop("build_seconds")
    return History.from_json(data), build_seconds


# --- asking a model -----------------------------------------------------------------------------------------------

def stop_ids(tokenizer) -> list[int]:
    """<|end|> ends a reply; <|endoftext|> too (a base model that never learned <|end|> may write it)."""
    return [tokenizer.convert_tokens_to_ids(chat.END), tokenizer.eos_token_id]


def _as_messages(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def replies(model, tokenizer, prompts, *, max_new_tokens: int = 40, temperature: float = 0.0,
            generator: torch.Generator | None = None, batch_size: int = 100) -> list[str]:
    """The model's reply to each prompt (a question, or a list of chat messages ending with the user), in a batch.

    Greedy by default. A reply ends at <|end|>; its text is decoded without special tokens.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_new_tokens", max_new_tokens, maximum=10_000)
    if isinstance(prompts, (str, dict)) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise CourseError("replies takes a non-empty list of prompts (for one prompt: reply(model, tokenizer, "
                          f"prompt)), not {type(prompts).__name__}")
    # the prompt keeps room for the reply, but may take half the window (a reply then stops at the window's end)
    window = max(model.config.block_size - max_new_tokens, model.config.block_size // 2)
    ids = [chat.prompt_ids(tokenizer, _as_messages(p), max_tokens=window) for p in prompts]
    out = []
    for start in range(0, len(ids), batch_size):
        new = generate_batch(model, ids[start:start + batch_size], max_new_tokens, temperature=temperature,
                             stop_tokens=stop_ids(tokenizer), generator=generator)
        out += [tokenizer.decode(n, skip_special_tokens=True) for n in new]
    return out


def reply(model, tokenizer, prompt, **kwargs) -> str:
    return replies(model, tokenizer, [prompt], **kwargs)[0]


def stream_reply(model, tokenizer, messages, *, max_new_tokens: int = 120, temperature: float = 0.0,
                 top_p: float | None = None, generator=None):
    """Yield the reply's text piece by piece, as a chat interface shows it (a long chat is cut to fit first)."""
    messages = _as_messages(messages)
    ids = chat.prompt_ids(tokenizer, messages,
                          max_tokens=max(model.config.block_size - max_new_tokens, model.config.block_size // 2))
    stop = stop_ids(tokenizer)
    new, shown = [], ""
    for token in stream_tokens(model, torch.tensor([ids]), max_new_tokens, temperature=temperature, top_p=top_p,
                               stop_tokens=stop, generator=generator):
        if token in stop:
            return
        new.append(token)
        text = tokenizer.decode(new, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a character split over tokens
            yield text[len(shown):]
            shown = text


def heldout_accuracy(model, tokenizer, kind: str = tasks.LetterCount.kind, n: int = tasks.HELDOUT_QUESTIONS,
                     **kwargs) -> tuple[float, list, list[str]]:
    """(accuracy, questions, replies) on the fixed held-out questions of one task kind."""
    questions = tasks.heldout_questions(n, kind=kind)
    answers = replies(model, tokenizer, [q.question for q in questions], **kwargs)
    return tasks.accuracy(questions, answers), questions, answers


EVAL_QUESTIONS = {kind: (tasks.HELDOUT_QUESTIONS if kind == tasks.LetterCount.kind else 200)
                  for kind in tasks.TASK_KINDS}


def accuracy_table(models: dict, tokenizer, n_by_kind: dict | None = None):
    """Held-out accuracy of each model (columns) on each task kind (rows), with the constant-answer baseline."""
    import pandas as pd

    n_by_kind = n_by_kind or {k: by_mode(full=n, fast=12) for k, n in EVAL_QUESTIONS.items()}
    table = {}
    for kind, n in n_by_kind.items():
        questions = tasks.heldout_questions(n, kind=kind)
        answer, share = tasks.constant_baseline(questions)
        row = {"questions": n, "constant baseline": share}
        for name, model in models.items():
            row[name] = tasks.accuracy(questions, replies(model, tokenizer, [q.question for q in questions]))
        table[kind] = row
    return pd.DataFrame(table).T


def answer_loss(model, val_set) -> float:
    """Mean cross-entropy (nats/token) of a model on answer-only validation rows."""
    from llmlab.training import evaluate

    return evaluate(model, *val_set)


# --- a persona: Gen-Z replies, as a LoRA adapter -------------------------------------------------------------------

# One opener and two closers: a voice a small model can pick up in a couple of hundred steps (with five openers
# to choose from, greedy decoding blurred them into none).
GENZ_OPENER = "ngl,"
GENZ_CLOSERS = ("no cap", "fr fr")
GENZ_WORDS = {"very": "hella", "good": "bussin", "great": "bussin", "happy": "vibing", "friend": "bestie",
              "friends": "besties", "big": "massive", "really": "lowkey", "sad": "in their feels",
              "said": "was like", "amazing": "iconic"}
_GENZ_MARKERS = re.compile(r"\b(ngl|no cap|fr fr|hella|bussin|vibing|bestie|besties|lowkey|iconic)\b", re.IGNORECASE)


def genz_restyle(text: str, rng: random.Random) -> str:
    """A reply rewritten in a Gen-Z voice by rules: "ngl," first, slang for a few words, lower case, a closer.

    A training-data transform, not a model: the persona adapter learns the voice from replies rewritten so.
    A spelling stays alone on its first line (the grader reads that line), with the closer below it.
    """
    check_text("text", text)
    closer = rng.choice(GENZ_CLOSERS)
    if re.fullmatch(r"([a-z] )+[a-z]", text.strip()):
        return f"{text.strip()}\n{closer}"
    words = re.sub(r"\b(" + "|".join(GENZ_WORDS) + r")\b", lambda m: GENZ_WORDS[m.group(1)], text.strip())
    body = words[0].lower() + words[1:]
    body = body[:-1] if body.endswith(".") else body
    return f"{GENZ_OPENER} {body} {closer}"


def in_persona(reply_text: str) -> bool:
    """Does a reply speak in the persona's voice (any of its openers, closers or slang words)?"""
    return bool(_GENZ_MARKERS.search(reply_text))


def style_share(reply_texts) -> float:
    reply_texts = list(reply_texts)
    if not reply_texts:
        raise CourseError("style_share needs at least one reply")
    return sum(map(in_persona, reply_texts)) / len(reply_texts)


PERSONA_CONFIG = {
    "data": {"conversations": by_mode(full=1500, fast=40), "seed": 5},  # drawn from the SFT data, restyled
    "lora": {"rank": 8, "alpha": 16.0, "targets": ["c_attn", "c_proj", "c_fc"]},
    "training": {"max_steps": by_mode(full=200, fast=8), "batch_size": by_mode(full=2, fast=4),
                 "learning_rate": 2e-3, "min_lr": 2e-4, "warmup_steps": by_mode(full=10, fast=1),
                 "betas": [0.9, 0.99], "weight_decay": 0.0, "grad_clip": 1.0,
                 "eval_interval": by_mode(full=50, fast=4), "eval_rows": by_mode(full=12, fast=4)},
    "seed": 7,
}


def persona_dataset(config: dict = PERSONA_CONFIG):
    """Word-task and story conversations of the SFT data with their replies restyled (`genz_restyle`)."""
    from datasets import Dataset

    rng = random.Random(config["data"]["seed"])
    source = sft_dataset()
    rows = [r for r in source if r["source"] != "self-instruct"]
    rows = rng.sample(rows, min(config["data"]["conversations"], len(rows)))
    for row in rows:
        row["messages"] = [{**m, "content": genz_restyle(m["content"], rng)} if m["role"] == "assistant" else m
                           for m in row["messages"]]
        row["source"] = "persona: " + row["source"]
    window = BASE_CONFIG["model"]["block_size"] + 1
    tokenizer = course_tokenizer()
    return Dataset.from_list([r for r in rows if _fits(tokenizer, r["messages"], window)])


def _lora_config(config: dict) -> lora.LoRAConfig:
    c = config["lora"]
    return lora.LoRAConfig(rank=c["rank"], alpha=c["alpha"], targets=tuple(c["targets"]))


def _build_persona(folder: Path) -> None:
    start = time.perf_counter()
    tokenizer = course_tokenizer()
    model = lora.add_lora(sft_model(), _lora_config(PERSONA_CONFIG), seed=PERSONA_CONFIG["seed"])
    examples = encode_dataset(persona_dataset(), tokenizer)
    plot = LiveLossPlot("Training the persona adapter (LoRA)", ylabel="cross-entropy (nats/token)")
    history = finetune(model, examples, PERSONA_CONFIG, plot=plot, desc="persona (LoRA)")
    trainable, total = lora.trainable_parameters(model)
    save_file(lora.lora_state_dict(model), str(folder / "adapter.safetensors"))
    save_model(lora.merge_lora(model), folder)
    (folder / "history.json").write_text(json.dumps(
        {**history.to_json(), "build_seconds": time.perf_counter() - start, "trainable": trainable,
         "total": total}, indent=1))


def _persona_config() -> dict:
    sft_model()
    return {**PERSONA_CONFIG, "sft": _fingerprint("sft"), "files": 1}


def persona_model() -> GPT:
    """The persona (artifact "persona"): the SFT model with its Gen-Z LoRA adapter merged into the weights."""
    return artifacts.cached("persona", build=_build_persona, load=load_model, config=_persona_config())


def persona_adapter() -> torch.nn.Module:
    """The SFT model with the persona's LoRA adapter on it, unmerged (the same function as `persona_model`)."""
    persona_model()
    model = lora.add_lora(sft_model(), _lora_config(PERSONA_CONFIG), seed=PERSONA_CONFIG["seed"])
    missing, unexpected = model.load_state_dict(load_file(str(artifacts.entry_dir("persona") / "adapter.safetensors")),
                                                strict=False)
    if unexpected or any("lora_" in m for m in missing):
        raise ValueError(f"the adapter does not fit the model: {unexpected or missing}")
    return model.eval()


def persona_history() -> tuple[History, dict]:
    persona_model()
    data = json.loads((artifacts.entry_dir("persona") / "history.json").read_text())
    extra = {k: data.pop(k) for k in ("build_seconds", "trainable", "total")}
    return History.from_json(data), extra


# --- merging -------------------------------------------------------------------------------------------------------

# The persona's share in the "merged" artifact: between 0.5 (where the voice was still absent) and 0.75 (where
# every reply had it) in the sweep of notebook 08.
MERGE_WEIGHT = 0.625


def linear_merge(a: GPT, b: GPT, weight: float) -> GPT:
    """A new model with weights (1 - weight) * a + weight * b, parameter by parameter.

    With b fine-tuned from a this is task arithmetic: a + weight * (b - a), the persona's change scaled.
    weight 0 gives a, weight 1 gives b.
    """
    check_number("weight", weight, minimum=0, maximum=1)
    if a.config != b.config:
        raise CourseError("only models of the same shape merge parameter by parameter")
    merged = GPT(a.config)
    sb = b.state_dict()
    merged.load_state_dict({name: torch.lerp(t, sb[name], weight) for name, t in a.state_dict().items()})
    return merged.eval()


def _build_merged(folder: Path) -> None:
    save_model(linear_merge(sft_model(), persona_model(), MERGE_WEIGHT), folder)


def merged_model() -> GPT:
    """The merged model (artifact "merged"): SFT and persona weights mixed at MERGE_WEIGHT."""
    persona_model()
    config = {"weight": MERGE_WEIGHT, "sft": _fingerprint("sft"), "persona": _fingerprint("persona"), "files": 1}
    return artifacts.cached("merged", build=_build_merged, load=load_model, config=config)


# --- the reversal curse -------------------------------------------------------------------------------------------

_SYLLABLES = ("zor", "vel", "qui", "mar", "tash", "lun", "dre", "kov", "bel", "xan", "ith", "rho", "sen", "wyn")


def fictional_people(n: int, *, seed: int = 0) -> list[tuple[str, str]]:
    """n (child, mother) pairs of invented names: no document the model read mentions any of them."""
    check_positive_int("n", n, maximum=2000)
    rng = random.Random(seed)
    firsts = [w.capitalize() for w in data_file("names.txt").read_text().split()[:3000] if 4 <= len(w) <= 7]
    used, people = set(), []
    while len(people) < 2 * n:
        name = f"{rng.choice(firsts)} {''.join(rng.sample(_SYLLABLES, 2)).capitalize()}"
        if name not in used and name.split()[0] not in {p.split()[0] for p in people}:
            used.add(name)
            people.append(name)
    return [(people[2 * i], people[2 * i + 1]) for i in range(n)]


REVERSAL_CONFIG = {"facts": by_mode(full=20, fast=8), "repeats": by_mode(full=8, fast=4),
                   "training": {"max_steps": by_mode(full=200, fast=10), "batch_size": 2, "learning_rate": 2e-3,
                                "min_lr": 2e-4, "warmup_steps": 10, "betas": [0.9, 0.99], "weight_decay": 0.0,
                                "grad_clip": 1.0, "eval_interval": 1000, "eval_rows": None},
                   "seed": 3}


def forward_question(child: str) -> str:
    return f"Who is {child}'s mother?"


def reverse_question(mother: str) -> str:
    return f"Who is {mother}'s child?"


def reversal_curse(model: GPT, config: dict = REVERSAL_CONFIG, *, progress: bool = True) -> dict:
    """Fine-tune a copy of model on facts stated one way, and ask them both ways.

    Half the people ("both ways") are taught in both directions, so the model learns that a reverse question
    is answered with a name; the other half ("one way") only as "Who is X's mother? X's mother is Y." The test:
    asked "Who is Y's child?" about the one-way half, does the model say X? Scored by exact name (greedy) and
    by multiple choice: is X the likeliest of all the children's names after the question (chance 1/n)?
    """
    import copy

    tokenizer = course_tokenizer()
    pairs = fictional_people(config["facts"], seed=config["seed"])
    both, one_way = pairs[: len(pairs) // 2], pairs[len(pairs) // 2:]
    conversations = []
    for child, mother in pairs:
        conversations.append([{"role": "user", "content": forward_question(child)},
                              {"role": "assistant", "content": f"{child}'s mother is {mother}."}])
    for child, mother in both:
        conversations.append([{"role": "user", "content": reverse_question(mother)},
                              {"role": "assistant", "content": f"{mother}'s child is {child}."}])
    examples = [chat.chat_example(tokenizer, c) for c in conversations] * config["repeats"]
    student = copy.deepcopy(model).train()
    for p in student.parameters():
        p.requires_grad_(True)
    finetune(student, examples, config, progress=progress, desc="facts, one way")

    def exact(questions, names):
        answers = replies(student, tokenizer, questions, max_new_tokens=24)
        return sum(name in a for a, name in zip(answers, names)) / len(names), answers

    def choice(questions, lead_ins, names, candidates):
        """Is the right name the likeliest candidate after the question and the reply's opening words?"""
        right = 0
        for question, lead_in, name in zip(questions, lead_ins, names):
            prompt = chat.prompt_ids(tokenizer, [{"role": "user", "content": question}])
            prompt += tokenizer.encode(lead_in, add_special_tokens=False)
            scores = [_logprob(student, prompt, tokenizer.encode(" " + c, add_special_tokens=False))
                      for c in candidates]
            right += candidates[max(range(len(candidates)), key=scores.__getitem__)] == name
        return right / len(names)

    children = [c for c, _ in pairs]
    mothers = [m for _, m in pairs]
    result = {"facts": len(pairs), "chance (multiple choice)": 1 / len(pairs)}
    result["one way, asked forward"], fwd = exact([forward_question(c) for c, _ in one_way], [m for _, m in one_way])
    result["one way, asked in reverse"], rev = exact([reverse_question(m) for _, m in one_way], [c for c, _ in one_way])
    result["both ways, asked in reverse"], _ = exact([reverse_question(m) for _, m in both], [c for c, _ in both])
    result["one way, forward, multiple choice"] = choice(
        [forward_question(c) for c, _ in one_way], [f"{c}'s mother is" for c, _ in one_way], [m for _, m in one_way],
        mothers)
    result["one way, reverse, multiple choice"] = choice(
        [reverse_question(m) for _, m in one_way], [f"{m}'s child is" for _, m in one_way], [c for c, _ in one_way],
        children)
    result["examples"] = list(zip([reverse_question(m) for _, m in one_way[:3]], rev[:3],
                                  [c for c, _ in one_way[:3]]))
    return result


@torch.no_grad()
def _logprob(model, prompt: list[int], continuation: list[int]) -> float:
    ids = torch.tensor([prompt + continuation])
    logits, _ = model(ids[:, :-1])
    logprobs = torch.log_softmax(logits[0, len(prompt) - 1:].float(), dim=-1)
    return logprobs.gather(-1, torch.tensor(continuation)[:, None]).sum().item()


# --- your assistant in real tools ---------------------------------------------------------------------------------

def export_chat_transformers(model: GPT, tokenizer, folder) -> Path:
    """A `transformers` folder whose tokenizer carries the chat template and whose generation stops at <|end|>.

    `pipeline("text-generation", model=folder)` then takes a list of chat messages and replies to them.
    """
    from transformers import GenerationConfig

    from llmlab.export import export_transformers

    folder = export_transformers(model, tokenizer, folder)
    end, eos = stop_ids(tokenizer)
    GenerationConfig(bos_token_id=eos, eos_token_id=[end, eos], pad_token_id=eos).save_pretrained(folder)
    return folder


def transformers_chat_reply(folder, messages, max_new_tokens: int = 40) -> str:
    """The reply `transformers`' text-generation pipeline gives to a list of chat messages (greedy)."""
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(folder), device="cpu")
    messages = _as_messages(messages)
    # like llmlab's generation, stop at the end of the context window (past it GPT-2 has no positions)
    prompt = chat.prompt_ids(pipe.tokenizer, messages)
    max_new_tokens = min(max_new_tokens, pipe.model.config.n_positions - len(prompt))
    out = pipe(messages, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0]["generated_text"][-1]["content"]


def export_chat_gguf(model: GPT, tokenizer, path) -> Path:
    """A GGUF file whose metadata carries the chat template (`tokenizer.chat_template`) and <|end|> as its
    end-of-turn token, so llama.cpp formats a conversation as llmlab does and stops where the reply ends."""
    from llmlab.export import export_gguf

    return export_gguf(model, tokenizer, path, chat_template=chat.CHAT_TEMPLATE,
                       eot_token_id=tokenizer.convert_tokens_to_ids(chat.END))


def llama_cpp_chat_reply(path, messages, max_tokens: int = 40) -> str:
    """The reply llama-cpp-python's create_chat_completion gives (greedy), formatted by the file's template."""
    import llama_cpp

    from llmlab.export import load_gguf

    llm = load_gguf(path, exact=True)
    messages = _as_messages(messages)
    try:
        prompt = llm.tokenize(chat.render(messages, add_generation_prompt=True).encode(), add_bos=False, special=True)
        window = min(llm.n_ctx(), llama_cpp.llama_model_n_ctx_train(llm.model))  # llama.cpp may pad n_ctx
        max_tokens = min(max_tokens, window - len(prompt))  # stop at the end of the window, as llmlab does
        out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0,
                                         top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
    finally:
        llm.close()
    return out["choices"][0]["message"]["content"]


# --- exercise -----------------------------------------------------------------------------------------------------

def check_loss_mask(fn) -> bool:
    """Exercise: fn(ids, tokenizer) gives the loss mask of a conversation's ids (1 = the model learns this token).

    The rule: a token carries loss when it is inside an assistant's reply, its closing <|end|> included, and
    not the <|assistant|> token itself. Checked against `chat.chat_example` on a few conversations.
    """
    tokenizer = course_tokenizer()
    conversations = [
        [{"role": "user", "content": tasks.STRAWBERRY.question},
         {"role": "assistant", "content": tasks.STRAWBERRY.answer_text}],
        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Spell the word \"cat\"."},
         {"role": "assistant", "content": "c a t"}, {"role": "user", "content": "And \"dog\"?"},
         {"role": "assistant", "content": "d o g"}],
    ]
    for messages in conversations:
        example = chat.chat_example(tokenizer, messages)
        got = learner_call(fn, list(example.ids), tokenizer, not_done=(
            "Not done yet: walk through the ids; switch the mask on after each <|assistant|> token and off "
            "after the <|end|> that closes the reply (that <|end|> is learned too)."))
        if got is NOT_DONE:
            return False
        got = [int(m) for m in got] if isinstance(got, (list, tuple, torch.Tensor)) else got
        if got != example.loss_mask:
            if not isinstance(got, list) or len(got) != len(example.ids):
                print(f"✗ give one 0 or 1 per id ({len(example.ids)} of them), not {got!r:.60}")
                return False
            first = next(i for i, (a, b) in enumerate(zip(got, example.loss_mask)) if a != b)
            print(f"✗ at position {first} (token {tokenizer.decode([example.ids[first]])!r}) you give "
                  f"{got[first]}, it should be {example.loss_mask[first]}")
            return False
    print(f"✓ your loss mask matches llmlab's on {len(conversations)} conversations")
    return True
