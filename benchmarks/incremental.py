"""A scheduled run after 1 % new input: the data flow over a grown corpus against a full run.

The corpus: `--files` JSONL files of `--docs-per-file` documents built from the bundled sample (real manual
pages in en, de, fr, es): each document is 3-8 paragraphs drawn at random from documents of one language,
and 2 % of documents are copies of an earlier one with one word changed (near duplicates, across files
too), so every stage has work. Seeded: the same arguments build the same corpus.

1. full: the data flow over the first files, in a fresh data root (what the previous night computed);
2. incremental: `--new-fraction` more files arrive, the data flow runs again over all files in that root;
3. scratch: the data flow over all files in a fresh root, with the tokenizer the grown root kept
   (`tokenizer.path`: a from-scratch run would otherwise fit a new one on the grown corpus).
`identical` compares every output file (document shards, rejected rows, token shards) of the incremental
run with the scratch run's, stage by stage, by sha256. `ratio` = incremental_s / full_s; full_s is the
first run (the baseline cost a tool that recomputes whole stages pays again). Prefect's embedded server
(SQLite), as `llmpipe run` uses it; thread runner with `--workers` threads.

    python benchmarks/incremental.py [--files 100] [--docs-per-file 2000] [--new-fraction 0.01] [--workers 2]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # a thousand "Finished in state Cached" lines otherwise

from prefect import flow  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId  # noqa: E402

from flows.data import data_flow  # noqa: E402
from llmcore.config import DataConfig, IngestConfig, LanguageConfig, RunnerConfig, SourceConfig, TokenizerConfig  # noqa: E402
from llmcore.stage import StageRef  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample" / "docs"
LANGS = ("en", "de", "fr", "es")


def paragraphs() -> dict[str, list[str]]:
    by_lang: dict[str, list[str]] = {lang: [] for lang in LANGS}
    for lang in LANGS:
        for line in (SAMPLE / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines():
            by_lang[lang] += [p for p in json.loads(line)["text"].split("\n\n") if len(p) > 40]
    return by_lang


def build(out: Path, files: int, per_file: int, seed: int = 0) -> list[Path]:
    """The corpus files, in arrival order."""
    rng, pool, made, paths = random.Random(seed), paragraphs(), [], []
    out.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        lines = []
        for _ in range(per_file):
            if made and rng.random() < 0.02:
                words = rng.choice(made).split(" ")
                words[rng.randrange(len(words))] = "changed"
                text = " ".join(words)
            else:
                text = "\n\n".join(rng.sample(pool[rng.choice(LANGS)], rng.randint(3, 8)))
                if rng.random() < 0.01:
                    made.append(text)
            lines.append(json.dumps({"text": text}, ensure_ascii=False))
        path = out / f"dump-{f:04d}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def config(inputs: Path, workers: int, tokenizer: str | None = None) -> DataConfig:
    return DataConfig(
        ingest=IngestConfig(sources=[SourceConfig(name="dump", format="jsonl", path=str(inputs / "*.jsonl"))]),
        language=LanguageConfig(allowed=list(LANGS), workers=1),  # parts already run `workers` at once
        tokenizer=TokenizerConfig(path=tokenizer),
        runner=RunnerConfig(workers=workers),
    )


@flow
def start_server() -> None:
    """Nothing: the first flow starts the embedded server, which no timed run should pay for."""


def timed_run(cfg: DataConfig, root: Path) -> tuple[float, list[str], dict[str, int]]:
    start = time.perf_counter()
    state = data_flow(cfg, str(root), return_state=True)
    seconds = time.perf_counter() - start
    if not state.is_completed():
        raise SystemExit(f"the data flow failed: {state.message}")
    return seconds, state.result(), task_states(state.state_details.flow_run_id)


def task_states(flow_run_id) -> dict[str, int]:
    """Task runs by final state, once the server has recorded them all (states arrive as events)."""
    last = None
    with get_client(sync_client=True) as client:
        for _ in range(120):
            runs, page = [], True
            while page:  # the API returns at most 200 a call
                page = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                             limit=200, offset=len(runs))
                runs += page
            seen = sorted((str(r.id), r.state.name if r.state else "") for r in runs)
            if seen == last and all(r.state and r.state.is_final() for r in runs):
                break
            last = seen
            time.sleep(1.0)
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.state.name] = counts.get(r.state.name, 0) + 1
    return counts


def outputs(manifests: list[str]) -> dict[str, list[tuple[str, str, int]]]:
    """Every output file of each document and token stage, by sha256 (the tokenizer reads a sample: left out)."""
    out = {}
    for path in manifests:
        m = StageRef.of(path).manifest()
        if m["stage"] != "tokenizer":
            out[m["stage"]] = [(f["path"], f["sha256"], f["rows"]) for f in m["files"] + m.get("rejected", [])]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--docs-per-file", type=int, default=2000)
    parser.add_argument("--new-fraction", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="llmpipe-incremental-"))
    try:
        new = max(1, round(args.files * args.new_fraction))
        paths = build(work / "corpus", args.files + new, args.docs_per_file)
        inputs = work / "inputs"
        inputs.mkdir()
        for p in paths[: args.files]:
            os.link(p, inputs / p.name)
        start_server()
        full_s, _, full_counts = timed_run(config(inputs, args.workers), work / "root")
        print(f"full: {args.files} files, {args.files * args.docs_per_file} documents: {full_s:.1f} s {full_counts}", flush=True)
        for p in paths[args.files:]:
            os.link(p, inputs / p.name)
        incremental_s, grown, counts = timed_run(config(inputs, args.workers), work / "root")
        print(f"incremental: +{new} file(s): {incremental_s:.1f} s {counts}", flush=True)
        tokenizer = str(StageRef.of(grown[-2]).path / "tokenizer.json")
        scratch_s, scratch, _ = timed_run(config(inputs, args.workers, tokenizer), work / "scratch")
        print(f"scratch over all files: {scratch_s:.1f} s", flush=True)
        result = {
            "files": args.files + new,
            "docs": (args.files + new) * args.docs_per_file,
            "full_s": round(full_s, 1),
            "incremental_s": round(incremental_s, 1),
            "scratch_s": round(scratch_s, 1),
            "ratio": round(incremental_s / full_s, 3),
            "new_fraction": round(new / (args.files + new), 4),
            "identical": outputs(grown) == outputs(scratch),
            "cached_tasks": counts.get("Cached", 0),
            "run_tasks": sum(n for state, n in counts.items() if state != "Cached"),
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
