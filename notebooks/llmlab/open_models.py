"""Real open models, where this machine has them: GPT-2, FLAN-T5 and a GGUF chat model (and GPT-2's tokenizer,
which the course ships).

Nothing here touches the network. Each finder looks where you put the model (an environment variable holding a
path) and in the Hugging Face cache; when the model is absent it prints one line on how to get it and returns
None, so a notebook goes on without it. The loaders are the real ones (`transformers`, `llama-cpp-python`), and
the tests run them on models the course exports or builds itself.
"""

import os
from pathlib import Path

from llmlab.checks import CourseError, check_new_tokens, check_number, check_positive_int, check_text
from llmlab.export import gguf_metadata, llama_cpp_positions
from llmlab.gpt import local_gpt2

FLAN_T5 = "google/flan-t5-base"
GGUF_CHAT_REPO = "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
GGUF_CHAT_FILE = "qwen2.5-0.5b-instruct-q4_k_m.gguf"

HOW_TO_GET = {
    "flan-t5": (f"FLAN-T5 is not on this machine; to get it once (1 GB, online): hf download {FLAN_T5} "
                "(or set LLMLAB_FLAN_T5=/path/to/a/flan-t5 folder)"),
    "gguf-chat": (f"no GGUF chat model on this machine; to get one (400 MB, online): hf download {GGUF_CHAT_REPO} "
                  f"{GGUF_CHAT_FILE} (or set LLMLAB_GGUF_CHAT=/path/to/model.gguf)"),
}


# --- GPT-2's tokenizer, shipped with the course ------------------------------------------------------------------

def gpt2_tokenizer():
    """GPT-2's real tokenizer (50,257 tokens), from the two files in data/gpt2_tokenizer: no network, no cache.

    encoder.json (token -> id) and vocab.bpe (the 50,000 merges in order) are OpenAI's published files (Modified
    MIT License, data/gpt2_tokenizer/LICENSE); `transformers`' GPT2Tokenizer builds the byte-level BPE from them.
    """
    from transformers import GPT2Tokenizer

    from llmlab.paths import data_file

    return GPT2Tokenizer(vocab=str(data_file("gpt2_tokenizer/encoder.json")),
                         merges=str(data_file("gpt2_tokenizer/vocab.bpe")))


# --- GPT-2 through a `transformers` pipeline ---------------------------------------------------------------------

def gpt2_pipeline(name_or_path: str = "gpt2"):
    """A text-generation pipeline for GPT-2 (or any GPT-2 folder, like the course's export); None if absent."""
    from transformers import pipeline

    model, tokenizer = local_gpt2(str(name_or_path))  # prints how to get GPT-2 when it is not here
    if model is None or tokenizer is None:
        return None
    return pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")


def continue_text(pipe, prompt: str, max_new_tokens: int = 20, **generation) -> str:
    """The pipeline's continuation of prompt (greedy unless generation says do_sample=True)."""
    check_text("prompt", prompt)
    check_new_tokens("max_new_tokens", max_new_tokens, minimum=1)
    generation.setdefault("do_sample", False)
    out = pipe(prompt, max_new_tokens=max_new_tokens, return_full_text=False, **generation)
    return out[0]["generated_text"]


# --- FLAN-T5: an encoder-decoder trained to follow instructions ----------------------------------------------------

def local_seq2seq(name_or_path: str | None = None):
    """(model, tokenizer) of FLAN-T5 (or another local encoder-decoder); (None, None) with one line if absent.

    Looks at name_or_path, then $LLMLAB_FLAN_T5, then the Hugging Face cache for google/flan-t5-base.
    """
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    source = name_or_path or os.environ.get("LLMLAB_FLAN_T5") or FLAN_T5
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForSeq2SeqLM.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        print(HOW_TO_GET["flan-t5"] if source == FLAN_T5 else f"no encoder-decoder model at {source!r}")
        return None, None
    return model.eval(), tokenizer


def seq2seq_generate(model, tokenizer, prompt: str, *, max_new_tokens: int = 60, **generation) -> str:
    """What an encoder-decoder writes for prompt: the encoder reads it all, the decoder writes the answer.

    generation takes `transformers`' settings: do_sample, temperature, top_k, top_p, num_beams, ...
    """
    import torch

    check_text("prompt", prompt)
    check_new_tokens("max_new_tokens", max_new_tokens, minimum=1)
    inputs = tokenizer(prompt, return_tensors="pt", truncation=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, **generation)
    return tokenizer.decode(out[0], skip_special_tokens=True)


# --- a GGUF chat model through llama-cpp-python ------------------------------------------------------------------

def _gguf_files_in_hf_cache() -> list[Path]:
    from huggingface_hub.constants import HF_HUB_CACHE

    root = Path(HF_HUB_CACHE)
    return sorted(root.glob("models--*/snapshots/*/*.gguf")) if root.exists() else []


def find_gguf_chat_model(path: str | None = None) -> Path | None:
    """A GGUF chat model: path, then $LLMLAB_GGUF_CHAT, then an instruct/chat GGUF in the Hugging Face cache.

    Prints how to get one and returns None when there is none.
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise CourseError(f"path must be the path of a .gguf file (or None to search), not {path!r:.60}")
    for candidate in (path, os.environ.get("LLMLAB_GGUF_CHAT")):
        if candidate:
            if Path(candidate).expanduser().is_file():
                return Path(candidate).expanduser()
            print(f"no GGUF file at {candidate!r}")
            return None
    chat = [f for f in _gguf_files_in_hf_cache() if any(w in str(f).lower() for w in ("instruct", "chat"))]
    if chat:
        return min(chat, key=lambda f: f.stat().st_size)  # the smallest: the quickest on a laptop
    print(HOW_TO_GET["gguf-chat"])
    return None


def load_gguf_chat(path, *, n_ctx: int = 2048, n_threads: int | None = None):
    """A `llama_cpp.Llama` for a chat GGUF; its chat template comes from the file. Call .close() when done."""
    import llama_cpp

    gguf_metadata(path)  # a clear message for a file that is not GGUF, or is cut short, before llama.cpp reads it
    check_positive_int("n_ctx", n_ctx, minimum=16, maximum=1 << 20)
    options = dict(model_path=str(path), n_ctx=n_ctx, verbose=False)
    if n_threads:
        options.update(n_threads=n_threads, n_threads_batch=n_threads)
    return llama_cpp.Llama(**options)


def _check_messages(messages) -> None:
    """messages: a non-empty list of {"role": ..., "content": text} turns, as chat templates read them."""
    if not isinstance(messages, list) or not messages:
        raise CourseError(f"messages must be a non-empty list of {{'role': ..., 'content': ...}} dicts, "
                          f"not {messages!r:.60}")
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str):
            raise CourseError(f"messages[{i}] must be a dict with a 'role' (such as 'user') and a 'content', "
                              f"not {turn!r:.60}")
        check_text(f"messages[{i}]['content']", turn.get("content"), allow_empty=True)


def chat_prompt(llm, messages: list[dict]) -> str:
    """The text the model reads for messages: its GGUF chat template filled in (llama-cpp-python's llama-2
    format when the file has no template, which is what llama-cpp-python falls back to)."""
    from llama_cpp import llama_chat_format as formats

    _check_messages(messages)
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return formats.format_llama2(messages=messages).prompt

    def text_of(token_id: int) -> str:  # how the template writes a special token (-1: the model has none)
        return llm.detokenize([token_id], special=True).decode(errors="ignore") if token_id >= 0 else ""

    formatter = formats.Jinja2ChatFormatter(template, eos_token=text_of(llm.token_eos()),
                                            bos_token=text_of(llm.token_bos()))
    return formatter(messages=messages).prompt


CHAT_MARGIN = 8  # tokens kept free: llama-cpp-python may format the turns a little differently


def chat(llm, question: str, *, system: str | None = None, max_tokens: int = 128, temperature: float = 0.0,
         **sampling) -> str:
    """The model's answer to one user message, formatted with the chat template stored in its GGUF file.

    The answer is cut short so the conversation fits the context the model was trained on; a question that does
    not fit at all is a clear error. (llama.cpp would read on past a model's learned positions and abort.)
    """
    check_text("question", question)
    if system is not None:
        check_text("system", system, allow_empty=True)
    max_tokens = check_new_tokens("max_tokens", max_tokens, minimum=1)  # llama.cpp reads 0 as "no limit"
    check_number("temperature", temperature, minimum=0)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    # the smaller of the window llama.cpp made room for and the positions the model learned
    limit = llama_cpp_positions(llm)
    prompt_tokens = len(llm.tokenize(chat_prompt(llm, messages).encode(), add_bos=True, special=True))
    room = limit - prompt_tokens - CHAT_MARGIN
    if room < 1:
        raise CourseError(f"the conversation is about {prompt_tokens} tokens, and this model reads at most {limit}: "
                         "shorten the question (or the system message)")
    reply = llm.create_chat_completion(messages=messages, max_tokens=min(max_tokens, room),
                                       temperature=temperature, **sampling)
    return reply["choices"][0]["message"]["content"]
