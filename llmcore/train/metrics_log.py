"""What a run leaves to watch: `metrics.jsonl` (one event per line), TensorBoard event files under `tb/`,
and `loss_curve.png` (training and validation loss against steps).

Events are dicts with `event` = start | train | eval | checkpoint | error | end, and `step`. A resumed run
appends after the events of the run it resumes, so a step can appear twice: the later record wins.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from llmcore.manifest import commit_file, temp_path_for

METRICS = "metrics.jsonl"
CURVE = "loss_curve.png"
TB_DIR = "tb"
_TB_SCALARS = {"train": ("loss", "lr", "grad_norm", "tokens_per_s", "mfu"), "eval": ("val_loss", "val_ppl")}


class MetricsLog:
    """A trainer callback (rank 0) writing the run directory's metrics."""

    def __init__(self, run_dir: str | Path, resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.run_dir / METRICS, "a", encoding="utf-8")
        # purge_step: TensorBoard hides what a killed run logged after the checkpoint this run resumes from
        self.tb = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=resume_step + 1 if resume_step else None)

    def __call__(self, event: dict) -> None:
        self.jsonl.write(json.dumps(event) + "\n")
        self.jsonl.flush()
        kind, step = event["event"], event.get("step", 0)
        for name in _TB_SCALARS.get(kind, ()):
            if event.get(name) is not None:
                self.tb.add_scalar(f"{kind}/{name}", event[name], step)
        if kind in ("eval", "end"):
            self.tb.flush()
            plot_losses(read_events(self.run_dir / METRICS)[0], self.run_dir / CURVE)

    def close(self) -> None:
        if not self.jsonl.closed:
            self.tb.close()
            self.jsonl.close()


def read_events(path: str | Path, offset: int = 0) -> tuple[list[dict], int]:
    """The complete lines of a metrics file from byte `offset` on, and the offset after them: a follower
    calls it again with that offset to get only what was written since."""
    path = Path(path)
    if not path.exists():
        return [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
    return [json.loads(line) for line in data[:end].splitlines() if line.strip()], offset + end


def latest_by_step(events: list[dict], kind: str) -> list[dict]:
    """The `kind` events in step order, a step logged twice (before a crash, after resume) taken from its last record."""
    return [e for _, e in sorted({e["step"]: e for e in events if e["event"] == kind}.items())]


def plot_losses(events: list[dict], path: Path) -> Path | None:
    """Training and validation loss against steps, as a small PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    train = [e for e in latest_by_step(events, "train") if e.get("loss") is not None and math.isfinite(e["loss"])]
    val = latest_by_step(events, "eval")
    if not train and not val:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=90)
    if train:
        ax.plot([e["step"] for e in train], [e["loss"] for e in train], ".-" if len(train) < 30 else "-", label="train", lw=1.2, ms=4)
    if val:
        ax.plot([e["step"] for e in val], [e["val_loss"] for e in val], "o-", label="validation", lw=1.5, ms=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = temp_path_for(path)
    fig.savefig(tmp, format="png")
    plt.close(fig)
    commit_file(tmp, path)
    return path


def describe(event: dict) -> str:
    """One log line per event."""
    kind, step = event["event"], event.get("step")
    if kind == "train":
        parts = [f"step {step}/{event['max_steps']}", f"loss {event['loss']:.4f}", f"lr {event['lr']:.2e}"]
        if event.get("grad_norm") is not None:
            parts.append(f"grad norm {event['grad_norm']:.3f}")
        parts.append(f"{event['tokens_per_s']:,.0f} tok/s")
        if event.get("mfu") is not None:
            parts.append(f"MFU {100 * event['mfu']:.2f}%")
        return " | ".join(parts)
    if kind == "eval":
        best = f" (best {event['best_value']:.4f} at step {event['best_step']})" if event.get("best_step") is not None else ""
        return f"step {step}: val_loss {event['val_loss']:.4f}, val_ppl {event['val_ppl']:.2f}{best}"
    if kind == "start":
        return (f"training {event['family']} ({event['params']:,} parameters) on {event['device']} in {event['precision']}, "
                f"{event['world_size']} process(es), {event['tokens_per_step']:,} tokens per step, steps {step} -> "
                f"{event['max_steps']}" + (f", resumed from {event['resumed_from']}" if event.get("resumed_from") else ""))
    if kind == "checkpoint":
        return f"step {step}: checkpoint {event['path']}"
    if kind == "end":
        return f"finished at step {step} ({event['reason']}): final {event['final']}, best {event.get('best')}"
    return f"step {step}: {event.get('message', kind)}"


def now() -> float:
    return round(time.time(), 3)
