"""Causality and padding: the two masks every Transformer must get exactly right."""

import pytest
import torch
from torch.testing import assert_close

from llmcore.model import TransformerConfig, build_model

V, T = 64, 12
POSITIONS = ["learned", "sinusoidal", "rotary", "relative"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(family, **overrides):
    torch.manual_seed(0)
    cfg = TransformerConfig(family=family, vocab_size=V, d_model=32, n_heads=4, n_layers=2, max_seq_len=64,
                            dropout=0.0, **overrides)
    return build_model(cfg).eval()


def decoder_logits(model, ids, src):
    """Causal outputs: GPT logits, or an encoder-decoder's decoder logits for a fixed source."""
    if model.config.architecture == "decoder":
        return model(ids).logits
    return model.decode(ids, model.encode(src))


@pytest.mark.parametrize("family, positions", [("gpt", p) for p in POSITIONS] + [("t5", None), ("transformer", None)])
def test_changing_a_future_token_never_changes_earlier_outputs(family, positions):
    model = tiny(family, **({"positions": positions} if positions else {}))
    ids, src = torch.randint(4, V, (2, T)), torch.randint(4, V, (2, 7))
    with torch.no_grad():
        reference = decoder_logits(model, ids, src)
        for t in range(T - 1):
            changed = ids.clone()
            changed[:, t + 1:] = torch.randint(4, V, (2, T - t - 1))
            logits = decoder_logits(model, changed, src)
            assert_close(logits[:, :t + 1], reference[:, :t + 1], rtol=0, atol=1e-6)
            assert (logits[:, t + 1:] - reference[:, t + 1:]).abs().max() > 1e-3  # the change is visible later


def test_future_tokens_get_no_gradient():
    model = tiny("gpt")
    emb = model.tok_emb(torch.randint(4, V, (1, T))).detach().requires_grad_()
    model.logits(model.decoder(emb))[0, 5].sum().backward()
    assert emb.grad[0, 6:].abs().max() == 0 and emb.grad[0, :6].abs().min() > 0


@pytest.mark.parametrize("positions", POSITIONS)
def test_left_padding_never_changes_gpt_outputs(positions):
    model = tiny("gpt", positions=positions)
    ids = torch.randint(4, V, (1, 8))
    padded = torch.cat((torch.randint(4, V, (1, 5)), ids), dim=1)  # pad tokens may be anything
    mask = torch.cat((torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 8, dtype=torch.long)), dim=1)
    with torch.no_grad():
        assert_close(model(padded, attention_mask=mask).logits[:, 5:], model(ids).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("positions", POSITIONS)
def test_right_padding_never_changes_bert_outputs(positions):
    model = tiny("bert", positions=positions)
    ids, segments = torch.randint(4, V, (1, 8)), torch.tensor([[0] * 4 + [1] * 4])
    padded = torch.cat((ids, torch.randint(4, V, (1, 4))), dim=1)
    mask = torch.tensor([[1] * 8 + [0] * 4])
    with torch.no_grad():
        alone = model(ids, token_type_ids=segments)
        batched = model(padded, attention_mask=mask, token_type_ids=torch.cat((segments, segments[:, :4]), dim=1))
    assert_close(batched.hidden[:, :8], alone.hidden, rtol=0, atol=1e-5)
    assert_close(batched.logits[:, :8], alone.logits, rtol=0, atol=1e-5)
    assert_close(batched.nsp_logits, alone.nsp_logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["t5", "transformer"])
def test_source_padding_never_changes_encoder_decoder_outputs(family):
    model = tiny(family)
    src, tgt = torch.randint(4, V, (1, 6)), torch.randint(4, V, (1, 5))
    padded = torch.cat((src, torch.randint(4, V, (1, 3))), dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    with torch.no_grad():
        alone = model(src, decoder_input_ids=tgt)
        batched = model(padded, attention_mask=mask, decoder_input_ids=tgt)
    assert_close(batched.hidden[:, :6], alone.hidden, rtol=0, atol=1e-5)
    assert_close(batched.logits, alone.logits, rtol=0, atol=1e-5)


def test_batch_rows_are_independent():
    """Rows of different lengths in one padded batch give what each gives alone."""
    model = tiny("t5")
    a, b = torch.randint(4, V, (1, 9)), torch.randint(4, V, (1, 4))
    batch = torch.cat((a, torch.cat((b, torch.zeros(1, 5, dtype=torch.long)), dim=1)))
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5])
    tgt = torch.randint(4, V, (2, 3))
    with torch.no_grad():
        together = model(batch, attention_mask=mask, decoder_input_ids=tgt).logits
        assert_close(together[1:], model(b, decoder_input_ids=tgt[1:]).logits, rtol=0, atol=1e-5)
        assert_close(together[:1], model(a, decoder_input_ids=tgt[:1]).logits, rtol=0, atol=1e-5)
