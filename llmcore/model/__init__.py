"""llmcore's Transformer: one config, three families (GPT, BERT, encoder-decoder T5 / Transformer)."""

from .attention import Attention, KVCache
from .config import TransformerConfig
from .families import BERT, GPT, EncoderDecoder, Output, Transformer, build_model
from .io import load, save
from .layers import MLP, Block, Stack
from .losses import IGNORE, causal_lm_loss, cross_entropy, masked_lm_loss, nsp_loss, seq2seq_loss, span_corruption_loss

__all__ = ["Attention", "KVCache", "TransformerConfig", "BERT", "GPT", "EncoderDecoder", "Output", "Transformer",
           "build_model", "load", "save", "MLP", "Block", "Stack", "IGNORE", "causal_lm_loss", "cross_entropy",
           "masked_lm_loss", "nsp_loss", "seq2seq_loss", "span_corruption_loss"]
