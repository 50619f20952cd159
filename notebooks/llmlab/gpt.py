"""The course GPT: GPT-2's architecture in one readable file.

Module names follow GPT-2's (`transformer.h.0.attn.c_attn`, ...), so converting to and from `transformers`'
GPT2LMHeadModel is a renaming plus a transpose: GPT-2 stores its projections as Conv1D, (in, out), where
nn.Linear stores (out, in).
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.attention import causal_mask, scaled_dot_product_attention
from llmlab.checks import CourseError, check_number, check_positive_int


MAX_PARAMETERS = 2e9  # GPT-2 XL (1.5 B) fits; a typo such as n_embd=76800 is refused before it fills the memory


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024  # the context window, in tokens
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # GPT-2 has biases in its linear layers and layer norms

    def __post_init__(self):
        """Refuse a config that cannot be built, or that would not fit a laptop's memory (and kill the kernel)."""
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_positive_int(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise CourseError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head}): each head "
                              f"gets n_embd / n_head dimensions; try n_head={self._a_divisor()}")
        check_number("dropout", self.dropout, minimum=0, maximum=0.9)
        parameters = 12 * self.n_layer * self.n_embd ** 2 + (self.vocab_size + self.block_size) * self.n_embd
        if parameters > MAX_PARAMETERS:
            raise CourseError(f"this config has about {parameters / 1e9:,.1f} billion parameters "
                              f"({4 * parameters / 1e9:,.0f} GB in float32); the course builds at most "
                              f"{MAX_PARAMETERS / 1e9:g} billion: make n_layer, n_embd or vocab_size smaller")

    def _a_divisor(self) -> int:
        return max(d for d in range(1, min(self.n_head, self.n_embd) + 1) if self.n_embd % d == 0)


class KVCache:
    """Keys and values of the tokens seen so far, one pair per layer, so each new token costs one step.

    Each layer's keys and values live in a buffer with room to spare: a step writes its new ones in place and
    reads back a view of all of them. (Growing a tensor with torch.cat at every token would copy the whole cache
    each time.) When the room runs out the buffer doubles, so a cache needs no size up front.
    """

    def __init__(self):
        self.keys: list[torch.Tensor] = []  # per layer: (B, heads, room, head_dim), the first lengths[layer] filled
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []

    def __len__(self) -> int:
        return self.lengths[0] if self.lengths else 0

    def length(self, layer: int) -> int:
        """Tokens cached in this layer (earlier layers already hold the step being computed)."""
        return self.lengths[layer] if layer < len(self.lengths) else 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's (B, heads, T, head_dim) keys and values; return all of this layer's so far."""
        if layer == len(self.keys):  # the first step: set aside room for it and as many tokens again
            self.keys.append(k.new_empty(*k.shape[:2], 2 * k.shape[2], k.shape[3]))
            self.values.append(v.new_empty(self.keys[-1].shape))
            self.lengths.append(0)
        start, end = self.lengths[layer], self.lengths[layer] + k.shape[2]
        if end > self.keys[layer].shape[2]:  # full: double the room, keeping what is stored
            self.keys[layer] = torch.cat([self.keys[layer], torch.empty_like(self.keys[layer])], dim=2)
            self.values[layer] = torch.cat([self.values[layer], torch.empty_like(self.values[layer])], dim=2)
            return self.update(layer, k, v)
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        self.lengths[layer] = end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # query, key, value at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, layer: int = 0, cache: KVCache | None = None, mask: torch.Tensor | None = None):
        """mask: (B, 1, T, keys) booleans, True where a query may look (batched rows with padding); None: causal."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim): each head attends in its own subspace
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        past = cache.length(layer) if cache is not None else 0  # tokens this layer has cached before this step
        if cache is not None:
            k, v = cache.update(layer, k, v)
        causal = False
        if mask is not None:
            pass  # the caller's mask already holds causality and padding
        elif past == 0:
            mask, causal = None, True
        elif T == 1:
            mask, causal = None, False  # one new token may look at everything before it
        else:  # several new tokens after a cached prefix: each sees the prefix and the new tokens up to itself
            mask, causal = causal_mask(T, past).to(x.device), False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, layer: int = 0, cache: KVCache | None = None, mask: torch.Tensor | None = None):
        x = x + self.attn(self.ln_1(x), layer, cache, mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
                wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embeddings
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: one matrix reads and writes tokens
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2 scales residual projections by 1/sqrt(2 * layers)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameters, counting the tied embedding once; non_embedding leaves out the position table."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None, cache: KVCache | None = None, pad_lengths: torch.Tensor | None = None):
        """Logits (B, T, vocab) for token ids (B, T); the mean cross-entropy too when targets are given.

        With a cache, idx holds only the new tokens: their positions continue after the cached ones.
        pad_lengths (B,): rows of different lengths padded on the LEFT with that many tokens (batched generation);
        each row's positions then start at its first real token and no real token looks at a pad, so every row
        gets the logits it would get alone.
        """
        B, T = idx.shape
        past = len(cache) if cache is not None else 0
        if past + T > self.config.block_size:
            raise ValueError(f"{past + T} tokens do not fit the context window of {self.config.block_size} "
                             "(GPTConfig.block_size): keep only the last tokens, or use a larger block_size")
        if T and (idx.min() < 0 or idx.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), the vocabulary; "
                             f"got {idx.min().item()} .. {idx.max().item()}")
        pos = torch.arange(past, past + T, device=idx.device)
        mask = None
        if pad_lengths is not None:
            pos, mask = padded_positions_and_mask(pos, past, pad_lengths.to(idx.device))
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for layer, block in enumerate(self.transformer.h):
            x = block(x, layer, cache, mask)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss


def padded_positions_and_mask(pos: torch.Tensor, past: int, pad_lengths: torch.Tensor):
    """Positions (B, T) and an attention mask (B, 1, T, past + T) for rows left-padded by pad_lengths tokens.

    A real token at index i of row b has position i - pad_lengths[b] and sees the real tokens up to itself. A pad
    token sees only itself (a row with nothing to look at would give NaN); its output is never used.
    """
    positions = (pos[None, :] - pad_lengths[:, None]).clamp(min=0)
    keys = torch.arange(past + pos.numel(), device=pos.device)
    causal = keys[None, :] <= pos[:, None]  # (T, keys)
    real_key = keys[None, :] >= pad_lengths[:, None]  # (B, keys)
    itself = keys[None, :] == pos[:, None]
    mask = (causal[None] & real_key[:, None, :]) | itself[None]
    return positions, mask[:, None]


@torch.no_grad()
def attention_maps(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The attention weights of every layer and head, (layers, heads, T, T), for one sequence of token ids.

    The fast kernel never materialises the weights, so each layer's queries and keys are recomputed from the
    input its attention received (caught with a forward hook) and put through attention by hand.
    """
    if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long or idx.numel() == 0:
        raise CourseError(f"idx must be a non-empty tensor of token ids (torch.long), not {idx!r:.60}")
    idx = idx if idx.dim() == 2 else idx[None]
    if idx.dim() != 2 or idx.shape[0] != 1:
        raise CourseError(f"attention_maps takes one sequence of token ids, not a tensor of shape {tuple(idx.shape)}")
    inputs = []
    hooks = [block.attn.register_forward_hook(lambda module, args, output: inputs.append(args[0]))
             for block in model.transformer.h]
    try:
        model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    maps = []
    for block, x in zip(model.transformer.h, inputs):
        B, T, C = x.shape
        q, k, v = block.attn.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, block.attn.n_head, C // block.attn.n_head).transpose(1, 2) for t in (q, k, v))
        _, weights = scaled_dot_product_attention(q, k, v, causal_mask(T).to(x.device))
        maps.append(weights[0])
    return torch.stack(maps)


# --- GPT-2 in `transformers` <-> the course GPT -------------------------------------------------------------

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers of older GPT-2 checkpoints (the causal mask), not weights. The leading dot matters: "c_attn.bias" is a
# weight, and a plain endswith("attn.bias") would drop it.
_MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")


def hf_config(config: GPTConfig):
    """The `transformers` GPT2Config of a course GPT."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, activation_function="gelu_new",
        resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        layer_norm_epsilon=1e-5, tie_word_embeddings=True,
        # GPT-2's <|endoftext|> is id 50256; another vocabulary sets its own (llmlab.export does)
        bos_token_id=50256 if config.vocab_size > 50256 else None,
        eos_token_id=50256 if config.vocab_size > 50256 else None,
    )


def to_transformers(model: GPT):
    """A `transformers` GPT2LMHeadModel holding the same weights as a course GPT."""
    from transformers import GPT2LMHeadModel

    if not model.config.bias:
        raise ValueError("GPT-2 has biases; only a GPT with bias=True converts")
    hf = GPT2LMHeadModel(hf_config(model.config))
    state = {}
    for name, tensor in model.state_dict().items():
        state[name] = tensor.t() if name.endswith(_CONV1D) else tensor
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith(_MASK_BUFFERS)]
    if missing or unexpected:
        raise ValueError(f"weights do not map: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf.eval()


def from_transformers(hf_model) -> GPT:
    """A course GPT holding the weights of a `transformers` GPT2LMHeadModel (e.g. the real GPT-2)."""
    c = hf_model.config
    config = GPTConfig(vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer, n_head=c.n_head,
                       n_embd=c.n_embd, dropout=0.0, bias=True)
    if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"the course GPT uses tanh GELU, not {c.activation_function}")
    model = GPT(config)
    ours, filled = model.state_dict(), {"lm_head.weight"}  # the output layer is the (tied) token table
    for name, tensor in hf_model.state_dict().items():
        if name.endswith(_MASK_BUFFERS):
            continue
        if name not in ours:
            raise ValueError(f"{name} has no place in the course GPT")
        ours[name].copy_(tensor.t() if name.endswith(_CONV1D) else tensor)
        filled.add(name)
    if set(ours) - filled:
        raise ValueError(f"weights missing from the GPT-2 model: {sorted(set(ours) - filled)}")
    return model.eval()


GPT2_HOW_TO_GET = ("GPT-2 is not on this machine; to get it once (500 MB, online): python -c \"from transformers "
                   "import AutoTokenizer, GPT2LMHeadModel as M; M.from_pretrained('gpt2'); "
                   "AutoTokenizer.from_pretrained('gpt2')\"")


def local_gpt2(name_or_path: str = "gpt2"):
    """(GPT2LMHeadModel, tokenizer) from a local folder or the Hugging Face cache, never the network.

    Returns (None, None) and prints one line on how to get it when it is not there. The tokenizer is None
    when only the weights are present.
    """
    from transformers import AutoTokenizer, GPT2LMHeadModel

    try:
        model = GPT2LMHeadModel.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError):
        print(GPT2_HOW_TO_GET if name_or_path == "gpt2" else f"no GPT-2 model at {name_or_path!r} on this machine")
        return None, None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError):
        tokenizer = None
    if tokenizer is not None and len(tokenizer) < model.config.vocab_size:
        tokenizer = None  # a folder with weights only can still yield an empty tokenizer: not GPT-2's
    return model.eval(), tokenizer


def config_dict(config: GPTConfig) -> dict:
    return asdict(config)
