"""One configuration for every model family, saved as `config.json` beside the weights."""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

# What each family is made of. A field left at None in TransformerConfig takes its family's value,
# so `TransformerConfig(family="t5")` is a T5 and any field can still be overridden.
_BASE = dict(positions="learned", norm="layernorm", prenorm=True, norm_embeddings=False, activation="gelu_tanh",
             bias=True, norm_eps=1e-5, type_vocab_size=0, scale_attention=True, scale_embeddings=False,
             scale_decoder_outputs=False)
FAMILIES = {
    # GPT-2 (Radford et al. 2019): decoder only, learned positions, pre-norm, tanh-GELU.
    "gpt": _BASE,
    # BERT (Devlin et al. 2019): encoder only, learned positions and segments, post-norm, exact GELU.
    "bert": _BASE | dict(prenorm=False, norm_embeddings=True, activation="gelu", norm_eps=1e-12, type_vocab_size=2,
                         pad_token_id=0),
    # T5 (Raffel et al. 2020): relative position bias, RMSNorm without bias, unscaled dot products,
    # decoder output scaled by d_model^-0.5 before the tied LM head.
    "t5": _BASE | dict(positions="relative", norm="rmsnorm", activation="relu", bias=False, norm_eps=1e-6,
                       scale_attention=False, scale_decoder_outputs=True,
                       pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
    # "Attention is all you need" (Vaswani et al. 2017): sinusoids, post-norm, ReLU, embeddings * sqrt(d).
    "transformer": _BASE | dict(positions="sinusoidal", prenorm=False, activation="relu", scale_embeddings=True,
                                pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1),
}
ARCHITECTURES = {"gpt": "decoder", "bert": "encoder", "t5": "encoder-decoder", "transformer": "encoder-decoder"}
POSITIONS = ("learned", "sinusoidal", "rotary", "relative")
NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "swiglu", "geglu")
SPECIAL_TOKENS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")


@dataclass
class TransformerConfig:
    family: str = "gpt"               # gpt | bert | t5 | transformer
    vocab_size: int = 8192
    d_model: int = 384
    n_heads: int = 6
    n_layers: int = 6                 # encoder layers, or the decoder's in a decoder-only model
    n_decoder_layers: int | None = None   # encoder-decoder: defaults to n_layers
    d_ff: int | None = None           # feed-forward width: 4 * d_model
    d_head: int | None = None         # d_model // n_heads; T5 lets n_heads * d_head differ from d_model
    max_seq_len: int = 512            # size of the learned / sinusoidal position table
    dropout: float = 0.1
    positions: str | None = None
    norm: str | None = None
    norm_eps: float | None = None
    prenorm: bool | None = None       # normalize each sublayer's input (GPT-2, T5) or its output (BERT, Vaswani)
    norm_embeddings: bool | None = None   # LayerNorm on the summed embeddings (BERT)
    activation: str | None = None
    bias: bool | None = None          # biases in linear layers and LayerNorm
    type_vocab_size: int | None = None    # segment embeddings (BERT)
    tie_embeddings: bool = True       # the LM head reuses the token embedding matrix
    scale_attention: bool | None = None       # divide q.k by sqrt(d_head)
    scale_embeddings: bool | None = None      # multiply token embeddings by sqrt(d_model)
    scale_decoder_outputs: bool | None = None  # multiply the last hidden state by d_model^-0.5 (T5)
    rope_theta: float = 10000.0
    relative_buckets: int = 32
    relative_max_distance: int = 128
    init_std: float = 0.02
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    decoder_start_token_id: int | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; expected one of {sorted(FAMILIES)}")
        for name, value in FAMILIES[self.family].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                                 f"choose a multiple of n_heads or set d_head explicitly")
            self.d_head = self.d_model // self.n_heads
        self.d_ff = self.d_ff or 4 * self.d_model
        self.n_decoder_layers = self.n_decoder_layers or self.n_layers
        for name, value, allowed in (("positions", self.positions, POSITIONS), ("norm", self.norm, NORMS),
                                     ("activation", self.activation, ACTIVATIONS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {list(allowed)}")
        if self.positions == "rotary" and self.d_head % 2:
            raise ValueError(f"rotary positions need an even d_head, got {self.d_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in SPECIAL_TOKENS:
            token = getattr(self, name)
            if token is not None and not 0 <= token < self.vocab_size:
                raise ValueError(f"{name}={token} does not fit in vocab_size={self.vocab_size}: "
                                 f"the vocabulary must hold every special token")

    @property
    def architecture(self) -> str:
        return ARCHITECTURES[self.family]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TransformerConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TransformerConfig fields {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TransformerConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
