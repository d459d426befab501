"""Save and load llmcore models as `config.json` + `model.safetensors`: no pickle, ever. Loading checks the
directory's files against the sha256 recorded when they were written, wherever a record exists."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmcore.manifest import MANIFEST, ManifestError, file_sha256, read_manifest
from llmcore.train.checkpoint import MARKER

from .config import TransformerConfig
from .families import Transformer, build_model


class ModelFileError(ManifestError):
    """A file of a model directory that is missing or differs from the sha256 recorded when it was written (a
    ManifestError: what it records cannot be trusted, the stage must be recomputed)."""


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
    verify(directory)
    config = json.loads((directory / "config.json").read_text())
    if "model_type" in config:
        from llmcore.hf import load_hf
        return load_hf(directory, device)
    model = build_model(TransformerConfig.from_dict(config))
    model.load_state_dict(load_file(directory / "model.safetensors", device=str(device)))
    return model.to(device)


def verify(directory: Path) -> None:
    """Check the files of a model directory against the sha256 recorded by a training checkpoint's marker in it
    and by the stage manifest of the run holding it (the nearest manifest.json up to two levels up:
    `<run>/model`, `<run>/checkpoints/step-N`), hashing each file once. Training state (*.pt) is not read to
    load a model, so not hashed either."""
    directory = directory.absolute()
    stage = next((d for d in (directory, *directory.parents[:2]) if (d / MANIFEST).is_file()), None)
    fix = f"delete the stage directory {stage} so that it is recomputed" if stage else "the checkpoint is damaged; load an earlier one"
    records = []  # (file, sha256, where it was recorded)
    if (directory / MARKER).is_file():
        try:
            marker = json.loads((directory / MARKER).read_text())
        except ValueError as exc:
            raise ModelFileError(f"{directory / MARKER} is not valid JSON ({exc}): {fix}") from None
        records += [(directory / name, digest, directory / MARKER) for name, digest in marker.get("sha256", {}).items()]
    if stage:
        records += [(stage / f["path"], f["sha256"], stage / MANIFEST) for f in read_manifest(stage).get("files", [])
                    if "sha256" in f and (stage / f["path"]).parent == directory]
    hashes: dict[Path, str | None] = {}
    for path, digest, record in records:
        if path.suffix == ".pt":
            continue
        if path not in hashes:
            hashes[path] = file_sha256(path) if path.is_file() else None
        if hashes[path] != digest:
            problem = "is missing" if hashes[path] is None else "differs from its sha256 when written (corrupted or changed)"
            raise ModelFileError(f"{path} {problem}, as recorded in {record}: {fix}")
