"""What a data root holds, read from its names and manifests alone (no Prefect server needed): each stage's
latest output, the document funnel, the models with their scores and where they are, the evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from llmcore.housekeeping import LATEST, names
from llmcore.report import format_table, funnel
from llmcore.stage import StageRef

DATA_STAGES = ("ingest", "clean", "language", "dedup", "augment", "tokenizer", "tokenize")


def _size(path: Path) -> str:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return f"{total / 2**20:.1f} MiB"


BOOKKEEPING = {"step", "improved", "best_step", "best_value", "bad_evals", "patience", "seconds"}


def _scores(values: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in values.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in BOOKKEEPING) or "-"


def report(root: str | Path) -> str:
    root = Path(root).resolve()
    found = names(root)
    pointed = {name.split("/")[0]: StageRef.at(path) for name, path in found.items() if name.endswith(f"/{LATEST}")}
    latest = {stage: ref for stage, ref in pointed.items() if ref.done()}
    out = [f"Data root {root}"]
    stages = [s for s in DATA_STAGES if s in latest]
    if stages:
        rows = []
        for stage in stages:
            m = latest[stage].manifest()
            rows.append({"stage": stage, "latest": f"{stage}/{m['key']}", "created": m["created"],
                         "parts": len(m.get("parts", {})) or "-", "files": len(m["files"]), "size": _size(latest[stage].path)})
        out += ["", "Stages (the latest run's; `<stage>/latest` points at them)", format_table(rows)]
        out += ["", "Data funnel", format_table(funnel([latest[s].manifest() for s in stages]))]
    models = []
    if "pretrain" in latest:
        m = latest["pretrain"].manifest()
        best = m["summary"].get("best_value")
        models.append({"model": "pretrain", "path": str(latest["pretrain"].path / (m["best"] or m["checkpoint"])),
                       "scores": f"{m['summary']['metric']} {best:.3f}" if isinstance(best, float) else "-",
                       "size": _size(latest["pretrain"].path)})
    for name, path in sorted(found.items()):
        if name.startswith("finetune/") and not name.endswith(f"/{LATEST}") and StageRef.at(path).done():
            m = StageRef.at(path).manifest()
            models.append({"model": name, "path": str(path / m["model"]), "scores": _scores(m["validation"]),
                           "size": _size(path / m["model"])})
    out += ["", "Models (validation scores)", format_table(models) if models else "(none yet)"]
    evaluation = found.get(f"evaluation/{LATEST}")
    if evaluation and (evaluation / "results.json").exists():
        results = json.loads((evaluation / "results.json").read_text())["tasks"]
        rows = [{"task": r["name"], "metric": k, "model": round(v, 2),
                 "baseline": round(r["baseline"]["metrics"][k], 2) if k in r["baseline"]["metrics"] else "-"}
                for r in results for k, v in r["metrics"].items()]
        out += ["", f"Evaluation on held-out test examples ({evaluation / 'results.json'})", format_table(rows)]
    if len(out) == 1:
        out.append("nothing has run here yet: `llmpipe run --data-root` this directory")
    return "\n".join(out)
