import math

import pytest
import torch

from lightning_llm.models import GPT, GPTConfig, TransformerLM


def tiny_gpt(**overrides) -> GPT:
    kwargs = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)
    kwargs.update(overrides)
    return GPT(**kwargs)


def tiny_transformer_lm() -> TransformerLM:
    return TransformerLM(vocab_size=50, d_model=32, nhead=2, d_hid=64, nlayers=2, block_size=16)


@pytest.mark.parametrize("make", [tiny_gpt, tiny_transformer_lm], ids=["gpt", "transformer_lm"])
def test_changing_a_future_token_leaves_past_logits_unchanged(make):
    torch.manual_seed(0)
    model = make().eval()
    idx = torch.randint(0, 50, (2, 16))
    t = 7
    changed = idx.clone()
    changed[:, t + 1] = (changed[:, t + 1] + 1) % 50
    logits, _ = model(idx)
    logits_changed, _ = model(changed)
    torch.testing.assert_close(logits[:, : t + 1], logits_changed[:, : t + 1])
    assert not torch.allclose(logits[:, t + 1 :], logits_changed[:, t + 1 :])


@pytest.mark.parametrize("make", [tiny_gpt, tiny_transformer_lm], ids=["gpt", "transformer_lm"])
def test_initial_loss_is_close_to_uniform(make):
    torch.manual_seed(0)
    model = make()
    idx, targets = torch.randint(0, 50, (2, 8, 16))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(50)) < 0.15


def test_lm_head_is_tied_to_token_embedding():
    model = tiny_gpt()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.num_params(non_embedding=False) == sum(p.numel() for p in model.parameters())


def test_residual_projections_get_scaled_init():
    torch.manual_seed(0)
    model = tiny_gpt(n_layer=8, n_embd=64)
    proj_std = model.transformer.h[0].attn.c_proj.weight.std().item()
    fc_std = model.transformer.h[0].mlp.c_fc.weight.std().item()
    assert proj_std == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert fc_std == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize("make", [tiny_gpt, tiny_transformer_lm], ids=["gpt", "transformer_lm"])
def test_overfits_one_batch(make):
    torch.manual_seed(0)
    model = make()
    idx = torch.randint(0, 50, (4, 16))
    x, y = idx[:, :-1], idx[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


@pytest.mark.parametrize("make", [tiny_gpt, tiny_transformer_lm], ids=["gpt", "transformer_lm"])
def test_generate_adds_tokens_and_crops_context(make):
    torch.manual_seed(0)
    model = make()
    idx = torch.randint(0, 50, (2, 12))
    out = model.generate(idx, max_new_tokens=30, temperature=1.0, top_k=5, top_p=0.9)
    assert out.shape == (2, 42)  # longer than block_size 16: the context must have been cropped
    assert torch.equal(out[:, :12], idx)


def test_greedy_generation_is_deterministic_and_seeded_sampling_repeats():
    torch.manual_seed(0)
    model = tiny_gpt()
    idx = torch.zeros(1, 1, dtype=torch.long)
    assert torch.equal(model.generate(idx, 10, temperature=0), model.generate(idx, 10, temperature=0))
    a = model.generate(idx, 10, generator=torch.Generator().manual_seed(3))
    b = model.generate(idx, 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_top_k_one_equals_greedy():
    torch.manual_seed(0)
    model = tiny_gpt()
    idx = torch.randint(0, 50, (1, 4))
    assert torch.equal(
        model.generate(idx, 8, temperature=1.0, top_k=1), model.generate(idx, 8, temperature=0)
    )


def test_flops_per_token_follows_palm_formula():
    model = tiny_gpt()
    cfg = model.config
    expected = (
        6 * model.num_params() + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * cfg.block_size
    )
    assert model.flops_per_token() == expected


def test_config_round_trip_and_validation():
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)
    assert GPT.from_config(cfg).config == cfg
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPTConfig(n_embd=10, n_head=3)


def test_too_long_input_is_refused():
    with pytest.raises(ValueError, match="longer than block_size"):
        tiny_gpt()(torch.zeros(1, 17, dtype=torch.long))


def test_init_std_scales_every_weight_and_the_residual_projections_less():
    torch.manual_seed(0)
    model = GPT(vocab_size=512, block_size=16, n_layer=2, n_head=2, n_embd=64, init_std=0.05)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.05, rel=0.05)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.05, rel=0.05)
    assert model.transformer.h[0].mlp.c_proj.weight.std().item() == pytest.approx(0.05 / 2, rel=0.05)
    default = GPT(vocab_size=512, block_size=16, n_layer=2, n_head=2, n_embd=64)
    assert default.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)  # GPT-2's
