"""RLHF and DPO (notebook 10): pushing the SFT model toward answers a reward model prefers.

    model = rlhf_model()              # artifact "rlhf": SFT + policy gradient on the reward model, KL leash on
    loose = rlhf_model(kl_coef=0)     # artifact "rlhf-leash-off": the same run with no KL penalty
    dpo = dpo_model()                 # artifact "dpo": the same preferences, no reward model, no sampling

RLHF, one step (`rlhf_step`), with the pieces of `llmlab.rl`:
  1. sample a group of answers per training question from the policy (one batch, one KV cache);
  2. score each answer with the reward model of notebook 09;
  3. advantage = reward minus the mean reward of the OTHER answers to the same question (REINFORCE with a
     leave-one-out baseline, RLOO): no value network, no second model to train, one readable loss;
  4. loss = -advantage * log p(answer)  +  kl_coef * KL(policy || SFT reference), per answer token.
The KL term is the leash: every step away from the SFT model costs reward. Without it (kl_coef=0) the policy
is free to chase whatever the reward model over-rates.

DPO (`train_dpo`) skips the reward model and the sampling: on each preference pair it raises the chosen answer's
log-probability relative to the reference and lowers the rejected one's, through `rl.dpo_loss`.

Also here: the sampling measurement RL lives on (`sampling_speed`: one batch against one row at a time) and the
measures of mode collapse (`distinct_ngrams`, `first_token_entropy`, `diversity`).
"""

import copy
import json
import math
import random
import time
from collections import Counter
from pathlib import Path

import torch

from llmlab import artifacts, chat, rl, sft, tasks
from llmlab.checks import NOT_DONE, CourseError, check_positive_int, learner_call
from llmlab.generation import generate_batch
from llmlab.progress import progress_bar
from llmlab.runtime import by_mode, seed_everything
from llmlab.tokenizer import course_tokenizer
from llmlab.training import load_model, save_model

# --- prompts ------------------------------------------------------------------------------------------------------


def encode_prompts(tokenizer, prompts, *, max_new_tokens: int, block_size: int) -> list[list[int]]:
    """Chat prompt ids for each prompt (a question, or a list of chat messages ending with the user).

    A prompt that leaves no room for max_new_tokens in the context window is refused: RL must not train on
    answers that were cut off by the window instead of ended by the model.
    """
    if isinstance(prompts, (str, dict)) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise CourseError(f"give a non-empty list of prompts, not {type(prompts).__name__} {prompts!r:.60}")
    check_positive_int("max_new_tokens", max_new_tokens, maximum=block_size - 1)
    encoded = []
    for prompt in prompts:
        ids = chat.prompt_ids(tokenizer, [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt)
        if len(ids) + max_new_tokens > block_size:
            raise CourseError(f"a prompt of {len(ids)} tokens leaves no room for {max_new_tokens} new tokens in the "
                              f"context window of {block_size}: keep prompts under {block_size - max_new_tokens} "
                              "tokens")
        encoded.append(ids)
    return encoded


# --- 1. batched sampling, measured ---------------------------------------------------------------------------------

def sampling_speed(model, prompt_ids: list[list[int]], max_new_tokens: int, *, temperature: float = 1.0,
                   repeats: int = 3, seed: int = 0, threads: int = 1) -> dict:
    """Tokens/s of `generate_batch` on all the prompts at once against one prompt at a time.

    No stop token, so both write exactly max_new_tokens per prompt: the same work, counted the same way. A shared
    machine slows some runs down, so every timing is the fastest of `repeats`: the batch's, and each row's alone
    (the single-row time is the sum of the rows' fastest). With temperature 0 (greedy) it also checks that every
    row of the batch equals the row generated alone. Both sides run on `threads` CPU threads (one by default: on a
    machine busy with other work, two threads that wait for each other make small operations erratically slow).
    """
    check_positive_int("repeats", repeats)
    check_positive_int("threads", threads)
    if not prompt_ids:
        raise CourseError("give at least one prompt to time")

    def fastest(prompts, row_seed):
        best, out = math.inf, None
        for _ in range(repeats):
            generator = torch.Generator().manual_seed(row_seed)
            start = time.perf_counter()
            out = generate_batch(model, prompts, max_new_tokens, temperature=temperature, generator=generator)
            best = min(best, time.perf_counter() - start)
        return best, out

    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        batch_seconds, batch_out = fastest(prompt_ids, seed)
        single_seconds, single_out = 0.0, []
        for i, prompt in enumerate(prompt_ids):
            seconds, out = fastest([prompt], seed + 1 + i)
            single_seconds += seconds
            single_out += out
    finally:
        torch.set_num_threads(threads_before)
    tokens = sum(len(o) for o in batch_out)
    result = {"rows": len(prompt_ids), "new tokens": tokens,
              "batched tokens/s": tokens / batch_seconds,
              "single-row tokens/s": sum(len(o) for o in single_out) / single_seconds}
    result["speed-up"] = result["batched tokens/s"] / result["single-row tokens/s"]
    if temperature == 0:
        result["batched == row by row"] = batch_out == single_out
    return result


# --- 2. mode collapse, measured -----------------------------------------------------------------------------------

def distinct_ngrams(samples, n: int) -> float:
    """Distinct n-grams over all n-grams of the samples (token lists, or texts split into words): 1.0 when no
    n-gram repeats anywhere, near 0 when every sample says the same thing."""
    check_positive_int("n", n)
    grams = []
    for sample in samples:
        units = sample.split() if isinstance(sample, str) else list(sample)
        grams += [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]
    if not grams:
        raise CourseError(f"the samples hold no {n}-gram: give longer samples")
    return len(set(grams)) / len(grams)


def entropy_bits(probs) -> float:
    """Entropy of a distribution in bits: 0 for a certain outcome, log2(k) for k equally likely ones."""
    probs = torch.as_tensor(probs, dtype=torch.float64)
    probs = probs[probs > 0] / probs.sum()
    return float(-(probs * probs.log2()).sum())


@torch.no_grad()
def first_token_entropy(model, prompt_ids: list[int]) -> tuple[float, dict]:
    """(entropy in bits of the model's next-token distribution after the prompt, its five likeliest tokens with
    their probabilities): how many ways the model sees to go on, computed exactly, not sampled."""
    model.eval()
    logits, _ = model(torch.tensor([prompt_ids]))
    probs = torch.softmax(logits[0, -1].double(), dim=-1)
    top = torch.topk(probs, 5)
    return entropy_bits(probs), dict(zip(top.indices.tolist(), top.values.tolist()))


def story_prompt(tokenizer, model_kind: str, opening: str) -> list[int]:
    """The same open-ended story opening for every model, in the form each model reads: a document for the base
    model; for an assistant, a user's request and the opening as the start of its reply."""
    opening_ids = tokenizer.encode(opening, add_special_tokens=False)
    if model_kind == "base":
        return [tokenizer.eos_token_id, *opening_ids]
    return chat.prompt_ids(tokenizer, [{"role": "user", "content": "Tell me a story."}]) + opening_ids


def diversity(model, tokenizer, prompt_ids: list[int], *, samples: int, max_new_tokens: int,
              seed: int = 0) -> dict:
    """Mode collapse in numbers, for one prompt: `samples` continuations at temperature 1.

    distinct-1/2/3: distinct token n-grams over all n-grams of the continuations; first-token entropy: exact,
    in bits, from the model's distribution; distinct first tokens: how many of the samples' first tokens differ.
    """
    check_positive_int("samples", samples)
    new = generate_batch(model, [prompt_ids] * samples, max_new_tokens, temperature=1.0,
                         stop_tokens=sft.stop_ids(tokenizer), generator=torch.Generator().manual_seed(seed))
    entropy, top = first_token_entropy(model, prompt_ids)
    firsts = Counter(n[0] for n in new if n)
    return {"distinct-1": distinct_ngrams(new, 1), "distinct-2": distinct_ngrams(new, 2),
            "distinct-3": distinct_ngrams(new, 3), "first-token entropy (bits)": entropy,
            "distinct first tokens": len(firsts), "likeliest first token": tokenizer.decode([max(top, key=top.get)]),
            "its probability": max(top.values()),
            "texts": [tokenizer.decode(n, skip_special_tokens=True) for n in new]}


# --- 3. RLHF: REINFORCE with a leave-one-out baseline and a KL leash -------------------------------------------------

KL_COEF = 0.3  # the leash of the "rlhf" artifact: the sweep of notebook 10 shows looser and tighter ones
KL_SWEEP = (0.0, 0.1, KL_COEF, 1.0)  # the coefficients notebook 10 compares (each a cached artifact)

RLHF_CONFIG = {
    "steps": by_mode(full=60, fast=3),
    "questions_per_step": by_mode(full=16, fast=3),
    "group_size": by_mode(full=4, fast=2),
    "max_new_tokens": by_mode(full=48, fast=16),
    "temperature": 1.0,
    "learning_rate": 2e-4,
    "grad_clip": 1.0,
    "eval_interval": by_mode(full=10, fast=3),
    "eval_questions": by_mode(full=200, fast=8),
    "seed": 0,
}


def training_questions(n: int | None = None, *, seed: int = 0) -> list[str]:
    """The RLHF prompts: the questions of the preference pairs' training split (training words only)."""
    from llmlab import reward

    prompts = list(dict.fromkeys(reward.preference_pairs()["train"]["prompt"]))
    random.Random(seed).shuffle(prompts)
    return prompts if n is None else prompts[:n]


def rlhf_step(policy, reference, tokenizer, score, prompt_ids, questions, optimizer, *, kl_coef: float,
              config: dict, generator: torch.Generator) -> dict:
    """One RLHF update on one batch of questions. score(questions, answers) -> rewards (a tensor).

    Returns what the step measured: mean reward, KL to the reference (nats per answer, summed over its tokens),
    answer length in tokens, loss.
    """
    g = config["group_size"]
    prompts, completions, truncated = rl.sample_groups(policy, tokenizer, prompt_ids, g, config["max_new_tokens"],
                                                       temperature=config["temperature"], generator=generator)
    answers = [tokenizer.decode(c, skip_special_tokens=True) for c in completions]
    rewards = torch.as_tensor(score([q for q in questions for _ in range(g)], answers), dtype=torch.float32)
    advantages = rl.leave_one_out_advantages(rewards, g)

    ids, mask = rl.completion_batch(prompts, completions, pad_id=tokenizer.eos_token_id)
    policy.train()
    logp = rl.token_logprobs(policy, ids, mask)
    with torch.no_grad():
        ref_logp = rl.token_logprobs(reference, ids, mask)
    kl = rl.kl_per_token(logp, ref_logp) * mask
    loss = rl.policy_gradient_loss(logp, logp.detach(), advantages, mask) + kl_coef * rl.masked_mean(kl, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), config["grad_clip"])
    optimizer.step()
    policy.eval()
    return {"reward": rewards.mean().item(), "kl": kl.sum(dim=1).mean().item(),
            "answer tokens": mask.sum(dim=1).float().mean().item(), "truncated": sum(truncated) / len(truncated),
            "loss": loss.item()}


def evaluate_policy(model, tokenizer, score, n: int) -> dict:
    """Held-out letter-count accuracy (greedy, the tasks grader: the TRUE measure) and the reward model's mean
    score of the same answers (what RLHF optimises)."""
    accuracy, questions, answers = sft.heldout_accuracy(model, tokenizer, n=n, max_new_tokens=RLHF_CONFIG["max_new_tokens"])
    rewards = score([q.question for q in questions], answers)
    return {"accuracy": accuracy, "reward": float(torch.as_tensor(rewards).float().mean()),
            "answer words": sum(len(a.split()) for a in answers) / len(answers)}


def train_rlhf(policy, reference, score, questions: list[str], *, kl_coef: float, config: dict = RLHF_CONFIG,
               progress: bool = True, desc: str = "RLHF") -> dict:
    """Run RLHF on policy (trained in place) against the frozen reference. Returns the history: per step the
    training measures of `rlhf_step`, and every eval_interval steps `evaluate_policy` on held-out questions."""
    kl_coef = rl.check_coefficient("kl_coef", kl_coef)
    if not questions:
        raise CourseError("RLHF needs training questions: the list is empty")
    seed_everything(config["seed"])
    tokenizer = course_tokenizer()
    block = policy.config.block_size
    prompt_ids = encode_prompts(tokenizer, questions, max_new_tokens=config["max_new_tokens"], block_size=block)
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config["learning_rate"], betas=(0.9, 0.99),
                                  weight_decay=0.0)
    generator = torch.Generator().manual_seed(config["seed"])
    order = random.Random(config["seed"])
    history = {"kl_coef": kl_coef, "steps": [], "eval_steps": [], "train": [], "eval": []}
    start = time.perf_counter()

    def evaluate(step):
        history["eval_steps"].append(step)
        history["eval"].append(evaluate_policy(policy, tokenizer, score, config["eval_questions"]))

    evaluate(0)
    per_step = config["questions_per_step"]
    for step in progress_bar(range(1, config["steps"] + 1), desc=desc, disable=not progress):
        chosen = order.sample(range(len(questions)), min(per_step, len(questions)))
        measured = rlhf_step(policy, reference, tokenizer, score, [prompt_ids[i] for i in chosen],
                             [questions[i] for i in chosen], optimizer, kl_coef=kl_coef, config=config,
                             generator=generator)
        history["steps"].append(step)
        history["train"].append(measured)
        if step % config["eval_interval"] == 0 or step == config["steps"]:
            evaluate(step)
    history["seconds"] = time.perf_counter() - start
    return history


def artifact_name(kl_coef: float) -> str:
    """"rlhf" for the course's leash, "rlhf-leash-off" for none, "rlhf-kl-0p5" for a point of the sweep."""
    kl_coef = rl.check_coefficient("kl_coef", kl_coef)
    if kl_coef == KL_COEF:
        return "rlhf"
    if kl_coef == 0:
        return "rlhf-leash-off"
    return "rlhf-kl-" + f"{kl_coef:g}".replace(".", "p").replace("-", "m").replace("+", "")


def _build_rlhf(kl_coef: float):
    def build(folder: Path) -> None:
        from llmlab import reward

        start = time.perf_counter()
        reference = sft.sft_model()
        policy = copy.deepcopy(reference)
        scorer = reward.reward_model()
        history = train_rlhf(policy, reference, scorer.score, training_questions(), kl_coef=kl_coef,
                             desc=artifact_name(kl_coef))
        save_model(policy, folder)
        history["build_seconds"] = time.perf_counter() - start
        (folder / "history.json").write_text(json.dumps(history, indent=1))

    return build


def _rlhf_config(kl_coef: float) -> dict:
    from llmlab import reward

    reward.reward_model()  # the parents first: their fingerprints are part of the config
    return {**RLHF_CONFIG, "kl_coef": kl_coef, "sft": sft._fingerprint("sft"),
            "reward": sft._fingerprint("reward"), "files": 1}


def rlhf_model(kl_coef: float = KL_COEF):
    """The RLHF policy trained with this KL coefficient (artifact "rlhf" for the default, "rlhf-leash-off" for
    0): cached, or trained (a few minutes in full mode)."""
    kl_coef = rl.check_coefficient("kl_coef", kl_coef)
    return artifacts.cached(artifact_name(kl_coef), build=_build_rlhf(kl_coef), load=load_model,
                            config=_rlhf_config(kl_coef))


def rlhf_history(kl_coef: float = KL_COEF) -> dict:
    """The training history saved with an RLHF artifact (built first if missing)."""
    rlhf_model(kl_coef)
    return json.loads((artifacts.entry_dir(artifact_name(kl_coef)) / "history.json").read_text())


# --- 4. DPO: the same preferences, no reward model, no sampling -------------------------------------------------------

DPO_CONFIG = {
    "beta": 0.1,
    "epochs": by_mode(full=1, fast=1),
    "batch_size": by_mode(full=16, fast=4),
    "learning_rate": 2e-4,
    "grad_clip": 1.0,
    "pairs": by_mode(full=3000, fast=16),  # the first pairs of the training split that fit the window
    "seed": 0,
}


def preference_batch(tokenizer, pairs) -> tuple:
    """Token batches for preference pairs (rows with prompt, chosen, rejected): (chosen ids, chosen mask,
    rejected ids, rejected mask) as `rl.completion_batch` lays them out, each answer closed by <|end|>."""
    if pairs is None or len(pairs) == 0:
        raise CourseError("the preference set is empty: DPO needs pairs of (prompt, chosen, rejected)")
    rows = [dict(zip(("prompt", "chosen", "rejected"), (r["prompt"], r["chosen"], r["rejected"]))) for r in pairs]
    end = tokenizer.convert_tokens_to_ids(chat.END)
    prompts = [chat.prompt_ids(tokenizer, [{"role": "user", "content": r["prompt"]}]) for r in rows]

    def answers(key):
        return [tokenizer.encode(r[key], add_special_tokens=False) + [end] for r in rows]

    pad = tokenizer.eos_token_id
    return (*rl.completion_batch(prompts, answers("chosen"), pad), *rl.completion_batch(prompts, answers("rejected"), pad))


def dpo_batch_loss(policy, reference, batch, beta: float):
    """rl.dpo_loss on one batch from `preference_batch`: (loss, chosen rewards, rejected rewards)."""
    chosen_ids, chosen_mask, rejected_ids, rejected_mask = batch
    pi_chosen = rl.sequence_logprobs(policy, chosen_ids, chosen_mask)
    pi_rejected = rl.sequence_logprobs(policy, rejected_ids, rejected_mask)
    with torch.no_grad():
        ref_chosen = rl.sequence_logprobs(reference, chosen_ids, chosen_mask)
        ref_rejected = rl.sequence_logprobs(reference, rejected_ids, rejected_mask)
    return rl.dpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta=beta)


def train_dpo(policy, reference, pairs, config: dict = DPO_CONFIG, *, progress: bool = True) -> dict:
    """DPO on preference pairs (policy trained in place). History per step: loss, and the share of pairs whose
    implicit reward (beta * log-ratio to the reference) ranks chosen above rejected."""
    beta = rl.check_coefficient("beta", config["beta"])
    if pairs is None or len(pairs) == 0:
        raise CourseError("the preference set is empty: DPO needs pairs of (prompt, chosen, rejected)")
    seed_everything(config["seed"])
    tokenizer = course_tokenizer()
    rows = [pairs[i] for i in range(len(pairs))]
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config["learning_rate"], betas=(0.9, 0.99), weight_decay=0.0)
    order = random.Random(config["seed"])
    size = config["batch_size"]
    history = {"steps": [], "loss": [], "reward accuracy": [], "margin": []}
    start = time.perf_counter()
    steps = config["epochs"] * math.ceil(len(rows) / size)
    bar = progress_bar(total=steps, desc="DPO", disable=not progress)
    for epoch in range(config["epochs"]):
        order.shuffle(rows)
        for first in range(0, len(rows), size):
            batch = preference_batch(tokenizer, rows[first:first + size])
            policy.train()
            loss, chosen, rejected = dpo_batch_loss(policy, reference, batch, beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config["grad_clip"])
            optimizer.step()
            history["steps"].append(len(history["steps"]) + 1)
            history["loss"].append(loss.item())
            history["reward accuracy"].append((chosen > rejected).float().mean().item())
            history["margin"].append((chosen - rejected).mean().item())
            bar.update()
    bar.close()
    policy.eval()
    history["seconds"] = time.perf_counter() - start
    return history


def pair_fits(tokenizer, pair, block_size: int) -> bool:
    """Do the prompt and each answer (with its <|end|>) fit the context window together?"""
    prompt = len(chat.prompt_ids(tokenizer, [{"role": "user", "content": pair["prompt"]}]))
    longest = max(len(tokenizer.encode(pair[k], add_special_tokens=False)) for k in ("chosen", "rejected"))
    return prompt + longest + 1 <= block_size


def _dpo_pairs():
    """The training pairs of notebook 09 that fit the context window (in full mode: all of them)."""
    from llmlab import reward

    train = reward.preference_pairs()["train"]
    tokenizer, block = course_tokenizer(), sft.sft_model().config.block_size
    keep = [i for i, pair in enumerate(train) if pair_fits(tokenizer, pair, block)]
    n = DPO_CONFIG["pairs"]
    return train.select(keep if n is None else keep[:n])


def _build_dpo(folder: Path) -> None:
    start = time.perf_counter()
    reference = sft.sft_model()
    policy = copy.deepcopy(reference)
    history = train_dpo(policy, reference, _dpo_pairs())
    save_model(policy, folder)
    history["build_seconds"] = time.perf_counter() - start
    (folder / "history.json").write_text(json.dumps(history, indent=1))


def dpo_model():
    """The DPO model (artifact "dpo"): the SFT model trained by DPO on notebook 09's preference pairs."""
    from llmlab import reward

    reward.preference_pairs()
    reward.reward_model()
    config = {**DPO_CONFIG, "sft": sft._fingerprint("sft"), "reward": sft._fingerprint("reward"), "files": 1}
    return artifacts.cached("dpo", build=_build_dpo, load=load_model, config=config)


def dpo_history() -> dict:
    dpo_model()
    return json.loads((artifacts.entry_dir("dpo") / "history.json").read_text())


# --- exercise ---------------------------------------------------------------------------------------------------------

def check_dpo_loss(fn) -> bool:
    """Exercise: fn(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta) -> the mean DPO loss (a number or a
    0-d tensor), from sequence log-probabilities of shape (B,). Checked against `rl.dpo_loss`."""
    g = torch.Generator().manual_seed(0)
    cases = [(-20 * torch.rand(4, generator=g), -20 * torch.rand(4, generator=g), -20 * torch.rand(4, generator=g),
              -20 * torch.rand(4, generator=g), beta) for beta in (0.1, 0.5)]
    x = torch.tensor([-3.0, -7.0])
    cases.append((x, x - 1, x, x - 1, 0.1))  # the policy equals the reference: the loss is log 2
    for pi_c, pi_r, ref_c, ref_r, beta in cases:
        expected = rl.dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=beta)[0].item()
        got = learner_call(fn, pi_c.clone(), pi_r.clone(), ref_c.clone(), ref_r.clone(), beta, not_done=(
            "Not done yet: the implicit reward is beta * (log pi - log ref); the loss is "
            "-log sigmoid(chosen reward - rejected reward), averaged over the pairs."))
        if got is NOT_DONE:
            return False
        try:
            got = float(got)
        except (TypeError, ValueError):
            print(f"✗ return one number (the mean loss), not {got!r:.60}")
            return False
        if not math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-6):
            print(f"✗ with beta={beta} you give {got:.5f}; the DPO loss is {expected:.5f}")
            return False
    print(f"✓ your DPO loss matches llmlab's on {len(cases)} batches (log 2 when the policy is the reference)")
    return True
