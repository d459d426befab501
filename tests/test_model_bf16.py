"""bf16 autocast on CPU: llmcore's linear layers change GEMM layouts (where bf16 is emulated), not results."""

import torch
import torch.nn.functional as F
from torch.testing import assert_close

from llmcore.hf import to_transformers
from llmcore.model import GPT, TransformerConfig
from llmcore.model.linear import TransposedBackwardLinear, cpu_has_native_bf16, linear


def grads_under_bf16(fn, *tensors):
    tensors = [t.detach().clone().requires_grad_() for t in tensors]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fn(*tensors)
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y, [t.grad for t in tensors]


def test_transposed_backward_matches_autocast_f_linear():
    """The emulated-bf16 workaround, checked on any CPU: same bf16 forward, gradients within bf16 rounding."""
    torch.manual_seed(0)
    x, w, b = torch.randn(4, 16, 64), torch.randn(96, 64), torch.randn(96)
    bf16 = lambda *t: TransposedBackwardLinear.apply(*(u.to(torch.bfloat16) for u in t))  # noqa: E731
    y, grads = grads_under_bf16(bf16, x, w, b)
    y_ref, grads_ref = grads_under_bf16(F.linear, x, w, b)
    assert y.dtype == torch.bfloat16 and torch.equal(y, y_ref)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert g.dtype == torch.float32
        assert_close(g, g_ref, rtol=1e-2, atol=1e-2)  # bf16 rounding of the gradient itself


def test_linear_takes_the_workaround_only_where_bf16_is_emulated():
    x, w = torch.randn(4, 64, requires_grad=True), torch.randn(96, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = linear(x, w)
    assert ("TransposedBackwardLinear" in type(y.grad_fn).__name__) == (not cpu_has_native_bf16())
    assert torch.equal(linear(x, w), F.linear(x, w))  # outside autocast: F.linear


def test_gpt_under_bf16_autocast_trains_like_transformers_gpt2():
    torch.manual_seed(0)
    ours = GPT(TransformerConfig(vocab_size=128, d_model=64, n_heads=4, n_layers=2, max_seq_len=32, dropout=0.0))
    theirs = to_transformers(ours)
    batch = torch.randint(128, (2, 32))
    for model in (ours, theirs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(batch, labels=batch).loss.backward()
    ours_grad = ours.decoder.layers[0].attn.qkv.weight.grad
    theirs_grad = theirs.transformer.h[0].attn.c_attn.weight.grad.t()
    assert (ours_grad - theirs_grad).norm() / theirs_grad.norm() < 0.02
    assert_close(ours.tok_emb.weight.grad, theirs.transformer.wte.weight.grad, rtol=0.05, atol=1e-3)
