"""Compressed copies of a fine-tuned model directory, each a directory that llmcore loads (`load_model`):

- int8: dynamic quantization for CPU inference (torch's own quantized kernels,
  `torch.ao.nn.quantized.dynamic.Linear`: int8 weights with a scale per output channel, activations
  quantized on the fly). Every linear layer, and the token embedding (int8 rows with a scale each), which
  in a tied model is also the LM head, run as one more dynamic int8 linear. Stored as safetensors: int8
  tensors and their fp32 scales, rebuilt into quantized modules on load (no pickle). Its config.json holds
  a `quantization` entry, so a loader that does not know the layout refuses it instead of misreading it.
  CPU only; there is no transformers export of it (refused).
- bf16 / fp16: the weights in half precision (half the bytes); loads as a model of that dtype, exports to
  transformers (`hf/`, torch_dtype set).
- prune: the linear layers' weights with the smallest magnitudes (one global threshold) set to zero, then
  fine-tuned with the zeros held (run.py), a dense model like any other.

Every compressed directory holds `compression.json` (method, source, details) beside the model files,
the tokenizer and the task spec.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llmcore.finetune.spec import SPEC_FILE, Finetuned, TaskSpec
from llmcore.model import Transformer, TransformerConfig, build_model
from llmcore.model.io import load
from llmcore.tokenizer import TOKENIZER_FILE

COMPRESSION_FILE = "compression.json"
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
QUANTIZED = "int8-dynamic"


class CompressionError(ValueError):
    """A model that cannot be compressed (or loaded) as asked; the message says why and what to do instead."""


def _quantized_linear():
    # torch >= 2.10 warns that quantized tensors are deprecated in favour of torchao, which this project does not
    # install; the eager dynamic kernels (fbgemm / x86) are still torch's own and still work.
    warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
    warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return DynamicLinear


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: (int8 values, fp32 scales) with weight ~= values * scale[:, None]."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def dynamic_linear(values: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    DynamicLinear = _quantized_linear()
    out_features, in_features = values.shape
    qweight = torch._make_per_channel_quantized_tensor(values, scale.double(), torch.zeros(out_features, dtype=torch.long), 0)
    module = DynamicLinear(in_features, out_features, bias_=bias is not None, dtype=torch.qint8)
    module.set_weight_bias(qweight, None if bias is None else bias.detach().float())
    return module


def linear_names(model: Transformer) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def _files(source: Path, target: Path) -> None:
    for name in (TOKENIZER_FILE, SPEC_FILE):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


def _swap_in(staging: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def _staging(target: Path) -> Path:
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def quantize_int8(source: str | Path, target: str | Path) -> Path:
    """The int8 directory of the model in `source` (see the module doc)."""
    source, target = Path(source), Path(target)
    model = load(source)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    quantized = [f"{name}.weight" for name in linear_names(model)] + ["tok_emb.weight"]
    for key in quantized:
        state[key], state[key.removesuffix("weight") + "weight_scale"] = quantize_rows(state[key])
    staging = _staging(target)
    config = model.config.to_dict() | {"quantization": {"method": QUANTIZED, "weights": quantized}}
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(state, staging / "model.safetensors", metadata={"format": "pt"})
    _files(source, staging)
    describe(staging, "int8", source, {"quantized": len(quantized), "kernels": torch.backends.quantized.engine})
    return _swap_in(staging, target)


def load_int8(directory: str | Path) -> Transformer:
    """An int8 directory as a CPU model whose linear layers (and tied LM head) are dynamic int8 modules."""
    directory = Path(directory)
    raw = json.loads((directory / "config.json").read_text())
    quantization = raw.pop("quantization")
    if quantization.get("method") != QUANTIZED:
        raise CompressionError(f"{directory}: unknown quantization {quantization.get('method')!r}")
    model = build_model(TransformerConfig.from_dict(raw))
    state = load_file(directory / "model.safetensors")
    emb_values, emb_scale = state.pop("tok_emb.weight"), state.pop("tok_emb.weight_scale")
    state["tok_emb.weight"] = emb_values.float() * emb_scale[:, None]
    linears = {}
    for name in linear_names(model):
        values, scale = state.pop(f"{name}.weight"), state.pop(f"{name}.weight_scale")
        linears[name] = dynamic_linear(values, scale, state.pop(f"{name}.bias", None))
    missing, unexpected = model.load_state_dict(state, strict=False)
    expected = {f"{n}.{p}" for n in linears for p in ("weight", "bias")}
    if set(missing) - expected or unexpected:
        raise CompressionError(f"{directory}: the int8 weights do not fit the config (missing {sorted(set(missing) - expected)}, "
                               f"unexpected {unexpected})")
    for name, module in linears.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, module)
    if model.lm_head is None:  # tied: the LM head is the int8 embedding matrix
        head = dynamic_linear(emb_values, emb_scale, None)
        model.logits = lambda h, bias=None: head(model.head_input(h).float()) + (0 if bias is None else bias)
        model.int8_head = head
    return model.eval()


def export_half(source: str | Path, target: str | Path, dtype: str, hf_export: bool = True) -> Path:
    """The model of `source` with its weights in `dtype` (bf16 or fp16), and its transformers export in `hf/`."""
    if dtype not in HALF:
        raise CompressionError(f"unknown dtype {dtype!r}; use one of {sorted(HALF)}")
    source, target = Path(source), Path(target)
    model = load(source)
    staging = _staging(target)
    model.config.save(staging / "config.json")
    save_file({k: v.detach().to(HALF[dtype]).contiguous() for k, v in model.state_dict().items()},
              staging / "model.safetensors", metadata={"format": "pt"})
    _files(source, staging)
    details: dict = {"dtype": dtype}
    if hf_export:
        details["hf"] = _hf_half(staging, dtype)
    describe(staging, dtype, source, details)
    return _swap_in(staging, target)


def _hf_half(directory: Path, dtype: str) -> str | None:
    """The transformers export of `directory` in `hf/`, its tensors in `dtype`; None (and why) when the model's
    settings have no transformers equivalent."""
    from llmcore.export import ExportError, export

    try:
        out = export(directory, directory / "hf")
    except ExportError as exc:
        return f"not exported: {exc}"
    tensors = load_file(out / "model.safetensors")
    save_file({k: v.to(HALF[dtype]) if v.is_floating_point() else v for k, v in tensors.items()},
              out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text()) | {"torch_dtype": {"bf16": "bfloat16", "fp16": "float16"}[dtype]}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return "hf"


def magnitude_masks(model: Transformer, sparsity: float) -> dict[str, torch.Tensor]:
    """Masks (1 = kept) of the linear layers' weights: the `sparsity` share with the smallest |w| over all
    of them (one global threshold) is dropped. Embeddings, norms and biases are kept."""
    if not 0 <= sparsity < 1:
        raise CompressionError(f"sparsity {sparsity} must be in [0, 1)")
    weights = {f"{name}.weight": model.get_submodule(name).weight.detach() for name in linear_names(model)}
    if not weights:
        raise CompressionError("the model has no linear layers to prune")
    flat = torch.cat([w.abs().flatten().float() for w in weights.values()])
    k = int(sparsity * flat.numel())
    threshold = flat.kthvalue(k).values if k else flat.new_tensor(-1.0)
    return {name: (w.abs().float() > threshold).to(w.dtype) for name, w in weights.items()}


@torch.no_grad()
def apply_masks(model: Transformer, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def sparsity(model: Transformer) -> float:
    """Share of zeros among the linear layers' weights."""
    weights = [model.get_submodule(n).weight for n in linear_names(model)]
    return sum(int((w == 0).sum()) for w in weights) / max(1, sum(w.numel() for w in weights))


def describe(directory: Path, method: str, source: Path, details: dict) -> None:
    (directory / COMPRESSION_FILE).write_text(json.dumps({"method": method, "source": str(source), **details}, indent=2) + "\n")


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """Any model directory of the pipeline: llmcore / transformers checkpoints (llmcore.model.io.load, in the
    dtype their weights were saved in when compressed to bf16 / fp16) and int8 directories (CPU only)."""
    directory = Path(directory)
    info = json.loads((directory / COMPRESSION_FILE).read_text()) if (directory / COMPRESSION_FILE).is_file() else {}
    if "quantization" in json.loads((directory / "config.json").read_text()):
        if torch.device(device).type != "cpu":
            raise CompressionError(f"{directory} holds dynamic int8 weights, which run on CPUs only; load it with device='cpu' "
                                   "or use the fp32 / bf16 model on a GPU")
        return load_int8(directory)
    model = load(directory, device)
    if info.get("dtype") in HALF:
        model = model.to(HALF[info["dtype"]])
    return model.eval()


def load_any(directory: str | Path, device: str | torch.device = "cpu") -> Finetuned:
    """`load_finetuned` for compressed directories too."""
    from tokenizers import Tokenizer

    directory = Path(directory)
    return Finetuned(load_model(directory, device), Tokenizer.from_file(str(directory / TOKENIZER_FILE)), TaskSpec.load(directory))


def size_on_disk(directory: str | Path) -> int:
    """Bytes of the model's weights and config (the tokenizer and the transformers export not counted)."""
    directory = Path(directory)
    return sum((directory / name).stat().st_size for name in ("model.safetensors", "config.json"))


def save_pruned(model: Transformer, source: str | Path, target: str | Path) -> Path:
    """A pruned model (no recovery training) as a model directory beside its tokenizer and task spec."""
    from llmcore.model.io import save

    source, target = Path(source), Path(target)
    staging = _staging(target)
    save(model, staging)
    _files(source, staging)
    describe(staging, "prune", source, {"sparsity": sparsity(model)})
    return _swap_in(staging, target)
