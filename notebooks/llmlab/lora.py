"""LoRA from scratch: fine-tune a few low-rank matrices instead of every weight.

A weight matrix W (out x in) of a trained model stays frozen. Beside it, LoRA learns two thin matrices,
A (rank x in) and B (out x rank), and the layer computes

    y = W x + b + (alpha / rank) * B A x

B starts at zero, so at step 0 the adapted model IS the model it started from; A starts random (Kaiming-uniform,
as `peft` does) so the gradient of B is not zero. Only A and B train: for rank 8 on this course's GPT that is a
few percent of the parameters (`trainable_share`), and the optimizer keeps state for those alone.

After training the adapter can be folded into the weights, W' = W + (alpha / rank) * B A (`merge_lora`): the
same function, no extra cost at inference, and a model any tool can run. `to_peft` builds the same adapter with
Hugging Face `peft` on the `transformers` GPT-2 twin of the model, so a test can check this file against it.

Which layers to adapt is named the way GPT-2 names them: `c_attn` (queries, keys and values at once), `c_proj`
(the attention's output and the MLP's down projection), `c_fc` (the MLP's up projection).
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from llmlab.checks import CourseError, check_number, check_positive_int

GPT2_PROJECTIONS = ("c_attn", "c_proj", "c_fc")


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0  # the update is scaled by alpha / rank, so changing the rank keeps its size comparable
    targets: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")  # which projections get an adapter

    def __post_init__(self):
        check_positive_int("rank", self.rank, maximum=4096)
        check_number("alpha", self.alpha, minimum=0, strict_minimum=True)
        if not isinstance(self.targets, (str, list, tuple)):
            raise CourseError(f"targets must name some of the projections {list(GPT2_PROJECTIONS)}, "
                              f"not {self.targets!r:.60}")
        targets = tuple(self.targets) if not isinstance(self.targets, str) else (self.targets,)
        unknown = [t for t in targets if t not in GPT2_PROJECTIONS]
        if unknown or not targets:
            raise CourseError(f"targets must name some of the projections {list(GPT2_PROJECTIONS)}, not {self.targets!r}")
        object.__setattr__(self, "targets", targets)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_json(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}


class LoRALinear(nn.Module):
    """An nn.Linear with a frozen weight and a trainable low-rank update: base(x) + scaling * B(A(x))."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise CourseError(f"LoRA wraps an nn.Linear, not {type(base).__name__}")
        check_positive_int("rank", rank, maximum=min(base.in_features, base.out_features))
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))  # zero: the adapter starts as a no-op
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init, as peft uses

    def delta_weight(self) -> torch.Tensor:
        """The update the adapter adds to the weight: scaling * B A, shape (out, in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x):
        return self.base(x) + self.scaling * ((x @ self.lora_A.t()) @ self.lora_B.t())

    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing the same function: W + scaling * B A."""
        linear = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(self.base.weight + self.delta_weight())
            if self.base.bias is not None:
                linear.bias.copy_(self.base.bias)
        return linear


def _targets(model: nn.Module, config: LoRAConfig) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, module) of every projection named in config.targets."""
    found = []
    for name, module in model.named_modules():
        for attribute, child in module.named_children():
            if attribute in config.targets and isinstance(child, (nn.Linear, LoRALinear)):
                found.append((module, attribute, child))
    if not found:
        raise CourseError(f"the model has no projection named {list(config.targets)}")
    return found


def add_lora(model: nn.Module, config: LoRAConfig = LoRAConfig(), *, seed: int = 0) -> nn.Module:
    """Put a LoRA adapter on each target projection of model (in place) and freeze everything else.

    Returns the model. The adapters' A matrices are drawn with the seed, so the same call gives the same model.
    """
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise CourseError("the model already has LoRA adapters: merge them first (merge_lora) or start from a copy")
    for p in model.parameters():
        p.requires_grad_(False)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for parent, attribute, linear in _targets(model, config):
            setattr(parent, attribute, LoRALinear(linear, config.rank, config.alpha))
    finally:
        torch.random.set_rng_state(generator_state)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (in place): a plain model computing the same function. Returns it."""
    found = False
    for module in list(model.modules()):
        for attribute, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, attribute, child.merged())
                found = True
    if not found:
        raise CourseError("the model has no LoRA adapters to merge")
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; a tied matrix is counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def trainable_share(model: nn.Module) -> float:
    """The share of the model's parameters that training updates."""
    trainable, total = trainable_parameters(model)
    return trainable / total


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' matrices: what a LoRA checkpoint holds (a few hundred kilobytes, not the model)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


# --- the same adapter in Hugging Face peft ------------------------------------------------------------------------

def to_peft(model: nn.Module, config: LoRAConfig):
    """The `peft` version of a LoRA-adapted course GPT: its `transformers` GPT-2 twin with peft's LoRA on the
    same projections, holding the same weights and the same adapter matrices.

    GPT-2 in `transformers` stores its projections as Conv1D (in x out), the transpose of nn.Linear; peft's
    fan_in_fan_out=True says so. peft's lora_A and lora_B are nn.Linear layers holding exactly our A and B.
    """
    from peft import LoraConfig as PeftLoraConfig, get_peft_model

    from llmlab.gpt import GPT, to_transformers

    adapters = {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}
    if not adapters:
        raise CourseError("the model has no LoRA adapters; add_lora first")
    plain = GPT(model.config)
    base_state = {name.replace(".base.", "."): t for name, t in model.state_dict().items() if "lora_" not in name}
    plain.load_state_dict(base_state)
    peft_config = PeftLoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=list(config.targets),
                                 lora_dropout=0.0, fan_in_fan_out=True, bias="none", init_lora_weights=True)
    peft_model = get_peft_model(to_transformers(plain), peft_config)
    theirs = dict(peft_model.named_modules())
    with torch.no_grad():
        for name, adapter in adapters.items():
            layer = theirs[f"base_model.model.{name}"]
            layer.lora_A["default"].weight.copy_(adapter.lora_A)
            layer.lora_B["default"].weight.copy_(adapter.lora_B)
    return peft_model.eval()
