"""The model as two files: export a course GPT for the tools that run real open models.

    export_transformers(model, tokenizer, folder)   a `transformers` folder: config.json, model.safetensors and
                                                   the tokenizer; `pipeline("text-generation", model=folder)`
    export_gguf(model, tokenizer, path)             one GGUF file (architecture "gpt2", with its BPE tokenizer)
                                                   that llama.cpp and `llama-cpp-python` run

Both hold the same weights as the course GPT, so greedy decoding gives the same tokens; `greedy_tokens_*`
below run each tool that way so a test (and notebook 07) can check it.

GGUF is llama.cpp's single-file format: a header of key/value metadata (architecture, sizes, the whole
tokenizer) followed by the tensors, each under the name llama.cpp's GPT-2 graph looks up (`blk.0.attn_qkv`...).
"""

import json
import operator
import os
import time
from pathlib import Path

import numpy as np
import torch

from llmlab import paths, runtime
from llmlab.checks import CourseError, check_new_tokens, check_positive_int
from llmlab.generation import fastest_latencies
from llmlab.gpt import GPT, to_transformers

LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, what the course GPT (and GPT-2) use


def export_folder() -> Path:
    """Where notebook 07 writes its exports (in the artifact cache, which git ignores)."""
    return paths.CACHE_DIR / runtime.MODE / "exports"


# --- `transformers` -----------------------------------------------------------------------------------------

def as_transformers_tokenizer(tokenizer):
    """A `transformers` fast tokenizer, from one (returned as is) or from a `tokenizers.Tokenizer`."""
    from transformers import PreTrainedTokenizerFast

    if isinstance(tokenizer, PreTrainedTokenizerFast):
        return tokenizer
    if hasattr(tokenizer, "to_str"):  # a bare `tokenizers.Tokenizer`: take its first special token as eos
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
        specials = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
        if specials:
            wrapped.eos_token = wrapped.bos_token = wrapped.pad_token = specials[0]
        return wrapped
    raise ValueError(f"expected a transformers or tokenizers tokenizer, not {type(tokenizer).__name__}")


def export_transformers(model: GPT, tokenizer, folder) -> Path:
    """Write model and tokenizer as a `transformers` GPT-2 folder (safetensors weights); return the folder."""
    from transformers import GenerationConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = as_transformers_tokenizer(tokenizer)
    hf = to_transformers(model)
    eos = tokenizer.eos_token_id
    # GPT2Config defaults to GPT-2's own end-of-text id, 50256; the course tokenizer has its own.
    hf.config.bos_token_id = hf.config.eos_token_id = hf.config.pad_token_id = eos
    hf.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def greedy_tokens_transformers(folder, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """The new token ids `transformers` generates greedily from the exported folder (stopping at eos)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                          do_sample=False, max_new_tokens=max_new_tokens)
    return out[0, len(prompt_ids):].tolist()


# --- GGUF -----------------------------------------------------------------------------------------------------

def gguf_tensor_name(name: str) -> str | None:
    """The GGUF name llama.cpp's GPT-2 graph uses for a course GPT parameter (None: not written)."""
    if name == "lm_head.weight":
        return None  # tied to the token embedding: llama.cpp reuses token_embd when `output` is absent
    fixed = {"transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
             "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias"}
    if name in fixed:
        return fixed[name]
    parts = name.split(".")  # transformer.h.<N>.<module>[.<sub>].<weight|bias>
    if parts[:2] != ["transformer", "h"]:
        raise ValueError(f"no GGUF name for parameter {name}")
    block, module, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
    per_block = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
                 "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    if module not in per_block:
        raise ValueError(f"no GGUF name for parameter {name}")
    return f"blk.{block}.{per_block[module]}.{kind}"


def _tokenizer_for_gguf(tokenizer, vocab_size: int):
    """Tokens (by id), their types, the merges and the eos id of a byte-level BPE tokenizer."""
    from gguf import TokenType

    tokenizer = as_transformers_tokenizer(tokenizer)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise ValueError("GGUF's 'gpt2' tokenizer needs a byte-level BPE tokenizer (GPT-2's recipe)")
    by_id = {i: t for t, i in spec["model"]["vocab"].items()}
    special = {t["id"]: t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
    by_id.update(special)
    if max(by_id) >= vocab_size:
        raise ValueError(f"the tokenizer has ids up to {max(by_id)} but the model only {vocab_size} embeddings")
    tokens, types = [], []
    for i in range(vocab_size):  # ids the tokenizer never produces (padding rows of the embedding) are unused
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        types.append(TokenType.CONTROL if i in special else TokenType.NORMAL if i in by_id else TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    return tokens, types, merges, tokenizer.eos_token_id


def export_gguf(model: GPT, tokenizer, path, *, dtype: str = "f32", chat_template: str | None = None,
                eot_token_id: int | None = None) -> Path:
    """Write model and tokenizer as one GGUF file for llama.cpp; return its path.

    dtype "f32" keeps the weights exactly; "f16" halves the file (2-D weight matrices in half precision;
    norms and biases stay f32, as llama.cpp expects). chat_template (Jinja) and eot_token_id (the token that
    ends a reply) go into the metadata for a chat model (notebook 08): llama.cpp formats chats with them.
    """
    import gguf

    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be 'f32' or 'f16', not {dtype!r}")
    if not model.config.bias:
        raise ValueError("llama.cpp's GPT-2 graph has biases; only a GPT with bias=True exports")
    c = model.config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, types, merges, eos = _tokenizer_for_gguf(tokenizer, c.vocab_size)

    writer = gguf.GGUFWriter(str(path), arch="gpt2")
    writer.add_name("llmlab course GPT")
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(4 * c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_head_count(c.n_head)
    writer.add_layer_norm_eps(LAYER_NORM_EPS)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("gpt2")  # byte-level BPE with merges
    writer.add_tokenizer_pre("gpt-2")  # GPT-2's pre-tokenizer regex
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eos)
    writer.add_eos_token_id(eos)
    writer.add_add_bos_token(False)  # like GPT-2: a prompt is not prefixed with a start token
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if eot_token_id is not None:
        writer.add_eot_token_id(eot_token_id)

    for name, tensor in model.state_dict().items():
        gguf_name = gguf_tensor_name(name)
        if gguf_name is None:
            continue
        array = tensor.detach().to(torch.float32).cpu().numpy()
        if dtype == "f16" and array.ndim == 2:
            array = array.astype(np.float16)
        # nn.Linear stores (out, in), which is the layout llama.cpp wants (GPT-2's own Conv1D must be transposed)
        writer.add_tensor(gguf_name, array)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def check_gguf_file(path) -> Path:
    """path as a Path, if it names a GGUF file (it starts with the bytes b"GGUF"); a CourseError otherwise.

    Checked before llama.cpp opens it: its errors on other files are long, and some abort the process.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise CourseError(f"path must be the path of a .gguf file, not {type(path).__name__} {path!r:.60}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise CourseError(f"path {str(path)!r} is not a file: give the path of a .gguf file (export_gguf writes one)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise CourseError(f"{path.name} is not a GGUF file: it starts with {magic!r}, not b'GGUF'; give a file that "
                          "export_gguf wrote or a .gguf model")
    return path


def gguf_metadata(path) -> dict:
    """The key/value header of a GGUF file (architecture, sizes, tokenizer settings), without the token lists."""
    import gguf

    path = check_gguf_file(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as error:  # a truncated or damaged file fails deep inside the reader
        raise CourseError(f"{path.name} starts like a GGUF file but cannot be read ({type(error).__name__}: "
                          f"{error}); is it complete? export or download it again") from None
    skip = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
    return {name: field.contents() for name, field in reader.fields.items()
            if not name.startswith("GGUF.") and name not in skip}


def load_gguf(path, *, exact: bool = False, logits_all: bool = False, n_threads: int | None = None):
    """A quiet `llama_cpp.Llama` for a GGUF file, with the model's own context window.

    exact=True keeps llama.cpp's attention cache in f32 (its default is f16, which rounds keys and values);
    logits_all=True keeps the logits of every position (for `llama_cpp_logits`). Call .close() when done.
    """
    import llama_cpp

    meta = gguf_metadata(path)  # checks that path is a GGUF file
    arch = meta["general.architecture"]
    options = dict(model_path=str(path), n_ctx=int(meta[f"{arch}.context_length"]), verbose=False,
                   logits_all=logits_all)
    if n_threads:
        options.update(n_threads=n_threads, n_threads_batch=n_threads)
    if exact:
        options.update(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    return llama_cpp.Llama(**options)


def llama_cpp_positions(llm) -> int:
    """How many positions llama.cpp may fill: its context window, or fewer if the model learned fewer.

    Reading past either makes llama.cpp abort the whole process (in Jupyter: a dead kernel), so the functions
    below check a request against this number before they call llama.cpp.
    """
    import llama_cpp

    return min(llm.n_ctx(), llama_cpp.llama_model_n_ctx_train(llm.model))


def _check_token_ids(llm, name: str, ids) -> list[int]:
    """ids as a non-empty list of ints in llama.cpp's vocabulary (an id past it aborts llama.cpp)."""
    try:
        ids = [operator.index(i) for i in ids]
    except TypeError:
        raise CourseError(f"{name} must be a list of token ids (whole numbers), not {ids!r:.60}") from None
    if not ids:
        raise CourseError(f"{name} is empty: give at least one token id (for example the end-of-text token)")
    bad = [i for i in ids if not 0 <= i < llm.n_vocab()]
    if bad:
        raise CourseError(f"{name} holds ids outside the vocabulary 0 .. {llm.n_vocab() - 1}: {bad[:5]}")
    return ids


def greedy_tokens_llama_cpp(llm, prompt_ids: list[int], max_new_tokens: int,
                            latencies: list[float] | None = None) -> list[int]:
    """The new token ids llama.cpp generates greedily (temperature 0, top-k 1), stopping after eos.

    The prompt and the new tokens must fit the positions the model has (`llama_cpp_positions`); max_new_tokens=0
    writes nothing. latencies, when given, receives the seconds each new token took (the first includes reading
    the prompt).
    """
    prompt_ids = _check_token_ids(llm, "prompt_ids", prompt_ids)
    max_new_tokens = check_new_tokens("max_new_tokens", max_new_tokens)  # llama.cpp reads 0 as "no limit"
    room = llama_cpp_positions(llm) - len(prompt_ids)
    if max_new_tokens > room:
        raise CourseError(f"max_new_tokens={max_new_tokens} does not fit: the prompt is {len(prompt_ids)} tokens and "
                          f"this model reads at most {llama_cpp_positions(llm)}; ask for at most {max(room, 0)} "
                          "new tokens" + (" (shorten the prompt)" if room < 1 else ""))
    if max_new_tokens == 0:
        return []
    llm.reset()
    new, last = [], time.perf_counter()
    for token in llm.generate(prompt_ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        new.append(token)
        if latencies is not None:
            now = time.perf_counter()
            latencies.append(now - last)
            last = now
        if token == llm.token_eos() or len(new) == max_new_tokens:
            break
    return new


def llama_cpp_speed(llm, prompt_ids: list[int], max_new_tokens: int, repeats: int = 3) -> tuple[float, list[int]]:
    """Tokens/s of llama.cpp's greedy generation and the tokens it wrote.

    Timed like `llmlab.generation.generation_speed`: each token at its fastest over repeats runs.
    """
    check_positive_int("repeats", repeats, maximum=100)
    check_new_tokens("max_new_tokens", max_new_tokens, minimum=1)
    runs = []
    for _ in range(repeats):
        runs.append([])
        tokens = greedy_tokens_llama_cpp(llm, prompt_ids, max_new_tokens, latencies=runs[-1])
    fastest = fastest_latencies(runs)
    return len(fastest) / sum(fastest), tokens


def _keeps_all_logits(llm) -> bool:
    """Whether llama-cpp-python was asked for every position's logits when the model was loaded."""
    return bool(getattr(llm, "_logits_all", True))  # llama-cpp-python 0.3 keeps the flag here


def llama_cpp_logits(llm, ids: list[int]) -> torch.Tensor:
    """llama.cpp's next-token logits at every position of ids, (len(ids), vocab); needs logits_all=True."""
    if not _keeps_all_logits(llm):  # otherwise llama.cpp leaves every row but the last at zero
        raise CourseError("llama_cpp_logits needs the model loaded with logits_all=True: "
                          "load_gguf(path, logits_all=True)")
    ids = _check_token_ids(llm, "ids", ids)
    if len(ids) > llama_cpp_positions(llm):
        raise CourseError(f"ids is {len(ids)} tokens; this model reads at most {llama_cpp_positions(llm)}")
    llm.reset()
    llm.eval(ids)
    return torch.from_numpy(llm.scores[:len(ids)].copy())


def file_sizes(*paths) -> dict[str, int]:
    """Bytes on disk of each file, or of every file in each folder."""
    sizes = {}
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            sizes[str(f)] = f.stat().st_size
    return sizes
