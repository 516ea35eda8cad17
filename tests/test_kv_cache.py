"""GPT.generate with a KV cache: the same tokens as running the whole context while the sequence fits in
block_size, and past it the documented policy (refill the cache with the last block_size // 2 tokens)."""

import pytest
import torch

from lightning_llm.models import GPT, TransformerLM
from lightning_llm.models.sampling import KVCache


def tiny_gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    kwargs = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)
    kwargs.update(overrides)
    return GPT(**kwargs)


def new_caches(model: GPT) -> list[KVCache]:
    return [KVCache(model.block_size) for _ in model.transformer.h]


def refill_policy_reference(model: GPT, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """The past-block policy without a cache, slowly: the context starts where the last refill started it."""
    block_size, keep = model.block_size, max(1, model.block_size // 2)
    start = max(0, idx.size(1) - block_size)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if idx.size(1) - start > block_size:  # the cache would be full: it restarts with the last half
                start = idx.size(1) - keep
            logits, _ = model(idx[:, start:])
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize("bias", [True, False])
def test_greedy_with_cache_equals_without_within_the_block(bias):
    model = tiny_gpt(bias=bias)
    idx = torch.randint(0, 50, (2, 5))
    cached = model.generate(idx, 11, temperature=0)  # 16 tokens: exactly block_size
    assert cached.shape == (2, 16)
    assert torch.equal(cached, model.generate(idx, 11, temperature=0, kv_cache=False))


def test_sampling_with_a_seeded_generator_makes_the_same_draws_with_and_without_cache():
    model = tiny_gpt()
    idx = torch.randint(0, 50, (2, 4))
    options = dict(temperature=0.9, top_k=20, top_p=0.95)
    cached = model.generate(idx, 12, **options, generator=torch.Generator().manual_seed(7))
    uncached = model.generate(idx, 12, **options, generator=torch.Generator().manual_seed(7), kv_cache=False)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, model.generate(idx, 12, temperature=0))  # it did sample


def test_dropout_is_off_while_generating_and_the_training_mode_comes_back():
    model = tiny_gpt(dropout=0.5).train()
    idx = torch.randint(0, 50, (2, 3))
    assert torch.equal(
        model.generate(idx, 10, temperature=0), model.generate(idx, 10, temperature=0, kv_cache=False)
    )
    assert model.training


def test_prefill_steps_and_chunks_give_the_logits_of_the_full_forward():
    model = tiny_gpt().eval()
    idx = torch.randint(0, 50, (2, 12))
    full, _ = model(idx)  # (B, T, V)
    caches = new_caches(model)
    with torch.no_grad():
        prefill, _ = model(idx[:, :5], kv_caches=caches)
        step, _ = model(idx[:, 5:6], kv_caches=caches)
        chunk, _ = model(idx[:, 6:], kv_caches=caches)  # several tokens after cached ones: a masked chunk
    assert prefill.shape == (2, 1, 50)
    torch.testing.assert_close(prefill[:, 0], full[:, 4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[:, 0], full[:, 5], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunk[:, 0], full[:, 11], atol=1e-5, rtol=1e-5)
    assert caches[0].length == 12


@pytest.mark.parametrize("block_size", [16, 7])
def test_past_block_size_the_cache_is_refilled_with_the_last_half_and_positions_stay_inside(block_size):
    model = tiny_gpt(block_size=block_size).eval()
    passes = []  # the positions each forward pass embeds
    model.transformer.wpe.register_forward_hook(lambda module, args, out: passes.append(args[0].tolist()))
    idx = torch.randint(0, 50, (2, 5))
    out = model.generate(idx, 40, temperature=0)
    assert out.shape == (2, 45)
    assert max(max(p) for p in passes) == block_size - 1
    assert len(passes) == 40  # the prefill, then one pass per new token but the last
    refills = [p for p in passes[1:] if len(p) > 1]
    assert refills and all(p == list(range(block_size // 2)) for p in refills)
    assert torch.equal(out, refill_policy_reference(model, idx, 40))
    # until the sequence outgrows the block, the tokens are those of the full-context path
    fits = block_size + 1
    assert torch.equal(out[:, :fits], model.generate(idx, 40, temperature=0, kv_cache=False)[:, :fits])


def test_a_prompt_longer_than_the_block_is_cropped_to_its_last_block_size_tokens():
    model = tiny_gpt(block_size=8).eval()
    idx = torch.randint(0, 50, (1, 20))
    out = model.generate(idx, 6, temperature=0)
    assert torch.equal(out[:, :20], idx)
    assert torch.equal(out, refill_policy_reference(model, idx, 6))


def test_no_new_tokens_returns_the_prompt():
    model = tiny_gpt()
    idx = torch.randint(0, 50, (1, 4))
    assert torch.equal(model.generate(idx, 0), idx)


def test_transformer_lm_still_generates_without_a_cache():
    torch.manual_seed(0)
    model = TransformerLM(vocab_size=50, d_model=32, nhead=2, d_hid=64, nlayers=2, block_size=16)
    idx = torch.randint(0, 50, (2, 12))
    out = model.generate(
        idx, 10, temperature=1.0, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(1)
    )
    assert out.shape == (2, 22)
    assert torch.equal(out[:, :12], idx)


@pytest.mark.parametrize("kv_cache", [True, False])
@pytest.mark.parametrize(
    ("options", "named"),
    [
        (dict(top_k=0), "top_k"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=0.0), "top_p"),
        (dict(temperature=-1.0), "temperature"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
    ],
)
def test_bad_sampling_options_are_refused_by_name(kv_cache, options, named):
    model = tiny_gpt()
    kwargs = {"max_new_tokens": 3, **options}
    with pytest.raises(ValueError, match=named):
        model.generate(torch.zeros(1, 2, dtype=torch.long), kv_cache=kv_cache, **kwargs)


def test_cache_misuse_ends_in_a_clear_error():
    model = tiny_gpt(block_size=8).eval()
    caches = new_caches(model)
    with torch.no_grad():
        model(torch.zeros(1, 6, dtype=torch.long), kv_caches=caches)
        with pytest.raises(ValueError, match="longer than block_size 8"):
            model(torch.zeros(1, 3, dtype=torch.long), kv_caches=caches)
        with pytest.raises(ValueError, match="without them"):
            model(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long), kv_caches=caches)
    cache = KVCache(4)
    cache.append(torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 3, 8))
    with pytest.raises(ValueError, match="clear"):
        cache.append(torch.zeros(1, 2, 2, 8), torch.zeros(1, 2, 2, 8))
    cache.clear()
    keys, _ = cache.append(torch.ones(1, 2, 2, 8), torch.ones(1, 2, 2, 8))
    assert keys.shape == (1, 2, 2, 8)
