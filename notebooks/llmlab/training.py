"""The training loop: what turns batches of token ids into a model that predicts the next token.

One step, repeated:

    loss = model(inputs, targets)      how surprised is the model by each next token (cross-entropy, nats)
    loss.backward()                    which way to move every weight to be less surprised
    clip_gradients(...)                one unlucky batch may not take a giant step
    set_learning_rate(...)             warm up, then cosine decay to a floor
    optimizer.step()                   AdamW moves the weights

Every eval_interval steps the model is scored on validation rows it never trains on, and the loss plot and the
progress bar are updated. Checkpoints are plain safetensors files plus a JSON config, readable by any tool.

Speed without changing the steps: AdamW fused into one kernel per tensor; where TrainConfig asks for it and the
machine allows it, the forward pass in bfloat16 (`bfloat16`) and the model compiled into fused kernels
(`compile`). `llmlab.pretraining.trainer_speed` measures what they buy on the base model (notebook 06).
"""

import itertools
import json
import math
import numbers
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors.torch import load_model as _load_weights
from safetensors.torch import save_model as _save_weights
from llmlab.progress import progress_bar as tqdm  # a widget live, a final text line in saved notebooks

from llmlab.checks import CourseError, check_number, check_positive_int
from llmlab.gpt import GPT, GPTConfig
from llmlab.runtime import native_bfloat16


@dataclass
class TrainConfig:
    max_steps: int
    batch_size: int
    learning_rate: float = 1e-3  # the peak, reached at the end of warm-up
    min_lr: float = 1e-4  # the floor the cosine decays to
    warmup_steps: int = 100
    betas: tuple[float, float] = (0.9, 0.99)  # 0.99, not 0.999: small batches, so a shorter memory
    weight_decay: float = 0.1  # on matrices only, never on biases or norms
    grad_clip: float | None = 1.0  # the largest gradient norm a step may take; None: no clipping at all
    eval_interval: int = 250
    eval_rows: int | None = None  # validation rows scored at each evaluation (None: all); all again at the end
    bfloat16: bool = False  # forward pass in bfloat16 (autocast) where the CPU multiplies it in hardware
    compile: bool = False  # torch.compile the model first (under a minute, once) where this machine can

    def __post_init__(self):
        """Refuse settings that would train silently wrong (a negative clip flips every gradient)."""
        check_positive_int("max_steps", self.max_steps)
        check_positive_int("batch_size", self.batch_size)
        check_number("learning_rate", self.learning_rate, minimum=0, strict_minimum=True)
        check_number("min_lr", self.min_lr, minimum=0, maximum=self.learning_rate)
        check_positive_int("warmup_steps", self.warmup_steps, minimum=0)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise CourseError(f"betas must be a pair such as (0.9, 0.99), not {self.betas!r}")
        for beta in self.betas:
            check_number("each of betas", beta, minimum=0, maximum=0.9999)
        check_number("weight_decay", self.weight_decay, minimum=0)
        if self.grad_clip is not None:  # 0 is refused rather than read as "off": say None to mean no clipping
            try:
                check_number("grad_clip", self.grad_clip, minimum=0, strict_minimum=True)
            except CourseError:
                raise CourseError(f"grad_clip must be a number > 0 (1.0 is usual), or None for no clipping, "
                                  f"not {self.grad_clip!r}") from None
        check_positive_int("eval_interval", self.eval_interval)
        for name in ("bfloat16", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise CourseError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.eval_rows is not None:
            check_positive_int("eval_rows", self.eval_rows)


# --- the pieces of one step -----------------------------------------------------------------------------------

def learning_rate(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """The learning rate at step (counting from 0): linear warm-up, cosine decay, then the floor.

    Warm-up: Adam's running statistics are empty at the start, so early steps are kept small. Cosine: big
    steps while the loss falls fast, ever finer ones as it settles. Floor: min_lr once max_steps is reached.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)  # 0 -> 1 over the decay
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def clip_gradients(parameters, max_norm: float) -> torch.Tensor:
    """Scale all gradients together so their global L2 norm is at most max_norm; return the norm before.

    One norm over every parameter (not one per tensor), so the direction of the step is kept and only its
    length is capped: what torch.nn.utils.clip_grad_norm_ does. max_norm=float("inf") measures without clipping.
    """
    if max_norm != float("inf"):
        check_number("max_norm", max_norm, minimum=0, strict_minimum=True)  # a negative one would flip the step
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # never scales up
    torch._foreach_mul_(grads, scale)
    return total


def make_optimizer(model: torch.nn.Module, config: TrainConfig, fused: bool = True) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight matrices and embeddings only.

    Decay pulls weights towards zero; a bias or a norm's gain has no reason to be small, so they are left out.
    fused=False takes torch's default path on a CPU instead (pretraining.trainer_speed compares the two).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # fused: one kernel per tensor for the whole update. On a CPU torch's default is a loop of small operations
    # per tensor, 14 % of the time of a step of rows of 2 on the base model.
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=config.betas, fused=fused)


@torch.no_grad()
def evaluate(model, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 64) -> float:
    """Mean cross-entropy (nats per token) over all the given rows; ignored targets do not count.

    Rows with no target to score (none at all, or every target ignored) are refused: a loss of 0 would look perfect.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(inputs), batch_size):
            x, y = inputs[start:start + batch_size], targets[start:start + batch_size]
            n = int((y != -100).sum())
            if n:
                _, loss = model(x, y)
                total, count = total + float(loss) * n, count + n
    finally:
        model.train(was_training)
    if count == 0:
        raise CourseError(f"nothing to score: the {len(inputs)} rows given hold no target that is not ignored "
                          "(-100); pass validation rows with real next tokens")
    return total / count


# --- the loop -------------------------------------------------------------------------------------------------

@dataclass
class History:
    """What a run leaves behind: losses per step and per evaluation, throughput, time."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # before clipping: how often clipping kicked in
    eval_steps: list[int] = field(default_factory=list)
    val_loss: dict[str, list[float]] = field(default_factory=dict)  # per validation set, on its first eval_rows
    final_val_loss: dict[str, float] = field(default_factory=dict)  # per validation set, on every row, at the end
    tokens_seen: int = 0
    train_seconds: float = 0.0  # time spent on training steps (evaluations and compiling not counted)
    compile_seconds: float = 0.0  # torch.compile's one-off cost (config.compile)
    wall_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_seen / max(self.train_seconds, 1e-9)

    def final_train_loss(self, last: int = 50) -> float:
        """Mean training loss over the last steps (one batch's loss is noisy)."""
        tail = self.train_loss[-last:]
        return sum(tail) / len(tail)

    def to_json(self) -> dict:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second}

    @classmethod
    def from_json(cls, data: dict) -> "History":
        data = {k: v for k, v in data.items() if k != "tokens_per_second"}
        return cls(**data)


def mixed_precision(model, enabled: bool):
    """A context for the forward pass: bfloat16 autocast when enabled and the hardware has it, else nothing.

    Autocast runs matrix products in bfloat16 (half the bytes, and Intel AMX multiplies them natively) and keeps
    what needs the range in float32: the softmax, the layer norms, the loss, the weights and their gradients.
    """
    device = next(model.parameters()).device
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else native_bfloat16()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and native)


def compiled(model, example: tuple[torch.Tensor, torch.Tensor], autocast):
    """model through torch.compile, tried on one example step; model itself where compiling fails here.

    Compiling fuses the hundreds of small operations of a step (casts, GELU, the loss) into a few C++ kernels.
    On a CPU it needs a C++ compiler; where there is none the course trains without it, a little slower.
    """
    fast = torch.compile(model)
    try:
        with autocast:
            _, loss = fast(*example)
        loss.backward()  # compiles the backward pass too
    except Exception as error:  # no compiler, an unsupported platform: say so in one line and go on
        print(f"torch.compile does not work here ({type(error).__name__}: {str(error).strip()[:120]}); "
              "training without it.")
        fast = model
    model.zero_grad(set_to_none=True)
    return fast


def training_step(forward, optimizer, batch: tuple[torch.Tensor, torch.Tensor], autocast,
                  grad_clip: float | None) -> tuple[float, float]:
    """One update: the loss of the batch, its gradients, clipped, one optimizer step. Returns (loss, grad norm).

    forward is the model, or the model compiled; autocast a context from mixed_precision.
    """
    with autocast:
        _, loss = forward(*batch)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = clip_gradients(params, grad_clip or float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item(), float(grad_norm)


def train(model, train_batches: Iterator[tuple[torch.Tensor, torch.Tensor]], config: TrainConfig, *,
          val_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None, plot=None,
          on_eval: Callable[[int, torch.nn.Module, "History"], None] | None = None, progress: bool = True,
          desc: str = "training") -> History:
    """Train model for config.max_steps steps on train_batches; return its History.

    val_sets: named (inputs, targets) rows: the first eval_rows scored every eval_interval steps and after the
    last step (history.val_loss), every row scored once at the end (history.final_val_loss).
    plot: a llmlab.plots.LiveLossPlot to redraw at each evaluation (None: no plot).
    on_eval(step, model, history): called after each evaluation (to save a checkpoint, plot, print a sample).
    """
    val_sets = val_sets or {}
    history = History(val_loss={name: [] for name in val_sets})
    optimizer = make_optimizer(model, config)
    autocast = mixed_precision(model, config.bfloat16)  # evaluations stay in float32: the numbers we report
    model.train()
    start = time.perf_counter()
    forward = model
    if config.compile:
        first = next(train_batches)
        forward = compiled(model, first, autocast)
        train_batches = itertools.chain([first], train_batches)
        history.compile_seconds = time.perf_counter() - start
    bar = tqdm(range(config.max_steps), desc=desc, disable=not progress, unit="step")
    since_eval: list[float] = []

    def run_evaluation(step: int) -> None:
        history.eval_steps.append(step)
        for name, (inputs, targets) in val_sets.items():  # the same rows each time, so the curve compares like
            n = config.eval_rows or len(inputs)          # with like
            history.val_loss[name].append(evaluate(model, inputs[:n], targets[:n]))
        if plot is not None:
            if since_eval:
                plot.add("train", step, sum(since_eval) / len(since_eval))
            for name, losses in history.val_loss.items():
                plot.add(name if len(val_sets) > 1 else "validation", step, losses[-1])
            plot.show()
        since_eval.clear()
        if on_eval is not None:
            on_eval(step, model, history)

    for step in bar:
        step_start = time.perf_counter()
        lr = learning_rate(step, max_lr=config.learning_rate, min_lr=config.min_lr,
                           warmup_steps=config.warmup_steps, max_steps=config.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = next(train_batches)
        loss_value, grad_norm = training_step(forward, optimizer, (inputs, targets), autocast, config.grad_clip)
        if not math.isfinite(loss_value):  # a NaN never recovers: stop now and say why
            raise CourseError(f"the training loss became {loss_value} at step {step}: the weights blew up; "
                              f"try a smaller learning_rate than {config.learning_rate:g} (or keep grad_clip on)")
        history.train_seconds += time.perf_counter() - step_start
        history.tokens_seen += inputs.numel()
        history.steps.append(step)
        history.train_loss.append(loss_value)
        history.lr.append(lr)
        history.grad_norm.append(grad_norm)
        since_eval.append(loss_value)
        if step % 10 == 0 or step == config.max_steps - 1:
            bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{history.tokens_per_second:,.0f}")
        done = step + 1  # updates made so far
        if done % config.eval_interval == 0 or done == config.max_steps:
            run_evaluation(done)
    bar.close()
    for name, (inputs, targets) in val_sets.items():
        scored_all = not config.eval_rows or config.eval_rows >= len(inputs)
        history.final_val_loss[name] = history.val_loss[name][-1] if scored_all else evaluate(model, inputs, targets)
    history.wall_seconds = time.perf_counter() - start
    model.eval()
    return history


# --- checkpoints ----------------------------------------------------------------------------------------------

def save_model(model: GPT, folder: Path) -> None:
    """model.safetensors (the weights; a tied matrix stored once) and config.json (the GPTConfig)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save_weights(model, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(asdict(model.config), indent=2))


def load_model(folder: Path) -> GPT:
    """The GPT saved in folder by save_model, in eval mode, on the CPU."""
    folder = Path(folder)
    config = GPTConfig(**json.loads((folder / "config.json").read_text()))
    model = GPT(config)
    _load_weights(model, str(folder / "model.safetensors"), device="cpu")
    return model.eval()


# --- exercise -------------------------------------------------------------------------------------------------

def check_learning_rate(fn: Callable[..., float]) -> bool:
    """Check a learner's schedule fn(step, max_lr=, min_lr=, warmup_steps=, max_steps=) against ours."""
    settings = dict(max_lr=1e-3, min_lr=1e-4, warmup_steps=100, max_steps=2000)
    steps = [0, 49, 99, 100, 550, 1050, 1999, 2000, 2500]
    try:
        for step in steps:
            got, want = fn(step, **settings), learning_rate(step, **settings)
            if isinstance(got, bool) or not isinstance(got, numbers.Real):
                print(f"✗ at step {step} your function returns {got!r:.40}; it should return a number.")
                return False
            if not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12):
                phase = "warm-up" if step < 100 else "the floor" if step >= 2000 else "cosine decay"
                print(f"✗ at step {step} ({phase}) you give {got:.6g}, it should be {want:.6g}.")
                return False
    except NotImplementedError:
        print("Not done yet: during warm-up grow linearly to max_lr (step + 1) / warmup_steps of the way; "
              "then decay along half a cosine to min_lr at max_steps; after that stay at min_lr.")
        return False
    except Exception as error:  # the learner's bug, in one line
        print(f"✗ your function raised {type(error).__name__}: {error}")
        return False
    print(f"✓ your schedule matches at steps {steps}.")
    return True
