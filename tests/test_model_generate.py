import itertools

import pytest
import torch
import transformers

from llmcore.generate import ban_repeats, generate, sample
from llmcore.hf import from_transformers, to_transformers
from llmcore.model import TransformerConfig, build_model

V, PAD, NEVER = 48, 0, -1  # eos_token_id=-1: no token ends a row


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(family, **overrides):
    torch.manual_seed(0)
    cfg = TransformerConfig(family=family, vocab_size=V, d_model=32, n_heads=4, n_layers=2, max_seq_len=64,
                            dropout=0.0, pad_token_id=PAD, init_std=0.5, **overrides)  # 0.5: varied outputs
    return build_model(cfg).eval()


def prompts():
    """Three prompts of lengths 7, 5, 3, left-padded."""
    torch.manual_seed(1)
    ids = torch.randint(3, V, (3, 7))
    mask = torch.tensor([[1] * 7, [0] * 2 + [1] * 5, [0] * 4 + [1] * 3])
    return ids.masked_fill(mask == 0, PAD), mask


def with_eos(model, ids, mask):
    """Greedy output without EOS, and a token to use as EOS: one its rows first emit at different steps
    (or never), so that with it rows end at different lengths."""
    free = generate(model, ids, mask, 12, eos_token_id=NEVER)
    generated = free[:, ids.shape[1] if model.config.architecture == "decoder" else 1:].tolist()
    first = {t: [row.index(t) if t in row else len(row) for row in generated] for t in set(sum(generated, []))}
    return free, min((t for t in first if len(set(first[t])) > 1), key=lambda t: min(first[t]))


def until_eos(seq, start, eos):
    """Generated tokens after the first EOS replaced by padding (transformers pads beams with EOS)."""
    seq = seq.clone()
    for row in seq:
        hits = (row[start:] == eos).nonzero()
        if len(hits):
            row[start + hits[0, 0] + 1:] = PAD
    return seq


FAMILIES = ["gpt", "gpt-rotary", "t5", "transformer"]


def build(name):
    family, _, positions = name.partition("-")
    return tiny(family, **({"positions": positions} if positions else {}))


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("mode", [dict(), dict(num_beams=3), dict(num_beams=4, length_penalty=0.6),
                                  dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9)])
def test_kv_cache_gives_exactly_the_uncached_tokens(name, mode):
    model = build(name)
    ids, mask = prompts()
    _, eos = with_eos(model, ids, mask)
    outputs = []
    for use_cache in (True, False):
        generator = torch.Generator().manual_seed(7)
        outputs.append(generate(model, ids, mask, 12, eos_token_id=eos, use_cache=use_cache,
                                generator=generator, **mode))
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("name", FAMILIES)
def test_beam_search_with_one_beam_is_greedy(name):
    model = build(name)
    ids, mask = prompts()
    _, eos = with_eos(model, ids, mask)
    greedy = generate(model, ids, mask, 12, eos_token_id=eos)
    assert torch.equal(generate(model, ids, mask, 12, eos_token_id=eos, num_beams=1), greedy)
    assert torch.equal(generate(model, ids, mask, 12, eos_token_id=eos, num_beams=1, use_cache=False), greedy)


@pytest.mark.parametrize("name", ["gpt", "t5"])
def test_rows_stop_at_eos_and_at_max_length(name):
    model = build(name)
    ids, mask = prompts()
    free, eos = with_eos(model, ids, mask)
    out = generate(model, ids, mask, 12, eos_token_id=eos)
    start = ids.shape[1] if name == "gpt" else 1
    ends = []
    for row_free, row in zip(free, out):
        hits = (row_free[start:] == eos).nonzero()
        end = start + (int(hits[0, 0]) + 1 if len(hits) else 12)  # EOS included, or max_new_tokens
        ends.append(end)
        assert torch.equal(row[:end], row_free[:end])
        assert (row[end:] == PAD).all()
    assert out.shape[1] == max(ends) and len(set(ends)) > 1  # rows of different lengths in one batch
    assert max(ends) == start + 12 or all(e < start + 12 for e in ends)


def test_greedy_tokens_are_the_argmax_of_the_full_forward():
    model = tiny("gpt")
    ids, mask = prompts()
    out = generate(model, ids, mask, 10, eos_token_id=NEVER)
    full_mask = torch.cat((mask, torch.ones(3, 10, dtype=torch.long)), dim=1)
    logits = model(out, attention_mask=full_mask).logits
    assert torch.equal(out[:, 7:], logits[:, 6:-1].argmax(-1))


def test_beam_search_is_exact_when_the_beam_holds_every_prefix():
    """Vocabulary 5, 3 new tokens, 25 beams: beam search must return the most likely of all 125 endings."""
    model = build_model(TransformerConfig(vocab_size=5, d_model=16, n_heads=2, n_layers=1, max_seq_len=16,
                                          dropout=0.0)).eval()
    prompt = torch.tensor([[1, 2, 3]])
    best = generate(model, prompt, max_new_tokens=3, num_beams=25, eos_token_id=NEVER)

    def logprob(tokens):
        seq = torch.cat((prompt[0], torch.tensor(tokens)))[None]
        lp = model(seq).logits[0, 2:-1].log_softmax(-1)
        return lp[torch.arange(3), seq[0, 3:]].sum().item()

    exhaustive = max(itertools.product(range(5), repeat=3), key=logprob)
    assert best[0, 3:].tolist() == list(exhaustive)


def test_seeded_sampling_is_reproducible_and_respects_top_k_top_p():
    model = tiny("gpt")
    ids, mask = prompts()
    draw = lambda seed, **kw: generate(model, ids, mask, 8, do_sample=True, eos_token_id=NEVER,  # noqa: E731
                                       generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(draw(3, temperature=1.3), draw(3, temperature=1.3))
    assert not torch.equal(draw(3, temperature=1.3), draw(4, temperature=1.3))
    greedy = generate(model, ids, mask, 8, eos_token_id=NEVER)
    assert torch.equal(draw(5, top_k=1), greedy)
    assert torch.equal(draw(5, top_p=1e-6), greedy)

    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)  # probs .64 .23 .09 .03 .01
    gen = torch.Generator().manual_seed(0)
    assert set(sample(logits, top_k=2, generator=gen).tolist()) == {0, 1}
    assert set(sample(logits, top_p=0.9, generator=gen).tolist()) == {0, 1, 2}  # .64 + .23 < .9 <= + .09
    cold = sample(logits, temperature=0.25, generator=gen)
    assert (cold == 0).float().mean() > 0.9


def test_matches_transformers_generate_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=V, n_embd=32, n_head=4, n_layer=2, n_positions=64,
                                     bos_token_id=1, eos_token_id=2, pad_token_id=PAD)
    theirs = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        theirs.transformer.wte.weight[2] *= 8  # make EOS likely, so that rows finish at different steps
    ours = from_transformers(theirs).eval()
    ids, mask = prompts()
    for options in (dict(), dict(num_beams=3, length_penalty=0.5), dict(num_beams=4, early_stopping=True),
                    dict(num_beams=4, length_penalty=2.0), dict(min_new_tokens=4), dict(num_beams=3, min_new_tokens=4)):
        expected = theirs.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, **options)
        got = generate(ours, ids, mask, 10, **options)
        assert torch.equal(until_eos(got, 7, 2), until_eos(expected, 7, 2)), options


def test_matches_transformers_generate_t5():
    model = tiny("t5")
    theirs = to_transformers(model)
    src = torch.randint(3, V, (3, 6))
    src_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 3 + [0] * 3])
    _, eos = with_eos(model, src, src_mask)
    for options in (dict(), dict(num_beams=3, length_penalty=0.5, early_stopping=True), dict(no_repeat_ngram_size=2),
                    dict(num_beams=3, no_repeat_ngram_size=2)):
        expected = theirs.generate(src, attention_mask=src_mask, max_new_tokens=10, do_sample=False,
                                   decoder_start_token_id=0, eos_token_id=eos, pad_token_id=PAD, **options)
        got = generate(model, src, src_mask, 10, eos_token_id=eos, **options)
        assert torch.equal(until_eos(got, 1, eos), until_eos(expected, 1, eos)), options


@pytest.mark.parametrize("beams", [1, 3])
def test_no_repeat_ngram_size_counts_the_new_tokens_only(beams):
    model = tiny("gpt")
    ids, mask = prompts()
    loops = generate(model, ids, mask, 30, eos_token_id=NEVER, num_beams=beams)[:, 7:].tolist()
    assert any(has_repeat(row, 2) for row in loops)  # a random model repeats itself: the option has work to do
    out = generate(model, ids, mask, 30, eos_token_id=NEVER, num_beams=beams, no_repeat_ngram_size=2)
    assert not any(has_repeat(row, 2) for row in out[:, 7:].tolist())


def test_no_repeat_ngram_size_lets_a_decoder_only_model_copy_from_its_prompt():
    logits = torch.zeros(1, V)
    seq = torch.tensor([[5, 6, 9, 5]])  # prompt 5 6 9, then the new token 5
    assert not ban_repeats(logits, seq, 3, 2).isinf().any()  # 5 -> 6 is in the prompt only: allowed
    assert ban_repeats(logits, seq, 0, 2)[0].isinf().nonzero().flatten().tolist() == [6]  # counted from 0: banned


def has_repeat(tokens: list[int], n: int) -> bool:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


def test_generate_rejects_an_encoder_and_bad_arguments():
    with pytest.raises(TypeError, match="needs a GPT or EncoderDecoder"):
        generate(tiny("bert"), torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny("gpt"), torch.ones(1, 3, dtype=torch.long), max_new_tokens=0)
    with pytest.raises(ValueError, match="60 tokens \\+ max_new_tokens=5 exceed max_seq_len=64"):
        generate(tiny("gpt"), torch.ones(1, 60, dtype=torch.long), max_new_tokens=5)
