"""The training loop shared by pretraining and fine-tuning.

`Trainer(model, cfg, run_dir, train_data, eval_data).fit()` trains `model` (an llmcore Transformer
whose forward returns `.loss` for the batch dicts of `train_data`) for `cfg.max_steps` optimizer steps,
resuming from the latest valid checkpoint in `run_dir` if there is one. `train_data` is an iterator of
batches with `state_dict()` / `load_state_dict()` (a `TokenLoader`); `eval_data` an iterable of batches.

Progress goes out as event dicts (see `metrics_log`) to `metrics.jsonl`, TensorBoard, a PNG, the log,
a terminal progress bar, and to `callbacks`: whatever watches the run (a Prefect task's artifacts) plugs in
there, so llmcore never imports an orchestrator.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from llmcore.config import TrainConfig
from llmcore.model import Block, Transformer
from llmcore.model.io import save_state
from llmcore.train import checkpoint
from llmcore.train.distributed import World, all_reduce, barrier, from_main, wrap
from llmcore.train.metrics_log import MetricsLog, describe, now
from llmcore.train.mfu import flops_per_token, peak_flops
from llmcore.train.optim import build_optimizer, build_scheduler
from llmcore.train.runtime import autocast, configure, pick_device, resolve_precision

log = logging.getLogger("llmcore.train")
Callback = Callable[[dict], None]
METRICS = ("val_loss", "val_ppl")


class Evaluator(Protocol):
    """Extra validation metrics of the (bare) model, computed on every rank at each evaluation."""

    metrics: tuple[str, ...]

    def __call__(self, model: torch.nn.Module) -> dict[str, float]: ...


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the weights were not updated with it."""


def checkpoint_layers(model: torch.nn.Module) -> None:
    """Activation checkpointing: each layer keeps only its input and recomputes the rest in the backward
    pass. Wrapping `forward` (not the module) leaves parameter names, hence checkpoints, unchanged."""
    from torch.utils.checkpoint import checkpoint as recompute

    for block in (m for m in model.modules() if isinstance(m, Block)):
        block.forward = functools.partial(recompute, block.forward, use_reentrant=False)


class Trainer:
    def __init__(self, model: Transformer, cfg: TrainConfig, run_dir: str | Path, train_data: Iterator[dict],
                 eval_data: Iterable[dict] | None = None, *, seq_len: int, callbacks: Iterable[Callback] = (),
                 files: dict[str, Path] | None = None, world: World = World(), info: dict | None = None,
                 evaluator: Evaluator | None = None, lr_scales: dict[str, float] | None = None, label: str = "train"):
        """seq_len: tokens per example (for MFU); files: copied into every checkpoint (the tokenizer); label: what
        the progress bar says the run is (pretrain, finetune <task>);
        info: extra fields of the start event; evaluator: more validation metrics (BLEU from decoding, ...)
        whose names early stopping can use; lr_scales: parameter-name prefix -> multiplier of cfg.lr."""
        measured = [*METRICS, *(evaluator.metrics if evaluator else ())]
        if cfg.early_stopping.metric not in measured:
            raise ValueError(f"train.early_stopping.metric {cfg.early_stopping.metric!r} is not measured; use one of {measured}")
        self.evaluator = evaluator
        self.cfg, self.run_dir, self.world = cfg, Path(run_dir), world
        self.seq_len, self.files, self.info, self.label = seq_len, files or {}, info or {}, label
        self.device = pick_device(cfg.device, world.local_rank)
        self.precision = from_main(resolve_precision(cfg.precision, self.device, model, (cfg.batch_size, seq_len))
                                   if world.main else None)
        self._was_deterministic = torch.are_deterministic_algorithms_enabled()
        configure(self.device, cfg.deterministic)
        self.module = model.to(self.device)
        if cfg.activation_checkpointing:
            checkpoint_layers(self.module)
        self.fsdp = world.size > 1 and cfg.distributed.strategy == "fsdp"
        self.model = wrap(self.module, cfg.distributed.strategy, self.device, world)
        self.ddp = self.model if isinstance(self.model, torch.nn.parallel.DistributedDataParallel) else None
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.optimizer = build_optimizer(self.module, cfg, self.device, lr_scales)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.train_data = train_data
        self.eval_batches = self._eval_batches(eval_data)
        self.step = self.tokens = self.bad_evals = 0
        self.best: tuple[float, int] | None = None  # (value, step) of the best evaluation so far
        self.resumed_from = self._resume()
        if not self.resumed_from:
            torch.manual_seed(cfg.seed + world.rank)  # dropout masks differ between ranks
        self.flops_per_token = flops_per_token(self.module, seq_len)
        self.peak = cfg.peak_tflops * 1e12 if cfg.peak_tflops else peak_flops(self.device, self.precision)
        self.callbacks: list[Callback] = []
        if world.main:
            self.metrics = MetricsLog(self.run_dir, self.step)
            self.callbacks = [self.metrics, *callbacks]

    # ------------------------------------------------------------------------------------------ loop

    def fit(self) -> dict:
        """Train to max_steps (or until early stopping); returns the run's summary."""
        cfg = self.cfg
        self.emit("start", family=self.module.config.family, params=self.module.num_parameters(), device=str(self.device),
                  precision=self.precision, world_size=self.world.size, max_steps=cfg.max_steps, resumed_from=self.resumed_from,
                  tokens_per_step=cfg.batch_size * self.seq_len * cfg.grad_accum * self.world.size,
                  eval_batches=len(self.eval_batches), **self.info)
        reason = "early_stopping" if self._patience_spent() else "max_steps"
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc=self.label, unit="step", dynamic_ncols=True,
                   disable=None if self.world.main else True)  # None: shown on a terminal only
        losses, tokens, seconds = [], 0, 0.0
        redirect = logging_redirect_tqdm()  # log lines print above the bar instead of tearing it
        redirect.__enter__()
        try:
            while self.step < cfg.max_steps and reason != "early_stopping":
                started = time.perf_counter()
                loss, lr, grad_norm, step_tokens = self.train_step()
                seconds += time.perf_counter() - started
                self.step, self.tokens = self.step + 1, self.tokens + step_tokens
                losses.append(loss)
                tokens += step_tokens
                bar.update(1)
                last = self.step == cfg.max_steps
                if self.step % cfg.log_every == 0 or last:
                    mean = torch.stack(losses).mean().item()
                    bar.set_postfix(loss=f"{mean:.3f}", refresh=False)
                    self._log_train(mean, lr, None if grad_norm is None else float(grad_norm), tokens / seconds)
                    losses, tokens, seconds = [], 0, 0.0
                improved = False
                if self.eval_batches and (self.step % cfg.eval_every == 0 or last):
                    improved = self.evaluate()
                    reason = "early_stopping" if self._patience_spent() else reason
                if self.step % cfg.checkpoint_every == 0 or last or reason == "early_stopping" or (improved and cfg.save_best):
                    self.save()
            final = checkpoint.latest(self.run_dir)
            best = checkpoint.step_dir(self.run_dir, self.best[1]) if self.best else None
            summary = {"step": self.step, "reason": reason, "tokens": self.tokens, "final": str(final),
                       "best": str(best) if best and (best / checkpoint.MARKER).exists() else None,
                       "best_step": self.best[1] if self.best else None, "best_value": self.best[0] if self.best else None,
                       "metric": cfg.early_stopping.metric, "resumed_from": self.resumed_from}
            self.emit("end", **{k: v for k, v in summary.items() if k != "step"})
            return summary
        finally:
            bar.close()
            redirect.__exit__(None, None, None)
            self.close()

    def train_step(self) -> tuple[torch.Tensor, float, torch.Tensor | None, int]:
        """One optimizer step over grad_accum micro-batches: (loss, lr, grad norm, tokens in all ranks); loss and
        norm stay on the device, so that a GPU step does not wait for the host unless it must (`_checks`)."""
        cfg = self.cfg
        total, tokens = torch.zeros((), device=self.device), 0
        for micro in range(cfg.grad_accum):
            batch = self._next_batch()
            tokens += batch["input_ids"].numel()
            with self._grad_sync(micro == cfg.grad_accum - 1):
                with autocast(self.device, self.precision):
                    loss = self.model(**batch).loss
                self.scaler.scale(loss / cfg.grad_accum).backward()
            total += loss.detach()
        loss = all_reduce(total / cfg.grad_accum)
        if self._checks(self.step + 1) and not math.isfinite(value := loss.item()):
            self._stop_non_finite(value)
        self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if cfg.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.grad_clip)
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # a DTensor under FSDP
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, lr, grad_norm, tokens * self.world.size

    def evaluate(self) -> bool:
        """Loss on the validation batches (all ranks), early-stopping bookkeeping; True if the metric improved."""
        self.module.eval()  # the bare module: under DDP it needs no collective, under FSDP it is the sharded one
        sums = torch.zeros(2, device=self.device, dtype=torch.float64)
        with torch.no_grad(), autocast(self.device, self.precision):
            for batch in self.eval_batches:
                n = batch["input_ids"].shape[0]
                sums += torch.stack([self.module(**batch).loss.double() * n, sums.new_tensor(n)])
        self.module.train()
        all_reduce(sums, "sum")
        val_loss = (sums[0] / sums[1]).item()
        metrics = {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 700.0))}
        if self.evaluator:
            metrics |= self.evaluator(self.module)
        es = self.cfg.early_stopping
        value = metrics[es.metric]
        improved = self.best is None or (value < self.best[0] - es.min_delta if es.mode == "min" else value > self.best[0] + es.min_delta)
        if improved:
            self.best, self.bad_evals = (value, self.step), 0
        else:
            self.bad_evals += 1
        self.emit("eval", **metrics, improved=improved, best_step=self.best[1], best_value=self.best[0],
                  bad_evals=self.bad_evals, patience=es.patience)
        return improved

    def _checks(self, step: int) -> bool:
        """Whether step `step` reads its loss on the host, before its optimizer step, to stop on NaN: every step on
        a CPU (where it is free); on a GPU the steps that log, evaluate or save, so no checkpoint ever holds
        weights that a non-finite loss touched, and the GPU does not wait for the host in between."""
        cfg = self.cfg
        return (self.device.type == "cpu" or step == cfg.max_steps
                or any(step % n == 0 for n in (cfg.log_every, cfg.eval_every, cfg.checkpoint_every)))

    def _patience_spent(self) -> bool:
        patience = self.cfg.early_stopping.patience
        return patience is not None and self.bad_evals >= patience

    def _next_batch(self) -> dict[str, torch.Tensor]:
        try:
            batch = next(self.train_data)
        except StopIteration:
            raise RuntimeError(f"the training data ran out at step {self.step}; give the loader epochs=None (endless)") from None
        return self._to_device(batch)

    def _to_device(self, batch: dict) -> dict[str, torch.Tensor]:
        if self.device.type == "cuda":  # from pinned memory the copy is asynchronous
            return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
        return batch

    @contextmanager
    def _grad_sync(self, sync: bool):
        """Gradients are reduced across ranks on the last micro-batch of a step only."""
        if self.ddp is not None and not sync:
            with self.ddp.no_sync():
                yield
            return
        if self.fsdp:
            self.module.set_requires_gradient_sync(sync)
        yield

    def _eval_batches(self, eval_data: Iterable[dict] | None) -> list[dict]:
        """The validation batches, read once; every rank keeps as many as the one with fewest (FSDP's
        collectives need all ranks in every forward)."""
        if eval_data is None:
            return []
        batches = [self._to_device(b) for b in itertools.islice(eval_data, self.cfg.eval_batches)]
        count = int(all_reduce(torch.tensor([len(batches)], device=self.device), "min").item())
        return batches[:count]

    def _stop_non_finite(self, loss: float) -> None:
        last = checkpoint.latest(self.run_dir)
        message = (f"the training loss is {loss} at step {self.step + 1}; stopped before that step's update, and no "
                   f"checkpoint holds weights a non-finite loss touched. Last good checkpoint: {last or 'none yet'}. Lower train.lr, raise "
                   "train.warmup_steps, keep train.grad_clip set, or try train.precision: fp32; a rerun resumes from that checkpoint.")
        self.emit("error", reason="non_finite_loss", message=message)
        raise NonFiniteLoss(message)

    def _log_train(self, loss: float, lr: float, grad_norm: float | None, tokens_per_s: float) -> None:
        mfu = tokens_per_s * self.flops_per_token / (self.peak * self.world.size) if self.peak else None
        epoch = getattr(self.train_data, "epoch", None)
        self.emit("train", max_steps=self.cfg.max_steps, loss=loss, lr=lr, grad_norm=grad_norm, tokens=self.tokens,
                  tokens_per_s=tokens_per_s, mfu=mfu, epoch=epoch)

    def emit(self, kind: str, **fields) -> None:
        if not self.world.main:
            return
        event = {"event": kind, "step": self.step, "time": now(), **fields}
        for callback in self.callbacks:
            callback(event)
        log.info(describe(event))

    def close(self) -> None:
        torch.use_deterministic_algorithms(self._was_deterministic)  # a global switch: leave it as found
        if self.world.main:
            self.metrics.close()

    # ------------------------------------------------------------------------------------ checkpoints

    def save(self) -> Path:
        """A checkpoint of this step (all ranks take part; the marker is written last, by rank 0)."""
        directory = checkpoint.step_dir(self.run_dir, self.step)
        if self.world.main:
            checkpoint.prepare(directory)
        barrier()
        weights, optimizer = self._full_state()
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        checkpoint.write_state(checkpoint.rank_file(directory, self.world.rank), {"rng": rng, "data": self.train_data.state_dict()})
        if self.world.main:
            save_state(self.module.config, weights, directory)
            for name, source in self.files.items():
                shutil.copyfile(source, directory / name)
            checkpoint.write_state(directory / checkpoint.TRAINER_STATE, {
                "step": self.step, "tokens": self.tokens, "optimizer": optimizer, "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "best": list(self.best) if self.best else None, "bad_evals": self.bad_evals,
            })
        barrier()
        if self.world.main:
            checkpoint.commit(directory, {"step": self.step, "world_size": self.world.size, "time": now(),
                                          "best_step": self.best[1] if self.best else None})
            checkpoint.prune(self.run_dir, self.cfg.keep_checkpoints, self.best[1] if self.best else None)
            self.emit("checkpoint", path=str(directory))
        return directory

    def _full_state(self) -> tuple[dict, dict]:
        if self.fsdp:  # gather the shards: full tensors on rank 0's CPU
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return (get_model_state_dict(self.module, options=options),
                    get_optimizer_state_dict(self.module, self.optimizer, options=options))
        return self.module.state_dict(), self.optimizer.state_dict()

    def _resume(self) -> int:
        """Restore everything from the latest intact checkpoint; returns its step (0: none, a fresh start)."""
        directory = from_main(checkpoint.latest_intact(self.run_dir) if self.world.main else None)  # rank 0 hashes
        if directory is None:
            return 0
        marker = checkpoint.read_marker(directory)
        if marker["world_size"] != self.world.size:
            raise ValueError(f"{directory} was written by {marker['world_size']} process(es), this run has {self.world.size}: "
                             "resume with the same train.distributed settings (the data order depends on them)")
        saved = json.loads((directory / "config.json").read_text())
        if saved != self.module.config.to_dict():
            changed = sorted(k for k in saved if saved[k] != self.module.config.to_dict().get(k))
            raise ValueError(f"{directory} holds a model with other settings ({', '.join(changed)}); "
                             f"use a new run directory, or delete {self.run_dir / 'checkpoints'} to start over")
        weights = load_file(directory / "model.safetensors", device="cpu")
        state = checkpoint.read_state(directory / checkpoint.TRAINER_STATE)
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

            options = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.module, weights, options=options)
            set_optimizer_state_dict(self.module, self.optimizer, state["optimizer"], options=options)
        else:
            self.module.load_state_dict(weights)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.tokens, self.bad_evals = state["step"], state["tokens"], state["bad_evals"]
        self.best = tuple(state["best"]) if state["best"] else None
        mine = checkpoint.read_state(checkpoint.rank_file(directory, self.world.rank))
        torch.set_rng_state(mine["rng"]["cpu"])
        if "cuda" in mine["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["rng"]["cuda"], self.device)
        self.train_data.load_state_dict(mine["data"])
        return self.step
