import math

import pytest
import torch
import torch.nn.functional as F

from llmlab import chat, rl
from llmlab.checks import CourseError
from llmlab.gpt import GPT, GPTConfig


def tiny_gpt(seed=0, vocab=64, block_size=32):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=2, n_head=2, n_embd=32)).eval()


# --- batches and log-probabilities --------------------------------------------------------------------------------

def test_completion_batch_marks_only_the_completion_tokens():
    ids, mask = rl.completion_batch([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 9, 10], [8, 11, 12, 13, 0]]
    # position t predicts token t+1: row 0 predicts 9 at t=2 and 10 at t=3; row 1 predicts 11, 12, 13 at t=0..2
    assert mask.tolist() == [[False, False, True, True], [True, True, True, False]]


def test_completion_batch_refuses_empty_or_mismatched_input():
    with pytest.raises(CourseError, match="empty"):
        rl.completion_batch([[1, 2]], [[]], pad_id=0)
    with pytest.raises(CourseError, match="as many prompts"):
        rl.completion_batch([[1, 2]], [[3], [4]], pad_id=0)


def test_token_logprobs_equal_cross_entropy_of_each_row_alone():
    model = tiny_gpt()
    prompts, completions = [[1, 2, 3], [4]], [[5, 6], [7, 8, 9, 10]]
    ids, mask = rl.completion_batch(prompts, completions, pad_id=0)
    logp = rl.token_logprobs(model, ids, mask)
    assert (logp[~mask] == 0).all()
    for b, (p, c) in enumerate(zip(prompts, completions)):
        row = torch.tensor([p + c])
        logits, _ = model(row[:, :-1])  # the row alone, without padding
        reference = -F.cross_entropy(logits[0, len(p) - 1:], row[0, len(p):], reduction="sum")
        assert torch.allclose(rl.sequence_logprobs(model, ids, mask)[b], reference, atol=1e-5)


# --- advantages ---------------------------------------------------------------------------------------------------

def test_group_advantages_of_equal_rewards_are_zero():
    adv = rl.group_advantages([1.0, 1.0, 1.0, 0.0, 0.0, 0.0], group_size=3)
    assert torch.equal(adv, torch.zeros(6))


def test_group_advantages_are_standardised_within_each_group():
    adv = rl.group_advantages([1.0, 0.0, 3.0, 5.0], group_size=2)
    # each group is {mean +- 1 std}: the advantages are +-1 (up to eps)
    assert torch.allclose(adv, torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-3)
    assert torch.allclose(rl.group_advantages([1.0, 0.0, 3.0, 5.0], 2, scale=False),
                          torch.tensor([0.5, -0.5, -1.0, 1.0]))


def test_leave_one_out_advantage_by_hand():
    # group (1, 0, 0, 1): for the first, the others' mean is 1/3, so 1 - 1/3
    adv = rl.leave_one_out_advantages([1.0, 0.0, 0.0, 1.0], group_size=4)
    assert torch.allclose(adv, torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))
    with pytest.raises(CourseError, match="at least 2"):
        rl.leave_one_out_advantages([1.0, 0.0], group_size=1)


def test_rewards_that_do_not_split_into_groups_are_refused():
    with pytest.raises(CourseError, match="groups of 4"):
        rl.group_advantages([1.0, 0.0, 1.0], group_size=4)


# --- KL -----------------------------------------------------------------------------------------------------------

def test_kl_estimate_is_zero_for_identical_policies_and_positive_otherwise():
    logp = torch.log(torch.tensor([[0.2, 0.5, 0.9]]))
    assert torch.equal(rl.kl_per_token(logp, logp), torch.zeros(1, 3))
    assert (rl.kl_per_token(logp, logp - 0.3) > 0).all() and (rl.kl_per_token(logp, logp + 0.3) > 0).all()


def test_kl_estimate_averages_to_the_exact_kl_over_samples_from_the_policy():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=g), dim=0)
    q = torch.softmax(torch.randn(6, generator=g), dim=0)
    samples = torch.multinomial(p, 200_000, replacement=True, generator=g)
    estimate = rl.kl_per_token(p.log()[samples], q.log()[samples]).mean()
    exact = (p * (p.log() - q.log())).sum()
    assert abs(estimate - exact) < 0.01 * max(1.0, exact.item())


# --- the policy-gradient loss -------------------------------------------------------------------------------------

def test_policy_gradient_raises_the_logprob_of_positive_advantage_tokens():
    logits = torch.zeros(2, 1, 4, requires_grad=True)
    actions = torch.tensor([[1], [2]])
    logp = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    mask = torch.ones(2, 1, dtype=torch.bool)
    rl.policy_gradient_loss(logp, logp.detach(), torch.tensor([1.0, -1.0]), mask).backward()
    # gradient descent moves opposite to the gradient: the rewarded action's logit goes up, the other's down
    assert logits.grad[0, 0, 1] < 0 and logits.grad[1, 0, 2] > 0


def test_policy_gradient_is_clipped_once_the_ratio_leaves_the_trust_region():
    logp = torch.tensor([[0.0]], requires_grad=True)
    old = torch.tensor([[-1.0]])  # ratio e > 1.2 with a positive advantage: no further push
    rl.policy_gradient_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 1, dtype=torch.bool), clip=0.2).backward()
    assert logp.grad.item() == 0.0


def test_a_policy_trained_on_a_bandit_moves_to_the_rewarded_action():
    torch.manual_seed(0)
    logits = torch.zeros(5, requires_grad=True)
    reward = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.2])
    optimizer = torch.optim.Adam([logits], lr=0.1)
    for _ in range(150):
        actions = torch.multinomial(torch.softmax(logits, 0).detach(), 8 * 4, replacement=True)
        logp = torch.log_softmax(logits, 0)[actions].view(-1, 1)
        advantages = rl.leave_one_out_advantages(reward[actions], group_size=8)
        loss = rl.policy_gradient_loss(logp, logp.detach(), advantages, torch.ones_like(logp, dtype=torch.bool))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.softmax(logits, 0)[2] > 0.9


# --- DPO ----------------------------------------------------------------------------------------------------------

def test_dpo_loss_by_hand():
    loss, chosen, rejected = rl.dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]),
                                         torch.tensor([-1.5]), beta=0.1)
    # margin 0.1 * ((-1 + 1.5) - (-2 + 1.5)) = 0.1; loss = log(1 + e^-0.1)
    assert math.isclose(loss.item(), math.log1p(math.exp(-0.1)), rel_tol=1e-6)
    assert math.isclose(chosen.item(), 0.05, rel_tol=1e-6) and math.isclose(rejected.item(), -0.05, rel_tol=1e-6)


def test_dpo_loss_is_log2_when_the_policy_equals_the_reference_and_refuses_bad_beta():
    x = torch.tensor([-3.0, -4.0])
    loss, _, _ = rl.dpo_loss(x, x - 1, x, x - 1, beta=0.5)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)
    for beta in (0, -0.1, float("nan")):
        with pytest.raises(CourseError, match="beta"):
            rl.dpo_loss(x, x, x, x, beta=beta)


def test_a_negative_kl_coefficient_is_refused():
    with pytest.raises(CourseError, match="kl_coef"):
        rl.check_coefficient("kl_coef", -0.01)
    assert rl.check_coefficient("kl_coef", 0) == 0.0


# --- sampling -----------------------------------------------------------------------------------------------------

def test_sample_groups_repeats_prompts_and_ends_stopped_rows_with_end():
    from llmlab.tokenizer import course_tokenizer

    tokenizer = course_tokenizer()
    model = tiny_gpt(vocab=len(tokenizer), block_size=64)
    end = tokenizer.convert_tokens_to_ids(chat.END)
    direction = model.lm_head.weight[end].detach().clone()
    with torch.no_grad():  # raise <|end|>'s logit by about 6 everywhere, so that some rows stop and some do not
        model.transformer.ln_f.bias += 6 * direction / direction.norm() ** 2
    prompts = [[1, 5, 6], [1, 7]]
    rows, completions, truncated = rl.sample_groups(model, tokenizer, prompts, group_size=6, max_new_tokens=5,
                                                    generator=torch.Generator().manual_seed(0))
    assert rows == [prompts[0]] * 6 + [prompts[1]] * 6
    assert 0 < sum(truncated) < len(truncated)
    for completion, cut in zip(completions, truncated):
        assert (completion[-1] == end) != cut and end not in completion[:-1]
        assert len(completion) <= 5 + (not cut)
