"""The course's base model: a small GPT pretrained on a mixture of the course corpora (artifact "base").

    model = base_model()        # from the cache in a second, or pretrained once (BUILD_TAKES says how long)

The recipe is BASE_CONFIG: the data mixture (sources and sampling proportions), the model's shape and the
training settings. The artifact folder holds the final weights (model.safetensors + config.json), a few
earlier checkpoints (checkpoints/step_NNNNN/), the training history (history.json) and the mixture table
(mixture.json), so notebook 06 can show the loss curve and the model getting better without training again.
"""

import hashlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from llmlab import artifacts, sizing
from llmlab.data import (IGNORE_INDEX, VALIDATION_SOURCES, MixtureRow, batches, cut_rows, inputs_and_targets, mixture_documents,
                         pack_documents, sample_mixture, split_documents)
from llmlab.gpt import GPT, GPTConfig
from llmlab.plots import LiveLossPlot
from llmlab.progress import progress_bar as tqdm
from llmlab.runtime import by_mode, seed_everything
from llmlab.tokenizer import course_tokenizer
from llmlab.training import (History, TrainConfig, compiled, load_model, make_optimizer, mixed_precision, save_model,
                             train, training_step)

ARTIFACT_NAME = "base"

# Every setting the base model depends on. Sizes are picked so the full build takes about 6 minutes on a
# 2-core laptop CPU (4.1 M tokens at about 12 k tokens/s): the cost of a model that writes little stories,
# paid once per machine (the cache keeps it). Fast mode is a toy that trains in seconds.
# Measured side by side at equal wall time (2 threads each): 90% TinyStories instead of 65% took the TinyStories
# validation loss from 0.93 to 0.87 nats/character; 6 layers or 192 wide learned less in the same time (fewer
# steps). Rows of 8 in bfloat16, compiled, run faster than rows of 2 in float32 (trainer_speed, below; notebook 06
# shows by how much) and learned as much per token (0.853 vs 0.851 nats/char after the same 3.4 M tokens).
BASE_CONFIG = {
    "data": {
        # Sampling proportions, as LLaMA's Table 1 gives them: the share of the training tokens drawn from each
        # source, whatever its size. The stories are what the course needs the model to write; Shakespeare
        # stays as a small second source (and a second validation set that shows what the mixture trades).
        "proportions": {"TinyStories": 0.9, "Shakespeare": 0.1},
        "val_fraction": 0.05,  # of Shakespeare's passages, held out whole (TinyStories has its own validation)
        "max_documents": by_mode(full=None, fast=60),  # per source (fast mode tokenizes only a few)
        "seed": 0,
    },
    "model": {"n_layer": by_mode(full=4, fast=2), "n_head": by_mode(full=4, fast=2),
              "n_embd": by_mode(full=128, fast=32), "block_size": by_mode(full=256, fast=64),
              "dropout": 0.0, "bias": True},
    "training": {"max_steps": by_mode(full=2000, fast=30), "batch_size": 8,
                 "learning_rate": 3e-3, "min_lr": 3e-4, "warmup_steps": by_mode(full=100, fast=5),
                 "betas": [0.9, 0.99], "weight_decay": 0.1, "grad_clip": 1.0,
                 "eval_interval": by_mode(full=200, fast=10), "eval_rows": by_mode(full=24, fast=8),
                 # bfloat16 only where the CPU multiplies it in hardware; compiling costs ~45 s, so not in fast mode
                 "bfloat16": by_mode(full=True, fast=False), "compile": by_mode(full=True, fast=False)},
    "checkpoints": by_mode(full=[200, 600, 1000], fast=[10, 20]),  # earlier models, kept to watch them improve
    "seed": 1337,
}


def train_config(config: dict = BASE_CONFIG) -> TrainConfig:
    settings = dict(config["training"])
    settings["betas"] = tuple(settings["betas"])
    return TrainConfig(**settings)


def model_config(tokenizer, config: dict = BASE_CONFIG) -> GPTConfig:
    return GPTConfig(vocab_size=len(tokenizer), **config["model"])


def total_training_tokens(config: dict = BASE_CONFIG) -> int:
    t, m = config["training"], config["model"]
    return t["max_steps"] * t["batch_size"] * m["block_size"]


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the tokenizer's vocabulary and merges: a new tokenizer makes the base model stale."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


# --- data -----------------------------------------------------------------------------------------------------

@dataclass
class PretrainingData:
    train_stream: torch.Tensor  # the packed training mixture, 1-D token ids
    val_sets: dict[str, tuple[torch.Tensor, torch.Tensor]]  # per source: (inputs, targets) rows
    mixture: list[MixtureRow]
    eot: int
    val_characters: dict[str, int]  # per source: characters of the validation documents

    def nats_per_character(self, name: str, nats_per_token: float) -> float:
        """A validation loss in a unit no tokenizer can flatter: the nats of all its tokens over its characters.

        (A tokenizer with longer tokens has fewer, harder tokens: nats/token rises while the model is no worse.)
        """
        _, targets = self.val_sets[name]
        return nats_per_token * int((targets != IGNORE_INDEX).sum()) / self.val_characters[name]


def encode_documents(tokenizer, documents: list[str]) -> list[list[int]]:
    """Token ids of each document (no special tokens; packing adds <|endoftext|>)."""
    return tokenizer(documents, add_special_tokens=False)["input_ids"]


def pretraining_data(tokenizer, config: dict = BASE_CONFIG) -> PretrainingData:
    """Documents of each source -> train/val split -> the sampled mixture -> one packed stream, and val rows."""
    data = config["data"]
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    block_size = config["model"]["block_size"]
    train_sources, val_sets, val_characters = {}, {}, {}
    for name, documents in mixture_documents(data["proportions"]).items():
        documents = documents[: data["max_documents"]]
        if name in VALIDATION_SOURCES:  # a validation set of its own (TinyStories' validation split)
            train_docs, val_docs = documents, VALIDATION_SOURCES[name]()[: data["max_documents"]]
        else:  # whole documents held out
            train_docs, val_docs = split_documents(documents, data["val_fraction"], seed=data["seed"])
        train_sources[name] = encode_documents(tokenizer, train_docs)
        val_stream = pack_documents(encode_documents(tokenizer, val_docs), eot)
        val_sets[name] = inputs_and_targets(cut_rows(val_stream, block_size), pad_id=eot)
        val_characters[name] = sum(len(d) for d in val_docs)
    drawn, mixture = sample_mixture(train_sources, data["proportions"], total_training_tokens(config),
                                    seed=data["seed"])
    return PretrainingData(pack_documents(drawn, eot), val_sets, mixture, eot, val_characters)


# --- the artifact ---------------------------------------------------------------------------------------------

def checkpoint_dir(folder: Path, step: int) -> Path:
    return Path(folder) / "checkpoints" / f"step_{step:05d}"


def pretrain(tokenizer, config: dict = BASE_CONFIG, folder: Path | None = None, *, plot: bool = True,
             progress: bool = True) -> tuple[GPT, History, PretrainingData]:
    """Pretrain a GPT with config (seeded); save checkpoints into folder/checkpoints when folder is given."""
    seed_everything(config["seed"])
    data = pretraining_data(tokenizer, config)
    model = GPT(model_config(tokenizer, config))
    generator = torch.Generator().manual_seed(config["seed"])
    rows = batches(data.train_stream, config["model"]["block_size"], config["training"]["batch_size"],
                   pad_id=data.eot, generator=generator)

    def save_checkpoint(step: int, model: GPT, history: History) -> None:
        if folder is not None and step in config["checkpoints"]:
            save_model(model, checkpoint_dir(folder, step))

    live = LiveLossPlot("Pretraining the course base model", ylabel="cross-entropy (nats/token)") if plot else None
    history = train(model, rows, train_config(config), val_sets=data.val_sets, plot=live,
                    on_eval=save_checkpoint, progress=progress, desc="pretraining base")
    return model, history, data


def _build(tokenizer):
    def build(folder: Path) -> None:
        start = time.perf_counter()
        model, history, data = pretrain(tokenizer, BASE_CONFIG, folder)
        save_model(model, folder)
        per_char = {name: data.nats_per_character(name, loss) for name, loss in history.final_val_loss.items()}
        (folder / "history.json").write_text(json.dumps(
            {**history.to_json(), "build_seconds": time.perf_counter() - start,
             "final_val_nats_per_char": per_char}, indent=1))
        (folder / "mixture.json").write_text(json.dumps([asdict(row) for row in data.mixture], indent=1))

    return build


def _artifact_config(tokenizer) -> dict:
    return {**BASE_CONFIG, "tokenizer": tokenizer_fingerprint(tokenizer), "files": 3}  # files: its format version


BUILD_TAKES = by_mode(full="notebook 06's pretraining run, about 6 minutes on 2 CPU cores",
                      fast="the fast-mode toy, a few seconds")


def base_model() -> GPT:
    """The pretrained course GPT (artifact "base"), in eval mode on the CPU: cached, or pretrained once."""
    tokenizer = course_tokenizer()
    return artifacts.cached(ARTIFACT_NAME, build=_build(tokenizer), load=load_model,
                            config=_artifact_config(tokenizer), takes=BUILD_TAKES)


def base_folder() -> Path:
    """The artifact folder of the base model (built first if needed)."""
    base_model()
    return artifacts.entry_dir(ARTIFACT_NAME)


def base_history() -> tuple[History, float]:
    """The base model's training history and its build time in seconds."""
    data = json.loads((base_folder() / "history.json").read_text())
    build_seconds = data.pop("build_seconds")
    data.pop("final_val_nats_per_char")
    return History.from_json(data), build_seconds


def base_nats_per_char() -> dict[str, float]:
    """The base model's final validation loss per source in nats per character (tokenizer-free)."""
    return json.loads((base_folder() / "history.json").read_text())["final_val_nats_per_char"]


def base_mixture() -> list[MixtureRow]:
    return [MixtureRow(**row) for row in json.loads((base_folder() / "mixture.json").read_text())]


def base_checkpoints() -> dict[int, GPT]:
    """The base model at its saved steps, and at the end, by step."""
    folder = base_folder()
    found = {step: load_model(checkpoint_dir(folder, step)) for step in BASE_CONFIG["checkpoints"]}
    found[BASE_CONFIG["training"]["max_steps"]] = load_model(folder)
    return found


# --- the trainer's speed, before and after -------------------------------------------------------------------

EARLIER_SPEED_SETTINGS = {"batch_size": 2, "bfloat16": False, "compile": False, "fused_optimizer": False}
"""How the base model trained before the trainer's speed-ups: rows of 2 in float32, the model as written, AdamW on
torch's default CPU path."""


def speed_settings(config: dict = BASE_CONFIG) -> dict:
    t = config["training"]
    return {"batch_size": t["batch_size"], "bfloat16": t["bfloat16"], "compile": t["compile"], "fused_optimizer": True}


class _Contender:
    """A base-shaped model with its optimizer and batches, taking training steps on turn."""

    def __init__(self, tokenizer, data: PretrainingData, settings: dict):
        seed_everything(BASE_CONFIG["seed"])
        self.model = GPT(model_config(tokenizer)).train()
        config = replace(train_config(), batch_size=settings["batch_size"], bfloat16=settings["bfloat16"],
                         compile=settings["compile"])
        self.grad_clip = config.grad_clip
        self.optimizer = make_optimizer(self.model, config, fused=settings["fused_optimizer"])
        self.autocast = mixed_precision(self.model, config.bfloat16)
        self.batches = batches(data.train_stream, self.model.config.block_size, config.batch_size, pad_id=data.eot,
                               generator=torch.Generator().manual_seed(0))
        self.tokens_per_step = config.batch_size * self.model.config.block_size
        start = time.perf_counter()
        self.forward = compiled(self.model, next(self.batches), self.autocast) if config.compile else self.model
        self.compile_seconds = time.perf_counter() - start

    def turn(self, tokens: int) -> float:
        """Train on about `tokens` tokens; return the tokens/s."""
        steps = max(1, tokens // self.tokens_per_step)
        start = time.perf_counter()
        for _ in range(steps):
            training_step(self.forward, self.optimizer, next(self.batches), self.autocast, self.grad_clip)
        return steps * self.tokens_per_step / (time.perf_counter() - start)


def trainer_speed(tokenizer, data: PretrainingData, *, rounds: int, tokens_per_turn: int = 8192,
                  before: dict = EARLIER_SPEED_SETTINGS, after: dict | None = None, progress: bool = True) -> dict:
    """Tokens/s of the base model's training step with the `before` and `after` settings, measured side by side.

    Two base-shaped models take turns, tokens_per_turn tokens each, for `rounds` rounds, so a slow spell of the
    machine slows both alike. Returns the median tokens/s of each, the median of the per-round ratios (speedup)
    with its quartiles (half the rounds lie between them), and the one-off compile time.
    """
    contenders = {"before": _Contender(tokenizer, data, before),
                  "after": _Contender(tokenizer, data, after or speed_settings())}
    for contender in contenders.values():  # one turn each, not timed: memory allocated, caches warm
        contender.turn(tokens_per_turn)
    speeds = {name: [] for name in contenders}
    for _ in tqdm(range(rounds), desc="before and after, in turns", disable=not progress, unit="round"):
        for name, contender in contenders.items():
            speeds[name].append(contender.turn(tokens_per_turn))
    ratios = [a / b for a, b in zip(speeds["after"], speeds["before"])]
    low, median, high = statistics.quantiles(ratios, n=4, method="inclusive")
    return {"tokens_per_s_before": round(statistics.median(speeds["before"])),
            "tokens_per_s_after": round(statistics.median(speeds["after"])),
            "speedup": round(median, 2), "speedup_quartiles": [round(low, 2), round(high, 2)],
            "compile_s": round(contenders["after"].compile_seconds, 1)}


# --- a scaling experiment -------------------------------------------------------------------------------------

SCALING_SETTINGS = {"batch_size": 2, "learning_rate": 2e-3, "min_lr": 2e-4, "bfloat16": False, "compile": False}


def training_flops(model: GPT, tokens: int) -> float:
    """The compute of training `model` on `tokens` tokens, by the 6 x parameters x tokens rule (Kaplan et al.).

    The parameters counted are those that do matrix products, the tied output layer included; the position
    table is a lookup.
    """
    return sizing.training_flops(model.num_parameters(non_embedding=True), tokens)


def train_for_compute(model_config: GPTConfig, data: PretrainingData, flops: float, *,
                      config: dict = BASE_CONFIG, on_eval=None, desc: str = "") -> tuple[GPT, History]:
    """Train a model of this shape on as many tokens as `flops` of compute buys, with the base model's recipe.

    Each run gets the whole schedule (warm-up, cosine to the floor) over its own number of steps, which is how
    a compute-matched comparison is run: a bigger model takes fewer steps. These runs are short, so they take
    SCALING_SETTINGS: rows of 2 (four times the base model's steps from the same tokens), at the learning rates
    measured best for rows of 2, in plain float32 (compiling would cost more time than it saves).
    """
    seed_everything(config["seed"])
    model = GPT(model_config)
    base = replace(train_config(config), **SCALING_SETTINGS)
    tokens_per_step = base.batch_size * model_config.block_size
    max_steps = max(10, round(flops / training_flops(model, tokens_per_step)))
    settings = replace(base, max_steps=max_steps, warmup_steps=min(base.warmup_steps, max_steps // 10),
                       eval_interval=max(1, max_steps // 6))
    rows = batches(data.train_stream, model_config.block_size, settings.batch_size, pad_id=data.eot,
                   generator=torch.Generator().manual_seed(config["seed"]))
    history = train(model, rows, settings, val_sets=data.val_sets, on_eval=on_eval,
                    desc=desc or f"{model.num_parameters() / 1e6:.2f} M parameters")
    return model, history
