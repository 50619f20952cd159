"""The course tokenizer: one byte-level BPE, trained once with Hugging Face `tokenizers`, used by every later stage.

It is GPT-2's recipe on the course's pretraining corpora (the TinyStories sample and tinyshakespeare): the
text is split with GPT-2's regex, each piece is turned into bytes (shown as printable characters), and BPE
merges are learned over those bytes. So any string, in any script, can be encoded, and the result can be
exported to GGUF as a "gpt2" tokenizer and run by llama.cpp.

The special tokens the whole course needs are reserved now, at ids 0..4, so that adding chat fine-tuning
later never changes the ids the base model was pretrained on:
    <|endoftext|>  separates documents when pretraining (also bos, eos and pad)
    <|system|> <|user|> <|assistant|> <|end|>  the chat roles of supervised fine-tuning (notebook 08)

`llmlab.bpe` builds the same kind of tokenizer from scratch, and notebook 04 checks it against this one.
"""

import html
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from llmlab import artifacts, corpora
from llmlab.chat import CHAT_TEMPLATE
from llmlab.runtime import by_mode

EOT = "<|endoftext|>"
CHAT_ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
SPECIAL_TOKENS = [EOT, *CHAT_ROLE_TOKENS]  # ids 0..4, in this order

ARTIFACT_NAME = "tokenizer"
CORPORA = ("tinystories_train_head.txt", "tinyshakespeare.txt")


def training_texts() -> list[str]:
    """The pretraining corpora as documents: the TinyStories train stories, and Shakespeare as one text.

    Not the TinyStories validation stories: the tokenizer is part of the model, and the model is scored on those.
    """
    return [*corpora.tinystories_train(), corpora.shakespeare()]


def train_bytelevel_bpe(texts, vocab_size: int, special_tokens=SPECIAL_TOKENS) -> Tokenizer:
    """A GPT-2-style byte-level BPE trained with `tokenizers` (Rust, seconds for megabytes).

    All 256 bytes are in the vocabulary from the start (`initial_alphabet`), so no text is ever unknown.
    """
    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False: "strawberry" at the start of a text stays "strawberry", as in GPT-2.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def as_transformers(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` as a `transformers` fast tokenizer with the course's special tokens."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
        extra_special_tokens=CHAT_ROLE_TOKENS,  # transformers 5's name for "additional" special tokens
    )


def _build(vocab_size: int):
    def build(folder: Path) -> None:
        as_transformers(train_bytelevel_bpe(training_texts(), vocab_size)).save_pretrained(folder)

    return build


def _load(folder: Path) -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise ValueError(f"special tokens must have ids 0..{len(SPECIAL_TOKENS) - 1}, found {ids}")
    tokenizer.chat_template = CHAT_TEMPLATE  # llmlab.chat: apply_chat_template gives the ids SFT trains on
    return tokenizer


def course_tokenizer() -> PreTrainedTokenizerFast:
    """The course tokenizer (artifact "tokenizer"): from the cache, or trained once (a few seconds)."""
    vocab_size = by_mode(full=4096, fast=512)
    config = {
        "vocab_size": vocab_size,
        "special_tokens": SPECIAL_TOKENS,
        "corpora": list(CORPORA),
        "model": "byte-level BPE, GPT-2 regex, add_prefix_space=False",
    }
    return artifacts.cached(ARTIFACT_NAME, build=_build(vocab_size), load=_load, config=config)


def load_local_tokenizer(name_or_path: str):
    """A tokenizer from a local folder or the Hugging Face cache, never the network; None when absent.

    When it is absent, one line says how to get it, and the caller goes on without it.
    """
    try:
        return AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError):
        print(
            f"'{name_or_path}' is not available locally; to get it once (needs the network), run "
            f"`python -c \"from transformers import AutoTokenizer; AutoTokenizer.from_pretrained('{name_or_path}')\"`"
        )
        return None


def _ids(tokenizer, text: str) -> list[int]:
    """Token ids of text, with no special tokens added: for a `transformers` tokenizer or a `BPETokenizer`."""
    if hasattr(tokenizer, "backend_tokenizer"):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)


def token_strings(tokenizer, text: str) -> list[str]:
    """The text of each token of `text`, as it reads (a token holding part of a character shows �)."""
    return [tokenizer.decode([token_id]) for token_id in _ids(tokenizer, text)]


def tokens_per_char(tokenizer, texts) -> float:
    """Tokens per character over texts (lower: more text per token). For `transformers`, `tokenizers` or ours."""
    texts = list(texts)
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if hasattr(backend, "encode_batch"):  # `tokenizers` encodes a batch on all cores
        n_tokens = sum(len(e.ids) for e in backend.encode_batch(texts, add_special_tokens=False))
    else:
        n_tokens = sum(len(tokenizer.encode(text)) for text in texts)
    return n_tokens / sum(len(text) for text in texts)


_PALETTE = ["#fde68a", "#a7f3d0", "#bfdbfe", "#fbcfe8", "#ddd6fe", "#fed7aa", "#bbf7d0", "#c7d2fe"]


def tokens_html(tokenizer, text: str) -> str:
    """HTML that shows each token of `text` on its own colour, with its id on hover."""
    if not text:
        raise ValueError("type some text to see its tokens")
    ids = _ids(tokenizer, text)
    spans = []
    for position, token_id in enumerate(ids):
        piece = tokenizer.decode([token_id])
        shown = html.escape(piece).replace(" ", "&nbsp;").replace("\n", "↵<br>")
        spans.append(
            f'<span title="id {token_id}" style="background:{_PALETTE[position % len(_PALETTE)]};'
            f'padding:1px 0;border-radius:3px;font-family:monospace">{shown}</span>'
        )
    summary = (f"<div style='margin-top:6px;color:#555'>{len(text)} characters → {len(ids)} tokens "
               f"({len(ids) / len(text):.2f} tokens per character)<br>ids: {ids[:60]}"
               f"{' …' if len(ids) > 60 else ''}</div>")
    return "<div style='line-height:1.9'>" + "".join(spans) + "</div>" + summary
