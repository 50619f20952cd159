"""Policy-gradient pieces shared by RLHF and DPO (notebook 10) and RL with a verifiable reward (notebook 11).

Reinforcement learning on a language model is a short loop:

    1. sample: for each prompt, a group of completions (`sample_groups`, batched with one KV cache);
    2. score: a reward per completion (a reward model, or a grader that checks the answer);
    3. compare: an advantage per completion, its reward minus a baseline taken from the same group
       (`group_advantages`, GRPO; `leave_one_out_advantages`, RLOO), so no value network is needed;
    4. update: raise the log-probability of the completion's tokens in proportion to its advantage
       (`policy_gradient_loss`, with PPO's clip), while a KL penalty (`kl_per_token`) keeps the policy near the
       model it started from.

`dpo_loss` reaches the same goal from preference pairs, without sampling and without a reward model.

Shapes: a batch holds B rows of prompt + completion, right-padded to T tokens (`completion_batch`). Per-token
quantities have shape (B, T-1): position t is about predicting token t+1, and `mask` is True where that token
belongs to the completion (the prompt and the padding are never trained on).
"""

import torch
import torch.nn.functional as F

from llmlab import chat
from llmlab.checks import CourseError, check_number, check_positive_int
from llmlab.generation import generate_batch


def check_coefficient(name: str, value) -> float:
    """A KL coefficient, a DPO beta, a clip range: a finite number >= 0, or a CourseError that says so."""
    return check_number(name, value, minimum=0.0)


# --- 1. sampling --------------------------------------------------------------------------------------------------

def sample_groups(model, tokenizer, prompt_ids: list[list[int]], group_size: int, max_new_tokens: int, *,
                  temperature: float = 1.0, generator: torch.Generator | None = None):
    """group_size sampled completions per prompt, all in one batch.

    Returns (prompts, completions, truncated): the prompts repeated group_size times (row i belongs to prompt
    i // group_size), each completion's token ids with <|end|> appended where the model ended its turn (so the
    update also teaches it when to stop), and whether each row ran out of tokens before it ended.
    """
    check_positive_int("group_size", group_size)
    if not prompt_ids or any(not isinstance(p, (list, tuple)) or not p for p in prompt_ids):
        raise CourseError("sample_groups needs a non-empty list of prompts, each a non-empty list of token ids")
    lengths = {len(p) for p in prompt_ids}
    end = tokenizer.convert_tokens_to_ids(chat.END)
    prompts = [list(p) for p in prompt_ids for _ in range(group_size)]
    limit = min(max_new_tokens, model.config.block_size - max(lengths))
    new = generate_batch(model, prompts, max_new_tokens, temperature=temperature, stop_tokens=[end],
                         generator=generator)
    truncated = [len(n) >= limit for n in new]
    completions = [n if cut else n + [end] for n, cut in zip(new, truncated)]
    return prompts, completions, truncated


def completion_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int):
    """Rows prompt + completion, right-padded with pad_id to one length T: (ids (B, T), mask (B, T-1)).

    mask[b, t] is True where token t+1 of row b belongs to the completion. Right padding is safe here: a causal
    model's logits at a real token never look at the padding that comes after it.
    """
    if len(prompts) != len(completions) or not prompts:
        raise CourseError(f"completion_batch needs as many prompts as completions (got {len(prompts)} and "
                          f"{len(completions)}), and at least one")
    if any(not c for c in completions):
        raise CourseError("a completion is empty: there is nothing to train on (drop it, or sample again)")
    rows = [list(p) + list(c) for p, c in zip(prompts, completions)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width - 1, dtype=torch.bool)
    for b, (p, row) in enumerate(zip(prompts, rows)):
        ids[b, :len(row)] = torch.tensor(row)
        mask[b, len(p) - 1:len(row) - 1] = True
    return ids, mask


# --- 2. log-probabilities -----------------------------------------------------------------------------------------

def token_logprobs(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(token t+1 | tokens ..t) for each position, (B, T-1); 0 where mask is False. Keeps the graph."""
    ids = ids.to(next(model.parameters()).device)
    logits, _ = model(ids[:, :-1])
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return logp * mask.to(logp.device)


def sequence_logprobs(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(completion | prompt) per row, (B,): the sum of its tokens' log-probabilities."""
    return token_logprobs(model, ids, mask).sum(dim=-1)


# --- 3. advantages ------------------------------------------------------------------------------------------------

def _groups(rewards, group_size: int) -> torch.Tensor:
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    check_positive_int("group_size", group_size)
    if rewards.ndim != 1 or rewards.numel() == 0 or rewards.numel() % group_size:
        raise CourseError(f"{rewards.numel()} rewards do not split into groups of {group_size}: the rewards of "
                          "one prompt's completions must sit together, group after group")
    return rewards.view(-1, group_size)


def group_advantages(rewards, group_size: int, *, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantage: each reward minus its group's mean, divided by the group's standard deviation (scale).

    A group whose completions all got the same reward gives advantages of 0: it carries no signal.
    """
    groups = _groups(rewards, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (groups.std(dim=1, unbiased=False, keepdim=True) + eps)
    return centred.flatten()


def leave_one_out_advantages(rewards, group_size: int) -> torch.Tensor:
    """RLOO's advantage: each reward minus the mean reward of the OTHER completions of its prompt.

    The baseline does not use the completion itself, so the gradient stays unbiased.
    """
    if group_size < 2:
        raise CourseError("a leave-one-out baseline needs at least 2 completions per prompt (group_size >= 2)")
    groups = _groups(rewards, group_size)
    others = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others).flatten()


# --- 4. the update ------------------------------------------------------------------------------------------------

def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """An estimate of KL(policy || reference) at each sampled token: exp(r) - r - 1 with r = ref_logp - logp.

    Schulman's "k3" estimator: never negative, 0 exactly where the two models agree, and its mean over tokens
    sampled from the policy is the KL divergence (unbiased). Multiply by the mask before summing.
    """
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of values over the positions where mask is True."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def policy_gradient_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                         mask: torch.Tensor, clip: float = 0.2) -> torch.Tensor:
    """PPO's clipped surrogate, averaged over every completion token of the batch (as GRPO / DAPO use it).

    ratio = p_new / p_old per token. A token of a completion with advantage A pushes its log-probability up
    (A > 0) or down (A < 0), but only until the ratio leaves [1 - clip, 1 + clip]: one batch cannot move the
    policy far. With old_logp = logp.detach() (one update per batch) the ratio is 1 and this is REINFORCE:
    the gradient of -A * log p.
    """
    check_coefficient("clip", clip)
    ratio = torch.exp(logp - old_logp)
    advantages = advantages.to(logp.device).unsqueeze(-1)
    surrogate = torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - clip, 1 + clip) * advantages)
    return -masked_mean(surrogate, mask)


def dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1):
    """Direct Preference Optimisation (Rafailov et al., 2023) from sequence log-probabilities, shape (B,).

    The implicit reward of a completion is beta * (log pi(y|x) - log ref(y|x)); the loss is the Bradley-Terry
    loss on the chosen and rejected rewards: -log sigmoid(r_chosen - r_rejected). Returns (mean loss,
    chosen rewards, rejected rewards), the rewards detached (for logging).
    """
    beta = check_number("beta", beta, minimum=0.0, strict_minimum=True)
    chosen = beta * (pi_chosen - ref_chosen)
    rejected = beta * (pi_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return loss, chosen.detach(), rejected.detach()

