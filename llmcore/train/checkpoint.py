"""Checkpoint directories: `<run_dir>/checkpoints/step-NNNNNNNN/` holds `model.safetensors`
+ `config.json` (+ the tokenizer files), `trainer_state.pt` (optimizer, scheduler, step, best metric)
and one `rank-NNNNN.pt` per process (RNG states, data loader position), all loaded with
`torch.load(weights_only=True)`. A checkpoint is valid iff its `checkpoint.json` exists: written last,
atomically, so a process killed mid-save leaves an invalid directory that resume skips. The marker records
each file's sha256; resume checks them and sets a damaged checkpoint aside (`step-NNNNNNNN.damaged`, kept
for inspection) with a warning naming the file, resuming from the one before, or from scratch when none
is intact: a damaged file would fail the same way on every retry, and the steps are recomputable.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from llmcore.manifest import atomic_write_json, commit_file, file_sha256, temp_path_for

log = logging.getLogger("llmcore.train")
MARKER = "checkpoint.json"
TRAINER_STATE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_dir(run_dir: str | Path, step: int) -> Path:
    return root(run_dir) / f"step-{step:08d}"


def rank_file(directory: Path, rank: int) -> Path:
    return directory / f"rank-{rank:05d}.pt"


def _steps(run_dir: str | Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in root(run_dir).glob("step-*") if (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def valid(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, directory) of every complete checkpoint, oldest first."""
    return [(s, p) for s, p in _steps(run_dir) if (p / MARKER).exists()]


def latest(run_dir: str | Path) -> Path | None:
    found = valid(run_dir)
    return found[-1][1] if found else None


def read_marker(directory: Path) -> dict:
    return json.loads((directory / MARKER).read_text())


def prepare(directory: Path) -> None:
    """An empty directory for a new checkpoint (debris of an interrupted save of the same step goes)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = temp_path_for(path)
    torch.save(state, tmp)
    commit_file(tmp, path)


def read_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from a checkpoint marked complete; delete {path.parent} to resume from the one before")
    return torch.load(path, map_location="cpu", weights_only=True)


def commit(directory: Path, info: dict) -> None:
    files = sorted(p.name for p in directory.iterdir() if p.is_file())
    atomic_write_json(directory / MARKER, {**info, "files": files, "sha256": {f: file_sha256(directory / f) for f in files}})


def damage(directory: Path) -> str | None:
    """What is wrong with a checkpoint marked complete (a file missing, or unlike its sha256 at save time);
    None when it is intact. Markers written before hashes were recorded are checked for presence only."""
    try:
        marker = read_marker(directory)
    except ValueError as exc:
        return f"{directory / MARKER} is not valid JSON ({exc})"
    for name in marker["files"]:
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        if name in marker.get("sha256", {}) and file_sha256(path) != marker["sha256"][name]:
            return f"{path} differs from its sha256 at save time (truncated or corrupted)"
    return None


def latest_intact(run_dir: str | Path) -> Path | None:
    """The newest valid checkpoint whose files are intact; damaged ones on the way are set aside."""
    damaged = False
    for _, directory in reversed(valid(run_dir)):
        problem = damage(directory)
        if problem is None:
            return directory
        aside = directory.with_name(f"{directory.name}.damaged")
        shutil.rmtree(aside, ignore_errors=True)
        directory.rename(aside)
        damaged = True
        log.warning("checkpoint %s is damaged: %s; moved it to %s (delete it once inspected), trying the checkpoint "
                    "before", directory, problem, aside)
    if damaged:
        log.warning("no intact checkpoint left in %s: training starts again from step 0", root(run_dir))
    return None


def prune(run_dir: str | Path, keep: int, protect: int | None = None) -> list[int]:
    """Delete all but the `keep` newest valid checkpoints (and `protect`, the best one) and the debris of
    interrupted saves older than the newest valid one; returns the steps deleted. The marker goes first,
    so a crash mid-delete leaves an invalid directory, never a valid-looking partial one."""
    steps = valid(run_dir)
    if not steps:
        return []
    kept = {s for s, _ in steps[-keep:]} | {protect}
    newest = steps[-1][0]
    doomed = [(s, p) for s, p in _steps(run_dir) if s not in kept and s < newest]
    for _, path in doomed:
        (path / MARKER).unlink(missing_ok=True)
        shutil.rmtree(path)
    return [s for s, _ in doomed]
