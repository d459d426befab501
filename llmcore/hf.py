"""Import and export Hugging Face `transformers` checkpoints: GPT-2 (`GPT2LMHeadModel`), BERT
(`BertForPreTraining`, or a bare `BertModel`) and T5 (`T5ForConditionalGeneration`).

llmcore's weights follow those layouts, so conversion is a renaming plus three kinds of reshaping: GPT-2's
`Conv1D` stores weights transposed; BERT and T5 keep q, k, v (and T5's gated wi_0, wi_1) in separate
matrices where llmcore fuses them. Reading and writing `config.json` + `model.safetensors` needs only
safetensors; `to_transformers` / `from_transformers` need the `hf` extra (transformers).
"""

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmcore.model import Transformer, TransformerConfig, build_model
from llmcore.model.config import SPECIAL_TOKENS

log = logging.getLogger(__name__)

# llmcore activation <-> transformers name, per family (T5 prefixes gated ones with "gated-").
_ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "geglu": "gated-gelu", "swiglu": "gated-silu"}
_ACT_FROM_HF = {v: k for k, v in _ACT_TO_HF.items()} | {"gelu_pytorch_tanh": "gelu_tanh", "gated-gelu_new": "geglu"}
_FAMILY = {"gpt2": "gpt", "bert": "bert", "t5": "t5"}
_ARCH = {"gpt": ("gpt2", "GPT2LMHeadModel"), "bert": ("bert", "BertForPreTraining"),
         "t5": ("t5", "T5ForConditionalGeneration")}
_BASE_PREFIX = {"gpt": "transformer.", "bert": "bert.", "t5": ""}  # bare GPT2Model / BertModel files lack it
_OPTIONAL = {"gpt": (), "bert": ("mlm.", "nsp.", "pooler."), "t5": ()}  # heads a bare base model lacks
# Buffers and tied copies of weights that llmcore holds once.
_UNUSED = ("position_ids", "attn.bias", "attn.masked_bias", "embed_tokens.weight", "lm_head.weight",
           "predictions.decoder.weight", "predictions.decoder.bias")
_NOT_IN_HF = {"init_std", "rope_theta", "relative_buckets", "relative_max_distance"}


def config_from_hf(hf: dict) -> TransformerConfig:
    family = _FAMILY.get(hf.get("model_type"))
    if family is None:
        raise ValueError(f"unsupported transformers model_type {hf.get('model_type')!r}; expected {sorted(_FAMILY)}")
    specials = {k: hf[k] for k in SPECIAL_TOKENS if hf.get(k) is not None}  # else the family's defaults
    if family == "gpt":
        d = hf.get("n_embd", 768)
        if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
            raise ValueError("GPT-2 variants with non-standard attention scaling are not supported")
        return TransformerConfig(
            family="gpt", vocab_size=hf.get("vocab_size", 50257), d_model=d, n_heads=hf.get("n_head", 12),
            n_layers=hf.get("n_layer", 12), d_ff=hf.get("n_inner") or 4 * d, max_seq_len=hf.get("n_positions", 1024),
            dropout=hf.get("resid_pdrop", 0.1), norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            activation=_ACT_FROM_HF[hf.get("activation_function", "gelu_new")], **specials)
    if family == "bert":
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only BERT with absolute position embeddings is supported")
        return TransformerConfig(
            family="bert", vocab_size=hf.get("vocab_size", 30522), d_model=hf.get("hidden_size", 768),
            n_heads=hf.get("num_attention_heads", 12), n_layers=hf.get("num_hidden_layers", 12),
            d_ff=hf.get("intermediate_size", 3072), max_seq_len=hf.get("max_position_embeddings", 512),
            dropout=hf.get("hidden_dropout_prob", 0.1), norm_eps=hf.get("layer_norm_eps", 1e-12),
            activation=_ACT_FROM_HF[hf.get("hidden_act", "gelu")], type_vocab_size=hf.get("type_vocab_size", 2),
            **specials)
    # Original T5 ties the head and rescales its input; T5 v1.1 / Flan-T5 configs say tie_word_embeddings=False,
    # meaning an untied head (transformers 4) or a tied one without rescaling (transformers 5, which saves
    # scale_decoder_outputs). Untied T5 models do not survive transformers 5, which always ties.
    tied = hf.get("tie_word_embeddings", True)
    return TransformerConfig(
        family="t5", vocab_size=hf.get("vocab_size", 32128), d_model=hf.get("d_model", 512),
        d_head=hf.get("d_kv", 64), d_ff=hf.get("d_ff", 2048), n_heads=hf.get("num_heads", 8),
        n_layers=hf.get("num_layers", 6), n_decoder_layers=hf.get("num_decoder_layers"),
        relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128),
        dropout=hf.get("dropout_rate", 0.1), norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        activation=_ACT_FROM_HF[hf.get("feed_forward_proj", "relu")], tie_embeddings=tied,
        scale_decoder_outputs=hf.get("scale_decoder_outputs", tied), **specials)


def config_to_hf(cfg: TransformerConfig) -> dict:
    """The transformers config.json of `cfg`; raises when transformers has no model computing the same."""
    if cfg.family not in _ARCH:
        raise ValueError(f"family {cfg.family!r} has no transformers equivalent; exportable: {sorted(_ARCH)}")
    model_type, arch = _ARCH[cfg.family]
    act = _ACT_TO_HF[cfg.activation]
    specials = {k: getattr(cfg, k) for k in SPECIAL_TOKENS}  # None too: GPT-2 would default to 50256
    if cfg.family == "gpt":
        hf = dict(vocab_size=cfg.vocab_size, n_embd=cfg.d_model, n_head=cfg.n_heads, n_layer=cfg.n_layers,
                  n_inner=cfg.d_ff, n_positions=cfg.max_seq_len, activation_function=act,
                  resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                  layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=True)
    elif cfg.family == "bert":
        hf = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_attention_heads=cfg.n_heads,
                  num_hidden_layers=cfg.n_layers, intermediate_size=cfg.d_ff, hidden_act=act,
                  max_position_embeddings=cfg.max_seq_len, type_vocab_size=cfg.type_vocab_size,
                  hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                  layer_norm_eps=cfg.norm_eps, position_embedding_type="absolute", tie_word_embeddings=True)
    else:
        hf = dict(vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_head, d_ff=cfg.d_ff,
                  num_heads=cfg.n_heads, num_layers=cfg.n_layers, num_decoder_layers=cfg.n_decoder_layers,
                  relative_attention_num_buckets=cfg.relative_buckets,
                  relative_attention_max_distance=cfg.relative_max_distance, dropout_rate=cfg.dropout,
                  layer_norm_epsilon=cfg.norm_eps, feed_forward_proj=act, tie_word_embeddings=cfg.tie_embeddings,
                  scale_decoder_outputs=cfg.scale_decoder_outputs, is_encoder_decoder=True)
    hf = {"model_type": model_type, "architectures": [arch]} | hf | specials
    # Whatever the transformers config cannot express must already hold its GPT-2 / BERT / T5 value.
    back = config_from_hf(hf)
    ignore = _NOT_IN_HF | ({"max_seq_len"} if cfg.family == "t5" else set())
    differ = [f"{k}={v!r} (transformers' {model_type}: {getattr(back, k)!r})"
              for k, v in cfg.to_dict().items() if k not in ignore and getattr(back, k) != v]
    if differ:
        raise ValueError(f"this {cfg.family} model has no transformers {arch} equivalent: " + ", ".join(differ))
    return hf


def _rules(cfg: TransformerConfig) -> list[tuple[str, tuple[str, ...], str]]:
    """(llmcore name, transformers names, how): how is "copy", "transpose" (GPT-2 Conv1D) or "concat"
    (several transformers matrices fused into one llmcore matrix along the output dimension)."""
    rules = []

    def add(ours, theirs, how="copy", names=("weight", "bias")):
        for n in names if cfg.bias else ("weight",):
            theirs_n = tuple(f"{t}.{n}" for t in ((theirs,) if isinstance(theirs, str) else theirs))
            rules.append((f"{ours}.{n}", theirs_n, "copy" if n == "bias" and how == "transpose" else how))

    if cfg.family == "gpt":
        add("tok_emb", "transformer.wte", names=("weight",))
        add("decoder.pos_emb", "transformer.wpe", names=("weight",))
        for i in range(cfg.n_layers):
            o, h = f"decoder.layers.{i}.", f"transformer.h.{i}."
            add(o + "ln_1", h + "ln_1")
            add(o + "attn.qkv", h + "attn.c_attn", "transpose")
            add(o + "attn.proj", h + "attn.c_proj", "transpose")
            add(o + "ln_2", h + "ln_2")
            add(o + "mlp.fc", h + "mlp.c_fc", "transpose")
            add(o + "mlp.proj", h + "mlp.c_proj", "transpose")
        add("decoder.ln_f", "transformer.ln_f")
    elif cfg.family == "bert":
        e = "bert.embeddings."
        add("tok_emb", e + "word_embeddings", names=("weight",))
        add("encoder.pos_emb", e + "position_embeddings", names=("weight",))
        add("encoder.seg_emb", e + "token_type_embeddings", names=("weight",))
        add("encoder.ln_emb", e + "LayerNorm")
        for i in range(cfg.n_layers):
            o, h = f"encoder.layers.{i}.", f"bert.encoder.layer.{i}."
            add(o + "attn.qkv", tuple(h + f"attention.self.{x}" for x in ("query", "key", "value")), "concat")
            add(o + "attn.proj", h + "attention.output.dense")
            add(o + "ln_1", h + "attention.output.LayerNorm")
            add(o + "mlp.fc", h + "intermediate.dense")
            add(o + "mlp.proj", h + "output.dense")
            add(o + "ln_2", h + "output.LayerNorm")
        add("pooler", "bert.pooler.dense")
        add("mlm.dense", "cls.predictions.transform.dense")
        add("mlm.ln", "cls.predictions.transform.LayerNorm")
        rules.append(("mlm.bias", ("cls.predictions.bias",), "copy"))
        add("nsp", "cls.seq_relationship")
    else:
        gated = cfg.activation in ("geglu", "swiglu")
        wi = ("DenseReluDense.wi_0", "DenseReluDense.wi_1") if gated else "DenseReluDense.wi"
        add("tok_emb", "shared", names=("weight",))
        for side, n_layers in (("encoder", cfg.n_layers), ("decoder", cfg.n_decoder_layers)):
            rules.append((f"{side}.relative_bias.weight",
                          (f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",), "copy"))
            for i in range(n_layers):
                o, h = f"{side}.layers.{i}.", f"{side}.block.{i}.layer."
                add(o + "ln_1", h + "0.layer_norm")
                add(o + "attn.qkv", tuple(h + f"0.SelfAttention.{x}" for x in "qkv"), "concat")
                add(o + "attn.proj", h + "0.SelfAttention.o")
                if side == "decoder":
                    add(o + "ln_cross", h + "1.layer_norm")
                    add(o + "cross.q", h + "1.EncDecAttention.q")
                    add(o + "cross.kv", (h + "1.EncDecAttention.k", h + "1.EncDecAttention.v"), "concat")
                    add(o + "cross.proj", h + "1.EncDecAttention.o")
                ff = h + ("2." if side == "decoder" else "1.")
                add(o + "ln_2", ff + "layer_norm")
                add(o + "mlp.fc", tuple(ff + w for w in wi) if gated else ff + wi, "concat" if gated else "copy")
                add(o + "mlp.proj", ff + "DenseReluDense.wo")
            add(f"{side}.ln_f", f"{side}.final_layer_norm")
        if not cfg.tie_embeddings:
            rules.append(("lm_head.weight", ("lm_head.weight",), "copy"))
    return rules


def state_dict_from_hf(hf_state: dict, cfg: TransformerConfig) -> tuple[dict, list[str]]:
    """llmcore state dict and the llmcore names the checkpoint did not have (heads of a bare base model)."""
    prefix = _BASE_PREFIX[cfg.family]
    if prefix and not any(k.startswith(prefix) for k in hf_state):
        hf_state = {(k if k.startswith(("cls.", "lm_head.")) else prefix + k): v for k, v in hf_state.items()}
    state, missing, used = {}, [], set()
    for ours, theirs, how in _rules(cfg):
        if not all(t in hf_state for t in theirs):
            if not ours.startswith(_OPTIONAL[cfg.family]):
                raise KeyError(f"checkpoint lacks {[t for t in theirs if t not in hf_state]} (for llmcore {ours})")
            missing.append(ours)
            continue
        tensors = [hf_state[t] for t in theirs]
        used.update(theirs)
        state[ours] = (tensors[0].t() if how == "transpose" else torch.cat(tensors) if how == "concat"
                       else tensors[0]).contiguous()
    unused = [k for k in hf_state if k not in used and not k.endswith(_UNUSED)]
    if unused:
        log.warning("ignored %d transformers weights without an llmcore counterpart: %s", len(unused), unused[:8])
    return state, missing


def state_dict_to_hf(state: dict, cfg: TransformerConfig) -> dict:
    hf_state = {}
    for ours, theirs, how in _rules(cfg):
        t = state[ours]
        parts = (t.t(),) if how == "transpose" else t.chunk(len(theirs)) if how == "concat" else (t,)
        hf_state.update({name: p.detach().contiguous() for name, p in zip(theirs, parts)})
    return hf_state


def from_hf_state(hf_config: dict, hf_state: dict) -> Transformer:
    cfg = config_from_hf(hf_config)
    state, missing = state_dict_from_hf(hf_state, cfg)
    model = build_model(cfg)
    model.load_state_dict(state, strict=not missing)
    if missing:
        heads = sorted({m.split(".")[0] for m in missing})
        log.warning("transformers checkpoint has no %s: left at their initialization", heads)
    return model


def load_hf(directory: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """Load a transformers GPT-2 / BERT / T5 checkpoint directory (config.json + model.safetensors)."""
    directory = Path(directory)
    weights = directory / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found: only safetensors checkpoints are read (never pickle)")
    hf_config = json.loads((directory / "config.json").read_text())
    return from_hf_state(hf_config, load_file(weights, device=str(device))).to(device)


def save_hf(model: Transformer, directory: str | Path) -> Path:
    """Write `model` as a transformers checkpoint: `AutoModel*.from_pretrained(directory)` loads it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf_config = config_to_hf(model.config)
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    save_file(state_dict_to_hf(model.state_dict(), model.config), directory / "model.safetensors",
              metadata={"format": "pt"})
    return directory


def to_transformers(model: Transformer):
    """The same model as a transformers module (GPT2LMHeadModel, BertForPreTraining, T5ForConditionalGeneration)."""
    import transformers

    hf_config = config_to_hf(model.config)
    config = transformers.AutoConfig.for_model(**hf_config)
    hf_model = getattr(transformers, hf_config["architectures"][0])(config)
    result = hf_model.load_state_dict(state_dict_to_hf(model.state_dict(), model.config), strict=False)
    if [k for k in result.missing_keys if not k.endswith(_UNUSED)] or result.unexpected_keys:
        raise RuntimeError(f"transformers {type(hf_model).__name__} did not take the weights: {result}")
    return hf_model.train(model.training)


def from_transformers(hf_model) -> Transformer:
    return from_hf_state(hf_model.config.to_dict(), hf_model.state_dict())
