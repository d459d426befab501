"""Save and load llmcore models as `config.json` + `model.safetensors`: no pickle, ever."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import TransformerConfig
from .families import Transformer, build_model


def save(model: Transformer, directory: str | Path) -> Path:
    return save_state(model.config, model.state_dict(), directory)


def save_state(config: TransformerConfig, state: dict[str, torch.Tensor], directory: str | Path) -> Path:
    """`save` for a state dict gathered elsewhere (a sharded model's full state, on one rank)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config.save(directory / "config.json")
    state = {name: t.detach().contiguous() for name, t in state.items()}
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def load(directory: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """Load an llmcore checkpoint, or a transformers GPT-2 / BERT / T5 checkpoint (see llmcore.hf)."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    if "model_type" in config:
        from llmcore.hf import load_hf
        return load_hf(directory, device)
    model = build_model(TransformerConfig.from_dict(config))
    model.load_state_dict(load_file(directory / "model.safetensors", device=str(device)))
    return model.to(device)
