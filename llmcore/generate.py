"""Generation for GPT and encoder-decoder models: greedy, sampling (temperature, top-k, top-p) and beam
search, with a KV cache.

Decoder-only prompts of different lengths are left-padded (attention_mask marks the real tokens); the
output is prompt + new tokens. Encoder-decoder outputs are the decoder's tokens, starting with
`decoder_start_token_id`. Rows stop at EOS and are padded with `pad_token_id` until the last row stops or
`max_new_tokens` are generated.
"""

import torch
import torch.nn.functional as F

from llmcore.model import GPT, EncoderDecoder, KVCache


class _Next:
    """Next-token logits (B, vocab) of the sequences so far, for either family, with or without cache."""

    def __init__(self, model, input_ids, attention_mask, use_cache, copies):
        self.model, self.cache = model, KVCache() if use_cache else None
        if isinstance(model, EncoderDecoder):
            self.memory = model.encode(input_ids, attention_mask).repeat_interleave(copies, 0)
            self.memory_mask = None if attention_mask is None else attention_mask.repeat_interleave(copies, 0)

    def __call__(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        new = seq[:, self.cache.length:] if self.cache is not None else seq
        if isinstance(self.model, EncoderDecoder):
            return self.model.decode(new, self.memory, self.memory_mask, cache=self.cache)[:, -1]
        return self.model(new, attention_mask=mask, cache=self.cache).logits[:, -1]

    def reorder(self, rows: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder(rows)


def sample(logits: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0, generator=None) -> torch.Tensor:
    """Draw one token per row from softmax(logits / temperature), restricted to the top_k most likely tokens
    and to the smallest set whose probability reaches top_p (nucleus sampling, Holtzman et al. 2020)."""
    logits = logits.float() / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        beyond = probs.cumsum(-1) - probs > top_p  # tokens after the nucleus is complete; the first stays
        logits = logits.masked_fill(beyond.scatter(-1, order, beyond), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


@torch.no_grad()
def generate(model, input_ids, attention_mask=None, max_new_tokens=32, *, do_sample=False, temperature=1.0,
             top_k=0, top_p=1.0, num_beams=1, length_penalty=1.0, early_stopping=False, eos_token_id=None,
             pad_token_id=None, generator: torch.Generator | None = None, use_cache=True,
             no_repeat_ngram_size: int = 0, min_new_tokens: int = 0) -> torch.Tensor:
    """min_new_tokens: EOS is banned before that many new tokens (transformers' option of that name).
    no_repeat_ngram_size: no n-gram occurs twice in the decoder's tokens: an encoder-decoder's whole output (as
    in transformers), a decoder-only model's new tokens (transformers counts the prompt too; here a translation
    may still copy n-grams from its source)."""
    if not isinstance(model, (GPT, EncoderDecoder)):
        raise TypeError(f"generate needs a GPT or EncoderDecoder model, not {type(model).__name__}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    cfg = model.config
    eos = cfg.eos_token_id if eos_token_id is None else eos_token_id
    pad = next((t for t in (pad_token_id, cfg.pad_token_id, eos) if t is not None), 0)
    if isinstance(model, EncoderDecoder):
        start = torch.full((input_ids.shape[0], 1), cfg.decoder_start_token_id, device=input_ids.device)
        seq, mask = start, None
    else:
        seq, mask = input_ids, attention_mask
    if cfg.positions in ("learned", "sinusoidal") and seq.shape[1] + max_new_tokens > cfg.max_seq_len:
        raise ValueError(f"{seq.shape[1]} tokens + max_new_tokens={max_new_tokens} exceed max_seq_len="
                         f"{cfg.max_seq_len}: lower max_new_tokens")
    if num_beams > 1:
        if do_sample:
            raise ValueError("beam search samples nothing: use num_beams=1 with do_sample=True")
        return _beam_search(model, input_ids, attention_mask, seq, mask, max_new_tokens, num_beams, eos, pad,
                            length_penalty, early_stopping, use_cache, no_repeat_ngram_size, min_new_tokens)
    next_logits = _Next(model, input_ids, attention_mask, use_cache, copies=1)
    finished = torch.zeros(seq.shape[0], dtype=torch.bool, device=seq.device)
    start = 0 if isinstance(model, EncoderDecoder) else seq.shape[1]
    for step in range(max_new_tokens):
        logits = ban_repeats(next_logits(seq, mask), seq, start, no_repeat_ngram_size)
        if step < min_new_tokens and eos is not None:
            logits[:, eos] = float("-inf")
        token = sample(logits, temperature, top_k, top_p, generator) if do_sample else logits.argmax(-1)
        if eos is not None:
            token = token.masked_fill(finished, pad)
            finished |= token == eos
        seq = torch.cat((seq, token[:, None]), dim=1)
        mask = None if mask is None else F.pad(mask, (0, 1), value=1)
        if finished.all():
            break
    return seq


def _beam_search(model, input_ids, attention_mask, seq, mask, max_new_tokens, K, eos, pad, length_penalty,
                 early_stopping, use_cache, no_repeat_ngram_size=0, min_new_tokens=0):
    """Keep the K best partial sequences per row by total log-probability; a sequence that ends with EOS
    or reaches max_new_tokens becomes a hypothesis scored sum(log p) / length ** length_penalty. A row is
    done when it has K hypotheses and (unless early_stopping) its best running beam, at its current
    length, cannot beat the worst of them. These are transformers' rules: tests compare the outputs."""
    B, prompt_len = seq.shape
    next_logits = _Next(model, input_ids, attention_mask, use_cache, copies=K)
    seq = seq.repeat_interleave(K, 0)
    mask = None if mask is None else mask.repeat_interleave(K, 0)
    scores = torch.zeros(B, K, device=seq.device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    scores = scores.flatten()
    hyps: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(B)]
    done = [False] * B
    for step in range(1, max_new_tokens + 1):
        start = 0 if isinstance(model, EncoderDecoder) else prompt_len
        # Banned after log_softmax (their mass is not handed to the others), as transformers does.
        logprobs = ban_repeats(next_logits(seq, mask).float().log_softmax(-1), seq, start, no_repeat_ngram_size)
        if step <= min_new_tokens and eos is not None:
            logprobs[:, eos] = float("-inf")
        logprobs = logprobs + scores[:, None]
        V = logprobs.shape[-1]
        top_scores, top_index = logprobs.view(B, K * V).topk(2 * K)  # 2K: at most K of them end with EOS
        rows, tokens, new_scores = [], [], []
        for b in range(B):
            beams = [(b * K, pad, 0.0)] * K if done[b] else []  # a done row idles on padding
            for rank, (score, index) in enumerate(zip(top_scores[b].tolist(), top_index[b].tolist())):
                if len(beams) == K:
                    break
                row, token = b * K + index // V, index % V
                # Of the K best candidates, those ending with EOS or at the length limit are hypotheses.
                if rank < K and (token == eos or step == max_new_tokens):
                    generated = torch.cat((seq[row, prompt_len:], seq.new_tensor([token])))
                    _add(hyps[b], score / step ** length_penalty, generated, K)
                if token != eos:
                    beams.append((row, token, score))
            if not done[b] and len(hyps[b]) == K:
                done[b] = early_stopping or hyps[b][-1][0] >= beams[0][2] / step ** length_penalty
            rows += [r for r, _, _ in beams]
            tokens += [t for _, t, _ in beams]
            new_scores += [s for _, _, s in beams]
        rows = torch.tensor(rows, device=seq.device)
        seq = torch.cat((seq[rows], torch.tensor(tokens, device=seq.device)[:, None]), dim=1)
        mask = None if mask is None else F.pad(mask[rows], (0, 1), value=1)
        scores = torch.tensor(new_scores, device=seq.device)
        next_logits.reorder(rows)
        if all(done):
            break
    best = [hyps[b][0][1] for b in range(B)]
    width = max(len(h) for h in best)
    prompts = seq[::K, :prompt_len]
    return torch.stack([torch.cat((prompts[b], F.pad(h, (0, width - len(h)), value=pad))) for b, h in enumerate(best)])


def ban_repeats(logits: torch.Tensor, seq: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """-inf for every token that would complete an n-gram already in seq[:, start:] (fairseq / transformers'
    no_repeat_ngram_size)."""
    if n <= 0 or seq.shape[1] - start < n - 1:
        return logits
    logits = logits.clone()
    for row, tokens in enumerate(seq[:, start:].tolist()):
        tail = tokens[len(tokens) - n + 1 :] if n > 1 else []
        banned = [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tokens[i : i + n - 1] == tail]
        logits[row, banned] = float("-inf")
    return logits


def _add(hyps: list, score: float, tokens: torch.Tensor, K: int) -> None:
    """Insert into the best-first list of at most K hypotheses."""
    hyps.append((score, tokens))
    hyps.sort(key=lambda h: -h[0])
    del hyps[K:]
