"""The decoder's attention: every evaluation order (plain, reassociated few-queries / few-keys, with and without
folding the queries' projection, broadcast image side) equals a direct NumPy multi-head attention, and so does the
plain order with an additive attention bias (PerSAM's attention_similarity)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from sam2_jax.modeling.attention import Sam2Attention


def _numpy_attention(params, query, key, value, heads, mask=None, bias=None):
    def proj(x, name):
        return x @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(params[name]["bias"], np.float64)

    q, k, v = proj(query, "q_proj"), proj(key, "k_proj"), proj(value, "v_proj")
    split = lambda x: x.reshape(*x.shape[:-1], heads, -1).swapaxes(-2, -3)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    logits = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = np.where(mask[..., None, None, :], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    out = (w / w.sum(-1, keepdims=True)) @ v
    out = out.swapaxes(-2, -3).reshape(*out.shape[:-3], out.shape[-2], -1)
    return proj(out, "o_proj")


@pytest.mark.parametrize(
    "case",
    [
        "few_queries",  # token -> image, per-prompt image side: reassociated
        "few_queries_shared_image",  # token -> image, one image side for 4 prompts: plain projections, once
        "few_keys",  # image -> token, per-prompt image side: queries' projection folded
        "few_keys_shared_image",  # image -> token, shared image side: output projection folded only
        "many_tokens",  # 40 tokens: heads * tokens >= internal width, plain
        "plain",  # reassociate=False: the reference order whatever the shapes
        "plain_with_bias",  # an additive bias on the logits (always the plain order)
    ],
)
def test_attention_orders_match_numpy(case):
    rng = np.random.default_rng(0)
    c, heads, n_img = 32, 4, 96  # internal width 16 with downsample 2: folding pays below 4 tokens per head
    attn = Sam2Attention(c, heads, downsample_rate=2, reassociate=not case.startswith("plain"))
    n_tok = 40 if case == "many_tokens" else 3
    tokens = rng.standard_normal((1, 4, n_tok, c)).astype(np.float32)
    image = rng.standard_normal((1, 1 if "shared" in case else 4, n_img, c)).astype(np.float32)
    mask = rng.random((1, 4, n_tok)) < 0.7
    mask[..., 0] = True
    if case.startswith("few_queries") or case.startswith("plain"):
        args, mask = (tokens, image, image * 0.5), None
    else:
        args = (image, tokens, tokens * 0.5)
    params = attn.init(jax.random.PRNGKey(1), *args)["params"]
    params = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32), params)
    bias = rng.standard_normal((1, 4, heads, n_tok, n_img)).astype(np.float32) if case.endswith("bias") else None
    out = np.asarray(attn.apply({"params": params}, *args, mask, bias=bias))
    ref = _numpy_attention(params, *(np.asarray(a, np.float64) for a in args), heads, mask, bias)
    np.testing.assert_allclose(out, np.broadcast_to(ref, out.shape), rtol=2e-5, atol=2e-5)
