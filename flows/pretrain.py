"""The pretrain flow: token shards (a tokenize stage) + a PretrainConfig -> a checkpoint manifest.

The stage key hashes the config's output-changing fields and what the model trains on, so a finished
model is reused by any rerun, and a retry of a crashed training task resumes from its latest checkpoint.
When the corpus grew since this root's last model with the same settings and tokenizer (its token
parts are a subset of today's), `pretrain.on_new_data` decides: `continue` that model over the new
parts only, with steps in proportion to their tokens; `restart` on the whole corpus; `skip` (keep it).
"""

from __future__ import annotations

import math
import os

from prefect import flow, get_run_logger

from flows.data import DEFAULT_DATA_ROOT
from llmcore.config import PretrainConfig
from llmcore.data.stage import LAYOUT
from llmcore.data.tokens import split_totals
from llmcore.housekeeping import point
from llmcore.stage import StageRef, content_key, key_config, latest
from llmcore.train.pretrain import VERSION, PretrainJob
from tasks import stages
from tasks.common import bind, tagged
from tasks.train import pretrain_task


def _parts(manifest: dict) -> list[tuple[str, str]]:
    return [(name, info["key"]) for name, info in manifest["parts"].items()]


def continued(config: PretrainConfig, base: dict, new: list[tuple[str, str]], tokens: StageRef,
              run_dir: str) -> tuple[PretrainJob, StageRef]:
    """The job that continues `base` over the `new` token parts (a tokenize stage of their own), with as many
    steps per token as the config gives the whole corpus."""
    root, manifest = tokens.root, tokens.manifest()
    delta_key = content_key("tokenize-new", LAYOUT, [key for _, key in new])
    bind(stages.finalize, root)(root, "tokenize", delta_key, new, manifest["config"], [manifest["key"]], None,
                                {"tokenizer": manifest["tokenizer"], "new_parts_of": manifest["key"]})
    delta = StageRef(root, "tokenize", delta_key)
    share = split_totals(delta.manifest())["train"]["tokens"] / max(1, split_totals(manifest)["train"]["tokens"])
    t = config.train
    steps = max(1, math.ceil(t.max_steps * share))
    train = t.model_copy(update={"max_steps": steps, "warmup_steps": min(t.warmup_steps, steps // 10),
                                 "eval_every": min(t.eval_every, steps), "checkpoint_every": min(t.checkpoint_every, steps)})
    base_dir = StageRef(root, "pretrain", base["key"]).path
    job = PretrainJob(str(delta.path), str(StageRef(root, "tokenizer", manifest["tokenizer"]["key"]).path), run_dir,
                      config.model_copy(update={"train": train}), str(base_dir / base["checkpoint"]))
    return job, delta


@flow(name="pretrain", persist_result=True, result_serializer="json")
def pretrain_flow(config: PretrainConfig, tokens_manifest: str, data_root: str = DEFAULT_DATA_ROOT) -> str:
    """Pretrain on the tokenize stage whose manifest is `tokens_manifest`; returns the pretrain manifest's path.
    The run and its task run are tagged `llmpipe` and `root:<data root>`, however it was started."""
    root, logger = os.path.abspath(data_root), get_run_logger()
    tokens = StageRef.of(tokens_manifest)
    manifest = tokens.manifest()
    settings, tokenizer = key_config(config), manifest["tokenizer"]["key"]
    corpus = {"key": manifest["key"], "parts": [key for _, key in _parts(manifest)], "tokenizer": tokenizer}
    base_ref = latest(root, "pretrain", {"config": settings}) if config.on_new_data != "restart" else None
    base = base_ref.manifest() if base_ref else None
    tokenizer_dir = str(StageRef(root, "tokenizer", tokenizer).path)
    key = content_key("pretrain", VERSION, settings, manifest["key"])
    job = PretrainJob(str(tokens.path), tokenizer_dir, str(StageRef(root, "pretrain", key).path), config)
    if base and base["corpus"]["tokenizer"] == tokenizer and set(base["corpus"]["parts"]) <= set(corpus["parts"]):
        new = [(name, k) for name, k in _parts(manifest) if k not in set(base["corpus"]["parts"])]
        if not new or config.on_new_data == "skip":  # the model of this corpus, or the one it keeps: Cached
            logger.info("pretrain: %s (%d new token parts; on_new_data: %s)", base_ref.path, len(new), config.on_new_data)
            key, corpus = base["key"], base["corpus"]
        else:
            key = content_key("pretrain", VERSION, settings, "continue", base["key"], [k for _, k in new])
            job, delta = continued(config, base, new, tokens, str(StageRef(root, "pretrain", key).path))
            logger.info("pretrain: continuing %s over %d new token parts (%s), %d steps", base_ref.path, len(new),
                        delta.path, job.config.train.max_steps)
            corpus |= {"continued_from": base["key"], "trained_on": delta.key}
    with tagged("llmpipe", f"root:{root}"):
        path = bind(pretrain_task, root)(root, "pretrain", key, job, settings, corpus)
    point(StageRef.of(path))
    done = StageRef.of(path).manifest()
    logger.info("model: %s (best: %s)", StageRef.of(path).path / done["checkpoint"], done["best"])
    return path
