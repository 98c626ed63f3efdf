"""The learner's token logprobs (amray/policy.py, amray/microbatch.py) against the plain
computation they replace: the model over each row alone, full-vocabulary logits at every
position, log-softmax, then the trained positions picked out.

Packed rows, logits only at trained positions and the chunked vocabulary projection must all give
those values and their gradients; the chunks must not keep [N, vocab] logits for backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from amray.batch import TrainBatch
from amray.memory import SavedActivations
from amray.microbatch import empty_micro_batch, micro_batch, policy_inputs, prefixes
from amray.models import build_tiny_model
from amray.policy import SDPA_VARLEN, Policy, chunked_token_logprobs, compute_dtype, register_sdpa_varlen

LENGTHS = [37, 5, 60, 18, 2, 41]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("logprobs") / "tiny")


@pytest.fixture(scope="module")
def batch():
    """Mixed lengths; a third of each row is prompt (no loss), GRPO-style."""
    rng = np.random.default_rng(0)
    tokens = [rng.integers(3, 300, n) for n in LENGTHS]
    masks = [np.r_[np.zeros(n // 3), np.ones(n - n // 3)].astype(np.float32) for n in LENGTHS]
    return TrainBatch(tokens, masks, rng.normal(size=len(LENGTHS)).astype(np.float32))


def load(model_dir, attention: str) -> torch.nn.Module:
    register_sdpa_varlen()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attention)


def per_row_reference(lm: torch.nn.Module, batch: TrainBatch) -> list[torch.Tensor]:
    """Each row alone through the model: log-softmax of all logits, then the trained positions."""
    out = []
    for tokens, mask in zip(batch.tokens, batch.loss_mask):
        t = torch.as_tensor(tokens).unsqueeze(0)
        logp = torch.log_softmax(lm(input_ids=t).logits[0, :-1].float(), -1).gather(-1, t[0, 1:, None]).squeeze(-1)
        out.append(logp[torch.as_tensor(mask[1:]) != 0])
    return out


@pytest.fixture(scope="module")
def policy(model_dir):
    return Policy(load(model_dir, SDPA_VARLEN), logprob_chunk=7)


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
def test_micro_batch_logprobs_and_gradients_equal_each_row_alone(model_dir, batch, policy, packed):
    reference = load(model_dir, "sdpa")
    rows = list(range(len(batch)))
    mb = micro_batch(batch, rows, packed, torch.device("cpu"))
    if packed:
        assert mb["tokens"].shape == (1, sum(LENGTHS))  # one row, no padding
        assert mb["position_ids"][0, LENGTHS[0]] == 0  # positions restart at every row
    policy.zero_grad()
    logp = policy(**policy_inputs(mb))
    expected = per_row_reference(reference, batch)
    torch.testing.assert_close(logp, torch.cat(expected), atol=2e-5, rtol=0)

    weights = torch.linspace(-1, 1, len(logp))
    (logp * weights).sum().backward()
    (torch.cat(expected) * weights).sum().backward()
    mine = dict(policy.lm.named_parameters())
    for name, p in reference.named_parameters():
        torch.testing.assert_close(mine[name].grad, p.grad, atol=2e-5, rtol=1e-4, msg=name)


def test_vocabulary_projection_runs_only_at_trained_positions_in_chunks(batch, policy):
    seen = []
    hook = policy.lm.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        with torch.no_grad():
            policy(**policy_inputs(micro_batch(batch, list(range(len(batch))), True, torch.device("cpu"))))
    finally:
        hook.remove()
    trained = sum(int((m[1:] != 0).sum()) for m in batch.loss_mask)
    assert sum(seen) == trained < sum(LENGTHS) - len(LENGTHS)  # prompt positions get no logits
    assert max(seen) <= policy.logprob_chunk


def test_chunked_logprobs_equal_unchunked_in_the_model(model_dir, batch):
    mb = micro_batch(batch, list(range(len(batch))), True, torch.device("cpu"))
    results = {}
    for chunk in (4, 10**6):
        policy = Policy(load(model_dir, SDPA_VARLEN), logprob_chunk=chunk)
        logp = policy(**policy_inputs(mb))
        logp.sum().backward()
        results[chunk] = (logp.detach(), policy.lm.get_output_embeddings().weight.grad.clone())
    torch.testing.assert_close(results[4][0], results[10**6][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(results[4][1], results[10**6][1], atol=1e-5, rtol=1e-4)


def test_chunks_keep_no_logits_for_backward():
    """A long sequence's [N, vocab] float32 logits never wait for backward: each chunk's are
    recomputed there. Values and gradients equal the one-shot log-softmax."""
    torch.manual_seed(0)
    n, hidden, vocab = 600, 32, 4000
    head = torch.nn.Linear(hidden, vocab, bias=False)
    h = torch.randn(n, hidden, requires_grad=True)
    targets = torch.randint(0, vocab, (n,))
    tally = SavedActivations()
    with tally:
        logp = chunked_token_logprobs(h, head, targets, 0.7, chunk=64)
    logp.sum().backward()
    grads = (h.grad.clone(), head.weight.grad.clone())
    assert tally.peak < n * vocab * 4 / 10
    h.grad, head.weight.grad = None, None
    expected = torch.log_softmax(head(h) / 0.7, -1).gather(-1, targets[:, None]).squeeze(-1)
    expected.sum().backward()
    torch.testing.assert_close(logp, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(grads, (h.grad, head.weight.grad), atol=1e-5, rtol=1e-4)


def test_a_micro_batch_with_nothing_to_train_still_reaches_every_parameter(policy):
    """FSDP runs its collectives per backward: an empty micro-batch must touch the whole graph."""
    policy.zero_grad(set_to_none=True)
    logp = policy(**policy_inputs(empty_micro_batch(torch.device("cpu"))))
    assert logp.shape == (0,)
    logp.sum().backward()
    assert all(p.grad is not None and not p.grad.any() for p in policy.parameters())


def test_trainer_dtype_auto_follows_the_hardware():
    cpu = torch.device("cpu")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert compute_dtype("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    assert compute_dtype("float32", cpu) == torch.float32 and compute_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="trainer.dtype='fp8'"):
        compute_dtype("fp8", cpu)


def test_gradient_checkpointing_gives_the_same_gradients(model_dir, batch):
    """Packed attention bounds and the chunked head survive the layers' recomputation in backward."""
    mb = micro_batch(batch, list(range(len(batch))), True, torch.device("cpu"))
    grads = []
    for checkpointing in (False, True):
        policy = Policy(load(model_dir, SDPA_VARLEN), logprob_chunk=7).train()
        if checkpointing:
            policy.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        (policy(**policy_inputs(mb)) * mb["adv"]).sum().backward()
        grads.append([p.grad for p in policy.parameters()])
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(recomputed, plain, atol=1e-5, rtol=1e-4)


def test_torch_varlen_wrapper_lays_out_packed_heads_like_per_sequence_sdpa(monkeypatch):
    """The GPU path (PyTorch's varlen flash kernel, CUDA-only) through its wrapper, with the kernel
    replaced by a per-sequence causal reference on the CPU: the wrapper's layout ([1, H, L, d] in,
    [1, L, H, d] out), grouped K/V heads, the causal flag and the sequence bounds must give what
    `sdpa_varlen` gives on the same packed row."""
    import torch.nn.attention.varlen as varlen_mod

    from amray import policy as policy_mod

    calls = []

    def reference(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), is_causal=False,
                  enable_gqa=False, **_):
        assert is_causal or tuple(window_size) == (-1, 0), "the wrapper must ask for causal attention"
        assert cu_q.dtype == torch.int32 and max_q == int((cu_q[1:] - cu_q[:-1]).max())
        calls.append(cu_q.tolist())
        outs = [torch.nn.functional.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1), is_causal=True, scale=scale,
            enable_gqa=k.shape[1] != q.shape[1]).transpose(0, 1) for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist())]
        return torch.cat(outs)

    monkeypatch.setattr(varlen_mod, "varlen_attn", reference)
    policy_mod.torch_varlen.cache_clear()
    try:
        run = policy_mod.torch_varlen()
        torch.manual_seed(0)
        lengths = [5, 11, 1, 7]
        q, k, v = torch.randn(1, 6, 24, 16), torch.randn(1, 2, 24, 16), torch.randn(1, 2, 24, 16)
        cu = torch.tensor(np.cumsum([0, *lengths]), dtype=torch.int64)
        got = run(q, k, v, cu, 0, 0.25)
        want, _ = policy_mod.sdpa_varlen(torch.nn.Module(), q, k, v, None, scaling=0.25, cu_seq_lens_q=cu)
        assert calls == [[0, 5, 16, 17, 24]]
        assert got.shape == want.shape == (1, 24, 6, 16)
        torch.testing.assert_close(got, want)
    finally:
        policy_mod.torch_varlen.cache_clear()


@pytest.fixture(scope="module")
def groups():
    """GRPO-like rows: three prompts with 4, 3 and 2 samples (one of them 1 token), a prompt
    with one sample, and an SFT-like row whose loss mask has a gap; rows of a group interleaved
    with other groups' rows, as a rank may receive them."""
    rng = np.random.default_rng(1)
    rows, masks = [], []
    for p_len, rests in [(9, [6, 13, 1, 8]), (17, [4, 20, 11]), (5, [30, 2]), (12, [7])]:
        prompt = rng.integers(3, 300, p_len)
        for r in rests:
            rows.append(np.r_[prompt, rng.integers(3, 300, r)])
            masks.append(np.r_[np.zeros(p_len), np.ones(r)].astype(np.float32))
    rows.append(rng.integers(3, 300, 25))
    masks.append(np.r_[np.zeros(6), np.ones(5), np.zeros(4), np.ones(10)].astype(np.float32))
    order = rng.permutation(len(rows))
    return TrainBatch([rows[i] for i in order], [masks[i] for i in order],
                      rng.normal(size=len(rows)).astype(np.float32))


def test_shared_prompt_rows_give_each_rows_logprobs_and_gradients(model_dir, groups):
    """Each prompt laid out once with its samples' responses after it (attention: the prompt to
    itself, each response to the prompt and its own past) must give the logprobs and gradients of
    the rows one by one. In float64 (the model's norms still round through float32, so gradients
    summed over a shared prompt once instead of per row differ in float32's last digits); a wrong
    mask, position or target moves logprobs by orders of magnitude more."""
    rows = list(range(len(groups)))
    shared = micro_batch(groups, rows, True, torch.device("cpu"), prefixes(groups))
    alone = micro_batch(groups, rows, True, torch.device("cpu"))
    total = sum(len(t) for t in groups.tokens)
    assert alone["tokens"].shape == (1, total) and "segments" not in alone
    # 4 + 3 + 2 samples share 3 prompts of 9, 17 and 5 tokens: 3*9 + 2*17 + 5 tokens fewer
    assert shared["tokens"].shape == (1, total - (3 * 9 + 2 * 17 + 5))
    assert sorted(len(rests) for _, _, rests in shared["segments"]) == [0, 0, 2, 3, 4]
    assert torch.equal(shared["targets"], alone["targets"]) and torch.equal(shared["adv"], alone["adv"])
    results = []
    for mb in (alone, shared):
        policy = Policy(load(model_dir, SDPA_VARLEN).double(), logprob_chunk=7)
        logp = policy(**policy_inputs(mb))
        (logp * mb["adv"].double()).sum().backward()
        results.append((logp.detach(), {n: p.grad for n, p in policy.lm.named_parameters()}))
    (logp_alone, grads_alone), (logp_shared, grads_shared) = results
    torch.testing.assert_close(logp_shared, logp_alone, atol=1e-6, rtol=0)
    for name, g in grads_alone.items():
        torch.testing.assert_close(grads_shared[name], g, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_a_response_never_sees_another_samples_tokens(model_dir, groups):
    """Changing one sample's response tokens moves only that sample's logprobs (and none of the
    prompt's): the shared layout must not let responses attend across each other."""
    rows = list(range(len(groups)))
    policy = Policy(load(model_dir, SDPA_VARLEN).double(), logprob_chunk=64)
    prompt_of = [int(np.flatnonzero(m)[0]) for m in groups.loss_mask]
    victim = next(i for i in rows if len(groups.tokens[i]) - prompt_of[i] == 20)
    changed = TrainBatch([t.copy() for t in groups.tokens], groups.loss_mask, groups.advantages)
    changed.tokens[victim][prompt_of[victim] + 3:] = 1
    before, after = (policy(**policy_inputs(micro_batch(b, rows, True, torch.device("cpu"), prefixes(b))))
                     .detach() for b in (groups, changed))
    owner = np.concatenate([np.full(int((m[1:] != 0).sum()), i) for i, m in zip(rows, groups.loss_mask)])
    moved = set(owner[(before - after).abs().numpy() > 1e-12].tolist())
    assert moved == {victim}


def test_shared_prompt_plans_keep_a_prompts_rows_together():
    """The plans cost a row sharing a prompt only its response where the prompt is already there:
    micro-batches of a group fit more rows, and ranks split groups rather than scatter prompts."""
    from amray.microbatch import balance, pack_plan

    prompts = [np.arange(40) + 10 * g for g in range(4)]
    tokens = [np.r_[p, np.arange(10 + 3 * s)] for p in prompts for s in range(4)]
    masks = [np.r_[np.zeros(40), np.ones(len(t) - 40)].astype(np.float32) for t in tokens]
    batch = TrainBatch(tokens, masks)
    lengths = [len(t) for t in tokens]
    shared = prefixes(batch)
    assert shared[0] == shared[3] != shared[4] and shared[0][0] == 40

    def cost(mb):  # tokens of a micro-batch laid out with shared prompts
        return sum(40 + sum(lengths[i] - 40 for i in mb if i // 4 == g) for g in {i // 4 for i in mb})

    plan = pack_plan(lengths, 200, shared)
    assert sorted(i for mb in plan for i in mb) == list(range(16))
    assert all(cost(mb) <= 200 for mb in plan)
    assert len(plan) == 2 < len(pack_plan(lengths, 200)) == 5  # two whole groups (98 tokens each) per micro-batch
    parts = balance(lengths, 2, shared)
    assert sorted(parts[0] + parts[1]) == list(range(16))
    assert all({i // 4 for i in part} == {0, 1, 2, 3} for part in parts)  # each rank holds half of each group
    assert abs(cost(parts[0]) - cost(parts[1])) <= max(lengths)
    assert balance(lengths, 2) == [sorted(p, key=lambda i: -lengths[i]) for p in balance(lengths, 2)]


def test_prompts_are_shared_only_where_the_layout_runs_well():
    """CPU + amray's packed SDPA: shared. A GPU (its varlen kernel runs whole micro-batches at
    once), flash-attn, padded rows or the key turned off: rows one by one."""
    from amray.config import TrainerConfig
    from amray.learner import shares_prompts

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert shares_prompts(TrainerConfig(), SDPA_VARLEN, cpu)
    assert not shares_prompts(TrainerConfig(), SDPA_VARLEN, gpu)
    assert not shares_prompts(TrainerConfig(), "flash_attention_2", cpu)
    assert not shares_prompts(TrainerConfig(packing=False), SDPA_VARLEN, cpu)
    assert not shares_prompts(TrainerConfig(share_prompts=False), SDPA_VARLEN, cpu)
