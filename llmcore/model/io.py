"""Save and load llmcore models as `config.json` + `model.safetensors`: no pickle, ever."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import TransformerConfig
from .families import Transformer, build_model


def save(model: Transformer, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory / "config.json")
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
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
