"""The pretrain task: trains in this process, or launches torchrun and follows its metrics file, and shows
the run in the Prefect UI while it trains: a progress artifact, a table of evaluation metrics and the
loss curve (a PNG embedded in a markdown artifact: the UI renders that, not inline SVG).

A retry of a failed attempt (an OOM, a lost node) resumes from the run's latest checkpoint: it costs the
steps since that checkpoint, not the whole run.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.runtime import task_run

from llmcore.data.tokens import TokenShardError
from llmcore.locks import once
from llmcore.manifest import MANIFEST, describe_file, relative_paths
from llmcore.stage import StageRef, write_manifest
from llmcore.train import pretrain
from llmcore.train.checks import TrainConfigError
from llmcore.train.metrics_log import CURVE, METRICS, describe, latest_by_step, now, read_events
from llmcore.train.trainer import NonFiniteLoss
from tasks.common import PERMANENT, STAGE_TASK, maybe_fail, retry_unless

CRASH_ENV = "LLMPIPE_CRASH_AT_STEP"  # tests: the first attempt dies at this step (a preempted node), the retry resumes


class InjectedCrash(RuntimeError):
    """A first attempt killed on purpose at the step in $LLMPIPE_CRASH_AT_STEP; retried like a real crash."""


# Retry crashes; a refused configuration, NaN loss or bad shards would fail the same way again.
_worth_retrying = retry_unless(*PERMANENT, TrainConfigError, NonFiniteLoss, TokenShardError)


def _crash_due(event: dict) -> bool:
    step = os.environ.get(CRASH_ENV)
    return bool(step) and event["event"] == "train" and event["step"] >= int(step) and task_run.run_count <= 1


class Reporter:
    """A trainer callback: log lines, and Prefect artifacts that stay one per run: a progress artifact updated in
    place (step, loss, latest evaluation, ETA; throttled so a fast loop does not flood the API), then the
    evaluation table and the loss curve once, when the run ends."""

    def __init__(self, run_dir: Path, label: str = "pretrain", every_s: float = 2.0, log_every_s: float = 30.0):
        """label: what the run is (pretrain, finetune-<name>); it prefixes the artifact keys. Training steps are
        logged at most every `log_every_s` (evaluations, start and end always)."""
        self.run_dir, self.label, self.every_s, self.log_every_s = run_dir, label, every_s, log_every_s
        self.logged = 0.0
        self.logger = get_run_logger()
        self.progress = None
        self.max_steps, self.first_step, self.started = 1, 0, time.monotonic()
        self.updated = 0.0
        self.loss, self.evaluation = None, ""  # the latest ones, still shown once the run has ended

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind != "train" or time.monotonic() - self.logged >= self.log_every_s:  # metrics.jsonl has every step
            (self.logger.error if kind == "error" else self.logger.info)(describe(event))
            self.logged = time.monotonic() if kind == "train" else self.logged
        if kind == "train":
            self.loss = event["loss"]
        if kind == "start":
            self.max_steps, self.first_step, self.started = event["max_steps"], event["step"], time.monotonic()
            self.progress = create_progress_artifact(self._percent(event), description=self._status(event))
        elif kind == "eval" or (kind == "train" and time.monotonic() - self.updated >= self.every_s):
            if kind == "eval":
                self.evaluation = ", ".join(f"{k} {readable(v)}" for k, v in event.items()
                                            if k.startswith("val_") or k in ("bleu", "rougeL", "f1"))
            self._update(event)
        elif kind == "end":
            update_progress_artifact(self.progress, 100.0, description=self._status(event))
            self._eval_table()
            self._curve()
        if _crash_due(event):
            raise InjectedCrash(f"crashed on purpose at step {event['step']} ({CRASH_ENV})")

    def _percent(self, event: dict) -> float:
        return round(100.0 * event.get("step", self.max_steps) / self.max_steps, 1)

    def _status(self, event: dict) -> str:
        step = event.get("step", self.max_steps)
        parts = [f"{self.label}: step {step}/{self.max_steps}"]
        if self.loss is not None:
            parts.append(f"loss {readable(self.loss)}")
        if self.evaluation:
            parts.append(self.evaluation)
        done = step - self.first_step
        if event["event"] != "end" and done > 0:
            eta = (time.monotonic() - self.started) / done * (self.max_steps - step)
            parts.append(f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")
        return ", ".join(parts)

    def _update(self, event: dict) -> None:
        if self.progress is not None:
            update_progress_artifact(self.progress, self._percent(event), description=self._status(event))
        self.updated = time.monotonic()

    def _eval_table(self) -> None:
        rows = [{k: readable(v) for k, v in e.items() if k not in ("event", "time", "patience", "best_value")}
                for e in latest_by_step(read_events(self.run_dir / METRICS)[0], "eval")]
        if rows:
            create_table_artifact(rows, key=f"{self.label}-eval", description=f"Evaluations of {self.run_dir}")

    def _curve(self) -> None:
        path = self.run_dir / CURVE
        if path.exists():
            png = base64.b64encode(path.read_bytes()).decode()
            create_markdown_artifact(f"## Loss curve\n\n![loss curve](data:image/png;base64,{png})\n\n`{path}`",
                                     key=f"{self.label}-loss-curve", description="training and validation loss against steps")


def readable(value):
    """4 significant digits for a person to read (8.4275652885437 -> 8.428, 4907.4 -> 4907); other values as they are."""
    if not isinstance(value, float):
        return value
    rounded = float(f"{value:.4g}")
    return int(rounded) if rounded.is_integer() else rounded


def pretrain_manifest(run_dir: Path, key: str, job: pretrain.PretrainJob, settings: dict, corpus: dict, summary: dict) -> dict:
    """The pretrain stage manifest: the final checkpoint's files (sha256), the best one, the run's summary, and what
    it trained on (`corpus`: the tokenize stage and its parts, the tokenizer, the model it continued from).
    `settings`: the config as it enters keys (a continued run trains with fewer steps than it says)."""
    final = Path(summary["final"])
    ref = StageRef(str(run_dir.parent.parent), run_dir.parent.name, key)
    return write_manifest(
        ref, settings, [corpus["key"]], [describe_file(p, run_dir, 0) for p in sorted(final.iterdir()) if p.is_file()],
        checkpoint=str(final.relative_to(run_dir)),
        best=str(Path(summary["best"]).relative_to(run_dir)) if summary["best"] else None,
        corpus=corpus, steps=job.config.train.max_steps,
        metrics=METRICS, loss_curve=CURVE, tensorboard="tb", summary=relative_paths(summary, run_dir), finished=now(),
    )


@task(name="pretrain", task_run_name="pretrain-{key}", **{**STAGE_TASK, "retry_condition_fn": _worth_retrying})
def pretrain_task(data_root: str, stage: str, key: str, job: pretrain.PretrainJob, settings: dict, corpus: dict) -> str:
    """Train (or resume) `job` (its run directory: `<data_root>/<stage>/<key>`); returns the checkpoint manifest's path."""
    run_dir = Path(data_root) / stage / key
    if not (run_dir / MANIFEST).exists():
        maybe_fail(stage)

        def work() -> None:
            reporter = Reporter(run_dir)
            many = job.config.train.distributed.world_size > 1
            summary = pretrain.run_torchrun(job, reporter, key) if many else pretrain.run(job, callbacks=[reporter])
            pretrain_manifest(run_dir, key, job, settings, corpus, summary)

        once(run_dir / MANIFEST, work)  # an overlapping run waits, then finds the finished model
    return str(run_dir / MANIFEST)
