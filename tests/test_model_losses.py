import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from llmcore.model import IGNORE, TransformerConfig, build_model, causal_lm_loss, cross_entropy, losses, seq2seq_loss


def test_causal_lm_loss_scores_position_t_on_token_t_plus_1_and_skips_ignored():
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(7, (2, 5))
    labels[1, 3] = IGNORE
    expected = [-logits[b, t].log_softmax(-1)[labels[b, t + 1]] for b in range(2) for t in range(4)
                if labels[b, t + 1] != IGNORE]
    assert_close(causal_lm_loss(logits, labels), torch.stack(expected).mean())
    changed = logits.clone()
    changed[1, 2] += 100 * torch.randn(7)  # predicts the ignored label
    changed[:, -1] += 100 * torch.randn(7)  # the last position predicts nothing
    assert_close(causal_lm_loss(changed, labels), causal_lm_loss(logits, labels))


def test_gpt_loss_projects_only_counted_positions_and_equals_the_full_logits_loss(monkeypatch):
    model = build_model(TransformerConfig(family="gpt", vocab_size=40, d_model=32, n_heads=4, n_layers=1, dropout=0.0))
    ids = torch.randint(40, (2, 9))
    labels = ids.clone()
    labels[:, :4] = IGNORE  # a prompt
    labels[1, 7:] = IGNORE  # padding
    projected = []
    fused = losses.linear_cross_entropy
    monkeypatch.setattr(losses, "linear_cross_entropy", lambda h, *a: projected.append(h.shape[0]) or fused(h, *a))
    loss = model(ids, labels=labels).loss
    assert projected == [5 + 3]  # labels 4..8 of row 0 and 4..6 of row 1, each predicted by the position before
    assert_close(loss, causal_lm_loss(model.logits(model(ids).hidden), labels))


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_linear_cross_entropy_equals_projecting_then_cross_entropy(monkeypatch, bf16):
    """Loss and both gradients, over several blocks of rows (and a last, shorter one)."""
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 7 * 50)  # 7 rows a block
    torch.manual_seed(0)
    hidden, weight, targets = torch.randn(30, 16), torch.randn(50, 16), torch.randint(50, (30,))
    results = []
    for fn in (losses.linear_cross_entropy, lambda h, w, t: cross_entropy(F.linear(h, w), t)):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = fn(h, w, targets)
        (loss * 3).backward()  # the incoming gradient scales both
        results.append((loss, h.grad, w.grad))
    (loss, grad_h, grad_w), (ref, ref_h, ref_w) = results
    # fp32: only summation order differs; bf16: both round the same bf16 products, the blocks sum in fp32
    tol = dict(rtol=2e-2, atol=2e-3) if bf16 else dict(rtol=1e-5, atol=1e-6)
    assert loss.dtype == torch.float32 and grad_h.dtype == grad_w.dtype == torch.float32
    assert_close(loss, ref.float(), **tol)
    assert_close(grad_h, ref_h, **tol)
    assert_close(grad_w, ref_w, **tol)
    with torch.no_grad():
        assert_close(losses.linear_cross_entropy(hidden, weight, targets), cross_entropy(hidden @ weight.t(), targets))


def test_compiled_gpt_loss_has_no_graph_break_and_the_same_value():
    model = build_model(TransformerConfig(family="gpt", vocab_size=40, d_model=32, n_heads=4, n_layers=1, dropout=0.0))
    ids = torch.randint(40, (2, 9))
    labels = ids.masked_fill(torch.arange(9) < 4, IGNORE)
    explained = torch._dynamo.explain(model)(ids, labels=labels)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert_close(torch.compile(model, backend="eager")(ids, labels=labels).loss, model(ids, labels=labels).loss)


def test_label_smoothing_mixes_in_the_uniform_distribution():
    logits, labels = torch.randn(3, 4, 11), torch.randint(11, (3, 4))
    labels[0, 0] = IGNORE
    eps, keep = 0.1, labels != IGNORE
    logp = logits.log_softmax(-1)[keep]
    nll = -logp.gather(-1, labels[keep][:, None]).squeeze(-1)
    expected = ((1 - eps) * nll - eps * logp.mean(-1)).mean()
    assert_close(seq2seq_loss(logits, labels, label_smoothing=eps), expected)
    assert_close(cross_entropy(torch.zeros(2, 11), torch.tensor([3, 4])), torch.tensor(math.log(11)))


def test_bert_loss_is_mlm_plus_nsp():
    model = build_model(TransformerConfig(family="bert", vocab_size=40, d_model=32, n_heads=4, n_layers=1))
    ids = torch.randint(4, 40, (2, 8))
    labels = torch.full_like(ids, IGNORE)
    labels[:, 2] = ids[:, 2]
    nsp = torch.tensor([0, 1])
    out = model(ids, labels=labels, next_sentence_label=nsp)
    assert_close(out.loss, cross_entropy(out.logits, labels) + cross_entropy(out.nsp_logits, nsp))


def test_encoder_decoder_teacher_forcing_shifts_labels_right():
    model = build_model(TransformerConfig(family="t5", vocab_size=40, d_model=32, n_heads=4, n_layers=1, dropout=0.0))
    labels = torch.tensor([[5, 6, 7, IGNORE], [8, 9, IGNORE, IGNORE]])
    assert model.shift_right(labels).tolist() == [[0, 5, 6, 7], [0, 8, 9, 0]]  # start = pad = 0 in T5
    src = torch.randint(4, 40, (2, 6))
    assert_close(model(src, labels=labels).loss,
                 model(src, decoder_input_ids=model.shift_right(labels), labels=labels).loss)
