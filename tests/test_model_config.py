import json
import re

import pytest
import torch

from llmcore.model import BERT, GPT, EncoderDecoder, TransformerConfig, build_model, load, save

pytestmark = pytest.mark.usefixtures("one_thread")


def test_family_defaults_and_overrides():
    t5 = TransformerConfig(family="t5", vocab_size=100, d_model=32, n_heads=4)
    assert (t5.positions, t5.norm, t5.prenorm, t5.bias) == ("relative", "rmsnorm", True, False)
    assert not t5.scale_attention and t5.scale_decoder_outputs
    assert t5.d_head == 8 and t5.d_ff == 128 and t5.n_decoder_layers == t5.n_layers
    llama_like = TransformerConfig(family="gpt", vocab_size=100, d_model=32, n_heads=4, positions="rotary",
                                   norm="rmsnorm", activation="swiglu", bias=False)
    assert (llama_like.positions, llama_like.norm, llama_like.prenorm) == ("rotary", "rmsnorm", True)
    assert TransformerConfig(family="bert", vocab_size=100, d_model=32, n_heads=4, prenorm=True).prenorm is True


@pytest.mark.parametrize("kwargs, message", [
    (dict(d_model=100, n_heads=3), "d_model=100 is not divisible by n_heads=3"),
    (dict(family="llama"), "unknown model family 'llama'"),
    (dict(family="bert", vocab_size=0), "pad_token_id=0 does not fit in vocab_size=0"),
    (dict(family="transformer", vocab_size=2), "eos_token_id=2 does not fit in vocab_size=2"),
    (dict(eos_token_id=8192), "eos_token_id=8192 does not fit in vocab_size=8192"),
    (dict(positions="alibi"), "unknown positions 'alibi'"),
    (dict(activation="tanh"), "unknown activation 'tanh'"),
    (dict(positions="rotary", d_model=30, n_heads=2), "rotary positions need an even d_head"),
    (dict(dropout=1.0), "dropout must be in [0, 1)"),
])
def test_config_errors_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TransformerConfig(**kwargs)


def test_config_json_round_trip(tmp_path):
    cfg = TransformerConfig(family="t5", vocab_size=100, d_model=32, n_heads=4, d_head=16, activation="geglu")
    cfg.save(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text())["d_head"] == 16
    assert TransformerConfig.load(tmp_path / "config.json") == cfg
    with pytest.raises(ValueError, match="unknown TransformerConfig fields"):
        TransformerConfig.from_dict(cfg.to_dict() | {"n_embd": 32})


@pytest.mark.parametrize("family, cls", [("gpt", GPT), ("bert", BERT), ("t5", EncoderDecoder),
                                         ("transformer", EncoderDecoder)])
def test_save_load_round_trip_is_exact(tmp_path, family, cls):
    cfg = TransformerConfig(family=family, vocab_size=64, d_model=32, n_heads=4, n_layers=2, max_seq_len=32)
    model = build_model(cfg)
    assert type(model) is cls
    save(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load(tmp_path)
    assert loaded.config == cfg
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_sequence_longer_than_position_table_is_a_clear_error():
    model = build_model(TransformerConfig(vocab_size=64, d_model=32, n_heads=4, n_layers=1, max_seq_len=8))
    with pytest.raises(ValueError, match="9 positions exceed max_seq_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
