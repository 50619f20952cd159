"""Sequences: character language models with recurrent networks, and attention as a soft lookup (notebook 03).

- `CharVocabulary`, `split_train_val`, `random_windows`: Shakespeare as a stream of character ids.
- `RNNCell`, `RNN`: the Elman RNN written out, a drop-in for `nn.RNNCell` / `nn.RNN` (same parameter names).
- `CharLM`, `train_char_lm`, `evaluate`, `sample`: a character language model around a recurrent layer.
- `gradient_by_distance`: how much the last prediction's loss still reaches back to earlier hidden states.
- `attention`: a query looks softly into a key/value memory; `Seq2Seq` uses it on a copy task.
"""

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from llmlab.progress import progress_bar as tqdm  # a widget live, a final text line in saved notebooks

from llmlab.bigram import CharVocabulary  # noqa: F401  (the character tokenizer, defined in notebook 00's module)
from llmlab.checks import (NOT_DONE, CourseError, check_new_tokens, check_number, check_positive_int, check_text,
                           learner_call)


# --- Characters as ids ------------------------------------------------------------------------------------------


def split_train_val(ids: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """The first part for training, the last `val_fraction` for validation (unseen text, not a random sample)."""
    check_number("val_fraction", val_fraction, minimum=0, strict_minimum=True, maximum=0.99)
    cut = int(len(ids) * (1 - val_fraction))
    return ids[:cut], ids[cut:]


def random_windows(ids: torch.Tensor, batch_size: int, length: int, generator=None):
    """`batch_size` random windows of `length` characters (inputs) and the same windows shifted by one (targets)."""
    check_positive_int("batch_size", batch_size)
    check_positive_int("length", length)
    if batch_size * length > 10_000_000:  # a typo would allocate gigabytes
        raise CourseError(f"batch_size × length is {batch_size * length:,} characters; at most 10,000,000 fit "
                          "one batch: use a smaller batch_size or length")
    if len(ids) < length + 2:
        raise CourseError(f"length {length} needs at least {length + 2} characters of text; there are {len(ids)}")
    starts = torch.randint(0, len(ids) - length - 1, (batch_size,), generator=generator)
    rows = starts[:, None] + torch.arange(length + 1)
    windows = ids[rows]
    return windows[:, :-1], windows[:, 1:]


# --- The recurrent network, written out ---------------------------------------------------------------------------


class RNNCell(nn.Module):
    """One step of the Elman RNN: h' = tanh(W_ih x + b_ih + W_hh h + b_hh).

    Parameter names, shapes and initialisation are nn.RNNCell's, so weights move between the two unchanged.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(hidden_size))
        bound = 1 / math.sqrt(hidden_size)  # PyTorch's default for recurrent layers
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size)
        return torch.tanh(x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh)


class RNN(nn.Module):
    """The cell unrolled over time, a drop-in for nn.RNN(input_size, hidden_size, batch_first=True).

    forward(x (B, T, input), h0 (1, B, hidden) or None) -> (every hidden state (B, T, hidden), last (1, B, hidden)).
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.cell = RNNCell(input_size, hidden_size)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None):
        h = None if h0 is None else h0[0]
        states = []
        for x_t in x.unbind(dim=1):  # step t needs step t-1: the loop cannot be run in parallel
            h = self.cell(x_t, h)
            states.append(h)
        return torch.stack(states, dim=1), h[None]

    def load_from_torch(self, rnn: nn.RNN) -> "RNN":
        """Copy the weights of a one-layer, tanh, batch-first nn.RNN (its names end in `_l0`)."""
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(self.cell, name).data.copy_(getattr(rnn, f"{name}_l0"))
        return self


# --- A character language model ------------------------------------------------------------------------------------


class CharLM(nn.Module):
    """Embedding -> recurrent layer ("rnn": ours above, "lstm": nn.LSTM) -> next-character logits."""

    KINDS = ("rnn", "lstm")

    def __init__(self, vocab_size: int, hidden_size: int, kind: str = "rnn", embed_size: int = 64):
        super().__init__()
        if kind not in self.KINDS:
            raise CourseError(f"kind must be one of {self.KINDS}, not {kind!r:.60}")
        sizes = [check_positive_int(name, value) for name, value in
                 (("vocab_size", vocab_size), ("hidden_size", hidden_size), ("embed_size", embed_size))]
        parameters = sizes[0] * (sizes[2] + sizes[1]) + 4 * sizes[1] * (sizes[2] + sizes[1])  # about, LSTM's
        if parameters > 50_000_000:  # a typo (a vocab_size of 10**9) would fill the memory and kill the kernel
            raise CourseError(f"a CharLM of vocab_size={vocab_size}, hidden_size={hidden_size}, embed_size="
                              f"{embed_size} has about {parameters:,} parameters; at most 50,000,000 are built here")
        self.kind = kind
        self.embed = nn.Embedding(vocab_size, embed_size)
        if kind == "rnn":
            self.recurrent = RNN(embed_size, hidden_size)
        else:
            self.recurrent = nn.LSTM(embed_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx: torch.Tensor, state=None, targets: torch.Tensor | None = None):
        """idx (B, T) -> logits (B, T, vocab), mean cross-entropy (nats/char) or None, the state to carry on."""
        states, state = self.recurrent(self.embed(idx), state)
        logits = self.head(states)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss, state


@torch.no_grad()
def evaluate(model: CharLM, ids: torch.Tensor, length: int = 256, max_chars: int | None = None) -> float:
    """Mean cross-entropy (nats/char) over `ids`, read as consecutive windows of `length` characters."""
    check_positive_int("length", length)
    ids = ids[:max_chars] if max_chars else ids
    rows = (len(ids) - 1) // length
    if rows < 1:
        raise CourseError(f"nothing to score: {len(ids)} characters do not fill one window of {length} + 1; "
                          "give more text or a smaller length")
    model.eval()
    device = next(model.parameters()).device
    x = ids[: rows * length].view(rows, length).to(device)
    y = ids[1 : rows * length + 1].view(rows, length).to(device)
    total = 0.0
    for start in range(0, rows, 128):
        _, loss, _ = model(x[start : start + 128], targets=y[start : start + 128])
        total += loss.item() * len(x[start : start + 128])
    model.train()
    return total / rows


def train_char_lm(model: CharLM, train_ids, val_ids, *, steps: int, batch_size: int = 32, length: int = 100,
                  lr: float = 1e-2, eval_every: int = 100, eval_chars: int = 20_000, plot=None, label: str = "",
                  seed: int = 0) -> dict:
    """Train on random windows with AdamW; every `eval_every` steps estimate the validation loss.

    Returns the history: steps, training loss per step, validation loss at the evaluation steps, seconds.
    Gradients are clipped to norm 1: a recurrent net's gradient can explode (see the gradient plot).
    A loss that is no longer a finite number stops training with a message (the learning rate is too high).
    """
    check_positive_int("steps", steps)
    check_positive_int("eval_every", eval_every)
    check_number("lr", lr, minimum=0, strict_minimum=True)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=lr / 10)
    history = {"step": [], "train": [], "val_step": [], "val": [], "seconds": 0.0}
    start = time.perf_counter()
    bar = tqdm(range(1, steps + 1), desc=f"training {label or model.kind}")
    for step in bar:
        x, y = random_windows(train_ids, batch_size, length, generator)
        _, loss, _ = model(x.to(device), targets=y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        history["step"].append(step)
        history["train"].append(loss.item())
        if not math.isfinite(history["train"][-1]):
            raise CourseError(f"the training loss became {history['train'][-1]} at step {step}: the weights "
                              f"overflowed; try a smaller learning rate than lr={lr}")
        if step % eval_every == 0 or step == steps:
            val = evaluate(model, val_ids, max_chars=eval_chars)
            history["val_step"].append(step)
            history["val"].append(val)
            recent = history["train"][-eval_every:]
            bar.set_postfix(train=f"{sum(recent) / len(recent):.3f}", val=f"{val:.3f}")
            if plot is not None:
                plot.add(f"{label} training (mean of the last {len(recent)} steps)", step, sum(recent) / len(recent))
                plot.add(f"{label} validation", step, val)
                plot.show()
    history["seconds"] = time.perf_counter() - start
    return history


@torch.no_grad()
def sample(model: CharLM, vocab: CharVocabulary, prefix: str = "\n", length: int = 200,
           temperature: float = 1.0, seed: int | None = 0) -> str:
    """Continue `prefix` by `length` characters (at most MAX_NEW_TOKENS), each drawn from
    softmax(logits / temperature); 0 is greedy."""
    check_number("temperature", temperature, minimum=0)
    check_text("prefix", prefix, allow_empty=True)
    length = check_new_tokens("length", length)
    if seed is not None:
        check_positive_int("seed", seed, minimum=0, maximum=2**63 - 1)
    ids = vocab.encode(prefix or "\n")  # a ValueError that names unknown characters
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, _, state = model(ids[None].to(device))  # read the whole prefix once, keep the state
    out = []
    for _ in range(length):
        last = logits[0, -1].float().cpu()
        if temperature == 0:
            nxt = int(last.argmax())
        else:
            # the same softmax, in float64 and from the largest logit down: a tiny temperature never gives NaN
            last = (last.double() - last.max()) / temperature
            nxt = int(torch.multinomial(F.softmax(last, dim=-1), 1, generator=generator))
        out.append(nxt)
        logits, _, state = model(torch.tensor([[nxt]], device=device), state)  # one step, the state carried on
    model.train(was_training)
    return vocab.decode(out)


@torch.no_grad()
def surprisal(model: CharLM, vocab: CharVocabulary, text: str) -> list[tuple[str, float]]:
    """For each character of `text` after the first: -log p(char | everything before it), in nats."""
    check_text("text", text, allow_empty=True)
    ids = vocab.encode(text)
    if len(ids) < 2:
        raise ValueError("give at least two characters")
    was_training = model.training
    model.eval()
    logits, _, _ = model(ids[None, :-1].to(next(model.parameters()).device))
    model.train(was_training)
    nll = F.cross_entropy(logits[0].float().cpu(), ids[1:], reduction="none")
    return list(zip(text[1:], nll.tolist()))


# --- Why long context is hard ------------------------------------------------------------------------------------


def gradient_by_distance(model: CharLM, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||d loss_T / d h_t||, averaged over the batch, by distance: element k is for t = T-1-k.

    The loss is the cross-entropy of the last prediction only; the sequence is run one step at a time so
    that every hidden state h_t is a tensor autograd can take the gradient with respect to.
    """
    was_training = model.training
    model.eval()
    emb = model.embed(x.to(next(model.parameters()).device))
    state, hs = None, []
    for t in range(x.shape[1]):
        _, state = model.recurrent(emb[:, t : t + 1], state)
        hs.append(state[0] if isinstance(state, tuple) else state)  # an LSTM's state is (h, c)
    loss = F.cross_entropy(model.head(hs[-1][0]), y[:, -1].to(emb.device))  # the last state is the last output
    grads = torch.autograd.grad(loss, hs)  # the model's own .grad fields stay untouched
    model.train(was_training)
    norms = torch.stack([g[0].norm(dim=-1).mean() for g in grads])  # (T,), by position t
    return norms.flip(0).cpu()  # by distance from the last position


# --- Attention: a soft, learned lookup ------------------------------------------------------------------------------


def attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None):
    """Each query takes a weighted average of the values; the weights are softmax(query . key / sqrt(d)).

    query (..., Q, d), keys (..., K, d), values (..., K, d_v); mask (Q, K) of booleans, False = may not look.
    Returns (the looked-up values (..., Q, d_v), the weights (..., Q, K), each row summing to 1).
    """
    scores = query @ keys.transpose(-2, -1) / math.sqrt(query.shape[-1])  # scaled: softmax stays soft as d grows
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores, dim=-1)
    return weights @ values, weights


def _best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def rnn_with_batched_input_projection(cell: RNNCell, x: torch.Tensor) -> torch.Tensor:
    """The RNN of x (T, input), with W_ih x_t + b computed for all T positions in one product before the loop.

    The input projection does not depend on h, so only h @ W_hh.T is left inside the loop: the part that must wait.
    """
    inputs = x @ cell.weight_ih.T + cell.bias_ih + cell.bias_hh  # (T, hidden): every position at once
    h = inputs.new_zeros(cell.hidden_size)
    states = []
    for projected in inputs:  # the T steps that cannot run side by side
        h = torch.tanh(projected + cell.weight_hh @ h)
        states.append(h)
    return torch.stack(states)


@torch.no_grad()
def time_recurrence_and_attention(lengths, width: int = 64, repeats: int = 15, threads: int = 1) -> dict[str, list[float]]:
    """Seconds to process one sequence of each length (the fastest of `repeats` runs), four ways:

    "RNN, Python loop": our RNN, one RNNCell call per step, each paying Python's overhead;
    "RNN, Python loop, input projection batched": the same, with W_ih x_t done for all steps in one product;
    "nn.RNN (loop in C++)": PyTorch's RNN, the same T dependent steps without the Python overhead;
    "self-attention": one causal self-attention layer: more arithmetic (every pair of positions), in a few
    large products.
    On `threads` CPU threads (1: the race measures the work and its overhead, not how many cores happen to be
    free), the ways taking turns so that a busy moment of the machine slows them alike.
    """
    torch.manual_seed(0)
    rnn = RNN(width, width)
    torch_rnn = nn.RNN(width, width, batch_first=True)
    w_q, w_k, w_v = (torch.randn(width, width) / math.sqrt(width) for _ in range(3))
    ways = {
        "RNN, Python loop": lambda x, causal: rnn(x[None]),
        "RNN, Python loop, input projection batched": lambda x, causal: rnn_with_batched_input_projection(rnn.cell, x),
        "nn.RNN (loop in C++)": lambda x, causal: torch_rnn(x[None]),
        "self-attention": lambda x, causal: attention(x @ w_q, x @ w_k, x @ w_v, mask=causal),
    }
    times = {name: [] for name in ways}
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for length in lengths:
            x = torch.randn(length, width)
            causal = torch.ones(length, length, dtype=torch.bool).tril()
            best = {name: float("inf") for name in ways}
            for name, run in ways.items():
                run(x, causal)  # warm-up: the first call pays for allocations
            for _ in range(repeats):
                for name, run in ways.items():
                    best[name] = min(best[name], _best_seconds(lambda: run(x, causal), 1))
            for name in ways:
                times[name].append(best[name])
    finally:
        torch.set_num_threads(saved_threads)
    return times


# --- The seq2seq bottleneck, and attention as its fix ---------------------------------------------------------------


def copy_task_batch(batch_size: int, length: int, n_symbols: int = 20, generator=None):
    """Random strings of symbols 1..n_symbols to copy; 0 is the start symbol the decoder begins from.

    Returns (source (B, L), decoder input = start + target[:-1] (B, L), target = source (B, L)).
    """
    source = torch.randint(1, n_symbols + 1, (batch_size, length), generator=generator)
    start = torch.zeros(batch_size, 1, dtype=torch.long)
    return source, torch.cat([start, source[:, :-1]], dim=1), source


class Seq2Seq(nn.Module):
    """A GRU encoder and a GRU decoder; with `use_attention`, each decoder step also looks up the encoder states.

    Without attention the whole source reaches the decoder through one vector: the encoder's last state.
    With it, decoder step i asks `attention(query=its state, keys=values=encoder states)` (Luong et al., 2015).
    """

    def __init__(self, n_symbols: int, hidden_size: int = 128, use_attention: bool = False):
        super().__init__()
        self.use_attention = use_attention
        self.embed = nn.Embedding(n_symbols + 1, hidden_size)
        self.encoder = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.decoder = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.head = nn.Linear(2 * hidden_size if use_attention else hidden_size, n_symbols + 1)

    def forward(self, source, decoder_input, target=None):
        """-> logits (B, L, symbols), loss or None, attention weights (B, L_out, L_in) or None."""
        enc_states, last = self.encoder(self.embed(source))
        dec_states, _ = self.decoder(self.embed(decoder_input), last)  # teacher forcing: the true previous symbol
        weights = None
        if self.use_attention:
            context, weights = attention(dec_states, enc_states, enc_states)
            dec_states = torch.cat([dec_states, context], dim=-1)
        logits = self.head(dec_states)
        loss = None if target is None else F.cross_entropy(logits.flatten(0, 1), target.flatten())
        return logits, loss, weights


def train_copy_task(model: Seq2Seq, *, steps: int, max_length: int, n_symbols: int, batch_size: int = 64,
                    lr: float = 3e-3, seed: int = 0, label: str = "") -> list[float]:
    """Train on copy batches of random lengths 1..max_length; returns the loss per step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in tqdm(range(steps), desc=f"copy task, {label}"):
        length = int(torch.randint(1, max_length + 1, (1,), generator=generator))
        _, loss, _ = model(*copy_task_batch(batch_size, length, n_symbols, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def copy_accuracy_by_length(model: Seq2Seq, lengths, n_symbols: int, batch_size: int = 256, seed: int = 1,
                            teacher_forcing: bool = True):
    """Fraction of symbols copied right, per source length.

    teacher_forcing=True: each prediction is given the true previous symbols (as in training). False: the model
    writes the whole copy itself, each step fed its own previous output (greedy), so one slip can cause more.
    """
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    accuracy = []
    for length in lengths:
        source, decoder_input, target = copy_task_batch(batch_size, length, n_symbols, generator)
        if teacher_forcing:
            written = model(source, decoder_input)[0].argmax(-1)
        else:
            written = greedy_copy(model, source)
        accuracy.append((written == target).float().mean().item())
    model.train()
    return accuracy


@torch.no_grad()
def greedy_copy(model: Seq2Seq, source: torch.Tensor) -> torch.Tensor:
    """The copy the model writes on its own: start symbol 0, then each step's likeliest symbol fed back in."""
    decoder_input = torch.zeros(source.shape[0], 1, dtype=torch.long)
    for _ in range(source.shape[1]):
        logits, _, _ = model(source, decoder_input)
        decoder_input = torch.cat([decoder_input, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return decoder_input[:, 1:]


# --- Exercise checker -------------------------------------------------------------------------------------------


def check_lstm_cell(lstm_cell_step) -> bool:
    """Check a learner's LSTM step fn(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh) -> (h, c) on nn.LSTMCell."""
    torch.manual_seed(0)
    reference = nn.LSTMCell(5, 7)
    x, h, c = torch.randn(3, 5), torch.randn(3, 7), torch.randn(3, 7)
    with torch.no_grad():
        expected_h, expected_c = reference(x, (h, c))
        got = learner_call(lstm_cell_step, x, h, c, reference.weight_ih, reference.weight_hh,
                           reference.bias_ih, reference.bias_hh, not_done=(
            "Not written yet. Hint: weight_ih has 4 × hidden rows: the four gates' blocks stacked in the order "
            "i, f, g, o. One product for all four, then split it."))
        if got is NOT_DONE:
            return False
    if not (isinstance(got, tuple) and len(got) == 2):
        print("✗ return a pair (h_new, c_new)")
        return False
    for name, mine, ref in (("h", got[0], expected_h), ("c", got[1], expected_c)):
        if not isinstance(mine, torch.Tensor) or mine.shape != ref.shape:
            print(f"✗ new {name} should be a tensor of shape {tuple(ref.shape)}")
            return False
        if not torch.allclose(mine, ref, atol=1e-5):
            print(f"✗ new {name} differs from nn.LSTMCell's by up to {(mine - ref).abs().max():.3g}. "
                  "Check the gate order (i, f, g, o) and which gates use sigmoid (i, f, o) or tanh (g).")
            return False
    print("✓ your LSTM step matches nn.LSTMCell (the h and c of a batch of 3)")
    return True
