"""GPT.attention_maps: the probabilities the model really applies, causal, one map per block and head."""

import torch

from lightning_llm.models import GPT


def test_attention_maps_are_causal_distributions_that_reproduce_the_attention_output():
    torch.manual_seed(0)
    model = GPT(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=16).eval()
    idx = torch.randint(0, 40, (3, 12))  # (B, T)
    maps = model.attention_maps(idx)
    assert [tuple(m.shape) for m in maps] == [(3, 2, 12, 12)] * 2
    for probabilities in maps:
        torch.testing.assert_close(probabilities.sum(-1), torch.ones(3, 2, 12))
        assert torch.all(probabilities.triu(diagonal=1) == 0)  # no position looks at a later one
    # Weighting the values with the first block's map gives exactly that block's attention output.
    block = model.transformer.h[0]
    x = block.ln_1(model.transformer.wte(idx) + model.transformer.wpe(torch.arange(12)))  # (B, T, C)
    _, _, v = block.attn._heads(x)  # (B, nh, T, hs)
    mixed = (maps[0] @ v).transpose(1, 2).reshape(3, 12, 16)  # (B, T, C)
    with torch.no_grad():
        torch.testing.assert_close(block.attn.c_proj(mixed), block.attn(x), atol=1e-5, rtol=1e-5)
