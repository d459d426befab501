"""The three model families built from one TransformerConfig: GPT (decoder), BERT (encoder), and the
encoder-decoder of T5 and of the original Transformer."""

import math
from dataclasses import dataclass

import torch
from torch import nn

from .attention import KVCache
from .config import TransformerConfig
from .layers import ACTIVATIONS, Stack, norm
from .linear import Linear, linear
from .losses import IGNORE, causal_lm_loss, masked_lm_loss, nsp_loss, seq2seq_loss
from .positions import RelativePositionBias


@dataclass
class Output:
    logits: torch.Tensor | None = None      # (B, T, vocab): next-token, masked-token or target-token logits
    loss: torch.Tensor | None = None        # when labels are given
    hidden: torch.Tensor | None = None      # last hidden state (B, T, d_model): GPT's, or the encoder's
    nsp_logits: torch.Tensor | None = None  # BERT next sentence prediction (B, 2): 0 = is next, 1 = random


class Transformer(nn.Module):
    """What the families share: the token embedding, the (tied) LM head, weight init."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.lm_head = None if cfg.tie_embeddings else Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def init_weights(self):
        """GPT-2's init: N(0, 0.02), and residual output projections scaled by 1 / sqrt(2 * n_layers)."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, RelativePositionBias)):
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=std / math.sqrt(2 * self.config.n_layers))

    def logits(self, h: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return linear(self.head_input(h), self.head_weight, bias)

    def head_input(self, h: torch.Tensor) -> torch.Tensor:
        """What the LM head multiplies: the final hidden states (T5 scales them when the head is tied)."""
        return h * self.config.d_model ** -0.5 if self.config.scale_decoder_outputs else h

    @property
    def head_weight(self) -> torch.Tensor:
        return self.tok_emb.weight if self.lm_head is None else self.lm_head.weight

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class GPT(Transformer):
    """Decoder-only causal language model (Radford et al. 2018, 2019)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__(cfg)
        self.decoder = Stack(cfg, cfg.n_layers, causal=True)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, labels=None, cache: KVCache | None = None) -> Output:
        """labels: the input ids (shifted inside: position t predicts token t + 1), -100 where ignored. With
        labels, logits are not returned and (outside torch.compile) computed only where a label counts: a
        fine-tuning batch is about half prompt and padding, and the vocabulary projection is most of a small
        model's compute (benchmarks/model.py: 1.71x transformers' GPT-2 on such a batch, 1.14x on a
        pretraining batch)."""
        h = self.decoder(self.tok_emb(input_ids), attention_mask, cache=cache)
        if labels is None:
            return Output(logits=self.logits(h), hidden=h)
        return Output(loss=causal_lm_loss(self.head_input(h), labels, self.head_weight), hidden=h)


class MLMHead(nn.Module):
    """BERT's masked-token head: dense + activation + norm, then the tied embedding matrix plus a bias."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.dense, self.act, self.ln = Linear(cfg.d_model, cfg.d_model), ACTIVATIONS[cfg.activation], norm(cfg)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.ln(self.act(self.dense(h)))


class BERT(Transformer):
    """Bidirectional encoder with segment embeddings, a masked-LM head and a next-sentence head on the
    first ([CLS]) token (Devlin et al. 2019)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__(cfg)
        self.encoder = Stack(cfg, cfg.n_layers, causal=False)
        self.mlm = MLMHead(cfg)
        self.pooler = Linear(cfg.d_model, cfg.d_model)
        self.nsp = Linear(cfg.d_model, 2)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                next_sentence_label=None) -> Output:
        """labels: the original ids at masked positions, -100 elsewhere. The loss sums MLM and NSP terms."""
        h = self.encoder(self.tok_emb(input_ids), attention_mask, token_type_ids)
        logits = self.logits(self.mlm(h), self.mlm.bias)
        nsp_logits = self.nsp(torch.tanh(self.pooler(h[:, 0])))
        losses = []
        if labels is not None:
            losses.append(masked_lm_loss(logits, labels))
        if next_sentence_label is not None:
            losses.append(nsp_loss(nsp_logits, next_sentence_label))
        return Output(logits=logits, loss=sum(losses) if losses else None, hidden=h, nsp_logits=nsp_logits)


class EncoderDecoder(Transformer):
    """Encoder over the source, causal decoder with cross-attention over the encoder output: T5 (Raffel
    et al. 2020) and the original Transformer (Vaswani et al. 2017). One embedding serves both sides."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__(cfg)
        self.encoder = Stack(cfg, cfg.n_layers, causal=False)
        self.decoder = Stack(cfg, cfg.n_decoder_layers, causal=True, cross=True)
        self.init_weights()

    def encode(self, input_ids, attention_mask=None) -> torch.Tensor:
        return self.encoder(self.tok_emb(input_ids), attention_mask)

    def decode(self, decoder_input_ids, memory, memory_mask=None, attention_mask=None,
               cache: KVCache | None = None) -> torch.Tensor:
        """Target-token logits (B, T, vocab); `attention_mask` is the decoder's own padding mask."""
        h = self.decoder(self.tok_emb(decoder_input_ids), attention_mask, memory=memory,
                         memory_mask=memory_mask, cache=cache)
        return self.logits(h)

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, labels=None,
                decoder_attention_mask=None, label_smoothing: float = 0.0) -> Output:
        """labels: target ids, -100 where ignored; without decoder_input_ids the decoder reads the labels
        shifted right behind decoder_start_token_id (teacher forcing)."""
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("an encoder-decoder needs decoder_input_ids or labels")
            decoder_input_ids = self.shift_right(labels)
        memory = self.encode(input_ids, attention_mask)
        logits = self.decode(decoder_input_ids, memory, attention_mask, decoder_attention_mask)
        loss = None if labels is None else seq2seq_loss(logits, labels, label_smoothing)
        return Output(logits=logits, loss=loss, hidden=memory)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.decoder_start_token_id is None or cfg.pad_token_id is None:
            raise ValueError("decoder_start_token_id and pad_token_id are needed to build decoder inputs from labels")
        start = labels.new_full((labels.shape[0], 1), cfg.decoder_start_token_id)
        shifted = torch.cat((start, labels[:, :-1]), dim=1)
        return shifted.masked_fill(shifted == IGNORE, cfg.pad_token_id)


def build_model(cfg: TransformerConfig) -> Transformer:
    return {"decoder": GPT, "encoder": BERT, "encoder-decoder": EncoderDecoder}[cfg.architecture](cfg)
