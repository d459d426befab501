"""Pretraining: a tokenize stage directory and a PretrainConfig in, checkpoints in a run directory out.

The model family is a switch: gpt trains a causal LM (CLM), bert masked LM + next sentence prediction
(NSP), t5 span corruption, all from the same token shards. `run(job)` trains in this process;
`python -m llmcore.train.pretrain JOB.json` runs one torchrun worker of the same job.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from llmcore.config import PretrainConfig
from llmcore.data.loader import TokenLoader
from llmcore.data.tokens import TokenShardError
from llmcore.manifest import atomic_write_json, file_sha256, read_manifest
from llmcore.model import TransformerConfig, build_model
from llmcore.model.config import FAMILIES
from llmcore.model.io import load as load_model
from llmcore.objectives import make_objective
from llmcore.tokenizer import CONFIG_FILE, TOKENIZER_FILE
from llmcore.train import checkpoint, distributed
from llmcore.train.checks import TrainConfigError, check_fits
from llmcore.train.distributed import World, launch_command
from llmcore.train.metrics_log import METRICS, read_events
from llmcore.train.trainer import Callback, NonFiniteLoss, Trainer

log = logging.getLogger("llmcore.train")
OBJECTIVES = {"gpt": "clm", "bert": "nsp", "t5": "span"}
# part of the pretrain stage key: bump when training changes what a config produces (2: documents mixed across shards)
VERSION = 2


@dataclass
class PretrainJob:
    """Everything a training process needs, as paths and config: a JSON file for torchrun workers."""

    tokens: str     # the tokenize stage directory (its manifest describes the tokenizer)
    tokenizer: str  # the directory holding tokenizer.json
    run_dir: str    # checkpoints, metrics.jsonl, tb/, loss_curve.png
    config: PretrainConfig
    init: str | None = None  # a checkpoint directory whose weights training starts from (continual pretraining)

    def save(self, path: str | Path) -> Path:
        atomic_write_json(path, {"tokens": self.tokens, "tokenizer": self.tokenizer, "run_dir": self.run_dir,
                                 "config": self.config.model_dump(mode="json"), "init": self.init})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> PretrainJob:
        raw = json.loads(Path(path).read_text())
        return cls(raw["tokens"], raw["tokenizer"], raw["run_dir"], PretrainConfig.model_validate(raw["config"]), raw.get("init"))


def model_config(cfg: PretrainConfig, tokenizer: dict) -> TransformerConfig:
    """The TransformerConfig for `cfg` and the tokenizer (as a tokenize manifest describes it), or every
    reason it cannot work together."""
    m, problems = cfg.model, []
    if tokenizer["family"] != m.family:
        problems.append(f"the token shards were made with a {tokenizer['family']} tokenizer but pretrain.model.family is "
                        f"{m.family!r}: set data.tokenizer.family and pretrain.model.family to the same family")
    vocab = m.vocab_size or tokenizer["vocab_size"]
    if vocab < tokenizer["vocab_size"]:
        problems.append(f"the tokenizer has {tokenizer['vocab_size']} tokens but pretrain.model.vocab_size is {vocab}: ids "
                        f"from {vocab} on would index past the embedding; remove pretrain.model.vocab_size (it defaults "
                        f"to the tokenizer's) or raise it to at least {tokenizer['vocab_size']}")
    context = m.max_seq_len or cfg.block_size
    if (m.positions or FAMILIES[m.family]["positions"]) in ("learned", "sinusoidal") and cfg.block_size > context:
        problems.append(f"pretrain.block_size is {cfg.block_size} but the model's context (pretrain.model.max_seq_len) is "
                        f"{context} positions: lower block_size to {context} or raise max_seq_len to {cfg.block_size}")
    if problems:
        raise TrainConfigError("cannot pretrain with this configuration:\n  - " + "\n  - ".join(problems))
    ids = tokenizer["special_ids"]
    specials = {"pad_token_id": ids["pad"]}
    if m.family == "gpt":
        specials |= {"bos_token_id": ids["eos"], "eos_token_id": ids["eos"]}
    elif m.family == "t5":  # T5 starts decoding from the pad token
        specials |= {"eos_token_id": ids["eos"], "decoder_start_token_id": ids["pad"]}
    chosen = {k: v for k, v in m.model_dump().items()
              if k in ("n_decoder_layers", "d_ff", "positions", "activation") and v is not None}
    try:
        return TransformerConfig(family=m.family, vocab_size=vocab, d_model=m.d_model, n_heads=m.n_heads, n_layers=m.n_layers,
                                 max_seq_len=context, dropout=m.dropout, **chosen, **specials)
    except ValueError as exc:
        raise TrainConfigError(f"pretrain.model: {exc}") from None


def validation_loader(job: PretrainJob, objective, world: World) -> TokenLoader | None:
    """One pass over this rank's validation documents, in file order; None when there are none."""
    t = job.config.train
    try:
        return TokenLoader(job.tokens, objective, t.batch_size, split="validation", seed=t.seed, rank=world.rank,
                           world_size=world.size, epochs=1, shuffle=False)
    except (TokenShardError, ValueError) as exc:  # no validation shard, or none of its documents for this rank
        log.warning("no evaluation: %s", exc)
        return None


def check(job: PretrainJob, world: World | None = None) -> tuple[TransformerConfig, str, dict]:
    """Everything that can be refused before training, without allocating the model: the token stage, the
    tokenizer, model and data settings, and whether a micro-batch fits. Returns (model config, objective
    kind, the tokenizer as the tokenize manifest describes it)."""
    cfg, world = job.config, world or World()
    manifest = read_manifest(job.tokens)
    if manifest is None or "tokenizer" not in manifest:
        raise TokenShardError(f"{job.tokens} holds no finished tokenize stage (no manifest describing its tokenizer)")
    tokenizer = manifest["tokenizer"]
    tokenizer_file = Path(job.tokenizer) / TOKENIZER_FILE
    if not tokenizer_file.exists() or file_sha256(tokenizer_file) != tokenizer["sha256"]:
        raise TrainConfigError(f"{tokenizer_file} is not the tokenizer the token shards in {job.tokens} were made with "
                               "(missing, or its sha256 differs): point the job at that stage's tokenizer, or tokenize again")
    model_cfg = model_config(cfg, tokenizer)
    with torch.device("meta"):  # parameter counts without memory
        check_fits(build_model(model_cfg), cfg.train, cfg.block_size, world.size, world.local_rank)
    return model_cfg, OBJECTIVES[cfg.model.family] if cfg.objective == "auto" else cfg.objective, tokenizer


def run(job: PretrainJob, callbacks: Iterable[Callback] = (), world: World | None = None) -> dict:
    """Train (or resume) the job; returns the trainer's summary (final and best checkpoint paths...)."""
    t, world = job.config.train, world or World()
    model_cfg, kind, tokenizer = check(job, world)
    objective = make_objective(kind, tokenizer, job.config.block_size)
    train = TokenLoader(job.tokens, objective, t.batch_size, split="train", seed=t.seed, rank=world.rank, world_size=world.size)
    evaluation = validation_loader(job, objective, world)
    if evaluation is None and t.early_stopping.patience:
        raise TrainConfigError("train.early_stopping.patience is set but there is no validation split to measure: raise "
                               "data.tokenize.validation_fraction, or remove the patience")
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    model = build_model(model_cfg)
    if job.init:
        start = load_model(job.init)  # sha256-verified safetensors
        if start.config != model.config:
            raise TrainConfigError(f"{job.init} holds a model of another shape than pretrain.model: it cannot be continued")
        model.load_state_dict(start.state_dict())
    files = {name: Path(job.tokenizer) / name for name in (TOKENIZER_FILE, CONFIG_FILE) if (Path(job.tokenizer) / name).exists()}
    trainer = Trainer(model, t, job.run_dir, train, evaluation, seq_len=job.config.block_size, callbacks=callbacks,
                      files=files, world=world, info={"objective": kind},
                      label="pretrain")
    return trainer.fit()


def run_torchrun(job: PretrainJob, callback: Callback, run_id: str) -> dict:
    """The job on torchrun worker processes of this node, their metrics file followed into `callback` (which may
    raise to stop them) until they exit; returns the run's summary."""
    check(job)  # refuse a bad config here, before starting processes
    run_dir = Path(job.run_dir)
    job_file = job.save(run_dir / "job.json")
    metrics = run_dir / METRICS
    offset = metrics.stat().st_size if metrics.exists() else 0  # what earlier attempts wrote is already shown
    command = launch_command(job.config.train.distributed, "llmcore.train.pretrain", str(job_file), run_id=run_id)
    log.info("launching %s", " ".join(command))
    proc, events = subprocess.Popen(command), []
    try:
        while True:
            exited = proc.poll() is not None
            new, offset = read_events(metrics, offset)
            for event in new:
                callback(event)
            events += new
            if exited:
                break
            time.sleep(1.0)
    finally:
        if proc.poll() is None:  # the callback raised (an injected crash): take the workers down with it
            proc.kill()
            proc.wait()
    errors = [e for e in events if e["event"] == "error" and e.get("reason") == "non_finite_loss"]
    if errors:
        raise NonFiniteLoss(errors[-1]["message"])
    ends = [e for e in events if e["event"] == "end"]
    if proc.returncode != 0 or not ends:
        raise RuntimeError(f"torchrun exited with code {proc.returncode}; its workers' output is above. A retry resumes "
                           f"from the latest checkpoint in {checkpoint.root(run_dir)}")
    return {"step": ends[-1]["step"], **{k: v for k, v in ends[-1].items() if k not in ("event", "step", "time")}}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m llmcore.train.pretrain JOB.json  (or under torchrun)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    job = PretrainJob.load(args[0])
    d = job.config.train
    world = distributed.init(d.distributed.backend, None if d.device == "auto" else d.device)
    try:
        summary = run(job, world=world)
    finally:
        distributed.shutdown()
    if world.main:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
