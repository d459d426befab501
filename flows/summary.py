"""The one summary `llmpipe run` prints at the end: wall time, task runs that ran and that came back Cached,
the data funnel, every model's path, and the evaluation table."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

from llmcore.report import format_table, funnel
from llmcore.stage import StageRef


def task_states(flow_run_id, patience_s: float = 20.0) -> Counter:
    """The task runs of a flow run and of its subflows, by final state (states reach the server as events: this
    waits, up to `patience_s`, until they have all arrived)."""
    deadline, last = time.monotonic() + patience_s, None
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        ids = [flow_run_id] + [c.id for c in children]
        while True:
            runs, page = [], [None]
            while page:  # the API returns at most 200 a call
                page = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200,
                                             offset=len(runs))
                runs += page
            runs = [r for r in runs if not (r.state and r.state.state_details.child_flow_run_id)]  # a subflow's stand-in
            seen = Counter(r.state.name for r in runs if r.state)
            if (seen == last and all(r.state and r.state.is_final() for r in runs)) or time.monotonic() > deadline:
                return seen
            last = seen
            time.sleep(0.5)


def models(result: dict) -> list[dict]:
    rows = []
    for path in result.get("pretrain", []):
        m = StageRef.of(path).manifest()
        rows.append({"model": "pretrained", "path": str(StageRef.of(path).path / (m["best"] or m["checkpoint"]))})
    for path in result.get("finetune", []):
        m = StageRef.of(path).manifest()
        rows.append({"model": m["name"], "path": str(StageRef.of(path).path / m["model"])})
    return rows


def print_summary(state, root: str, seconds: float) -> None:
    result = state.result()
    counts = task_states(state.state_details.flow_run_id)
    cached = counts.pop("Cached", 0)
    minutes, secs = divmod(round(seconds), 60)
    print(f"\nFinished in {minutes}m{secs:02d}s: {sum(counts.values())} task runs ran, {cached} came back Cached "
          f"(data root {root}; `llmpipe status` shows it again)")
    print("\nData funnel\n" + format_table(funnel([StageRef.of(p).manifest() for p in result["data"]])))
    print(f"\nCorpus: {Path(result['data'][-1]).parent}")
    if models(result):
        print("\nModels (export one for transformers: llmpipe export PATH --to DIR)\n" + format_table(models(result)))
    if "evaluate" in result:
        from flows.evaluate import table_rows

        evaluation = json.loads(Path(result["evaluate"][0]).read_text())
        print("\nEvaluation on held-out test examples (model beside its trivial baseline)\n"
              + format_table(table_rows(evaluation["tasks"])))
        if "compression" in evaluation:
            from flows.distill import table_rows as compression_rows

            comparison = json.loads(Path(evaluation["compression"]).read_text())
            print("\nTeacher, students and compressed models side by side\n"
                  + format_table(compression_rows(comparison["rows"], comparison["metric"])))
        print(f"\nResults: {result['evaluate'][0]}")
