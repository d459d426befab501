"""The dedup stage inside the data flow, on a real Prefect test server: a crash in clustering reuses
the signatures, a finished stage comes back Cached, and a Dask LocalCluster gives the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from flow_helpers import task_runs
from flows.data import data_flow
from llmcore.config import DataConfig, IngestConfig, LanguageConfig, RunnerConfig, SourceConfig
from llmcore.manifest import file_sha256
from tasks.common import FAIL_ENV
from tasks.stages import CLUSTER_FAIL

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample" / "docs"
pytestmark = pytest.mark.slow  # four data flow runs, one on a Dask LocalCluster of two worker processes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """24 real English documents, 3 copies differing in case and spacing, 3 with their last words edited."""
    texts = [json.loads(line)["text"] for line in (SAMPLE / "en.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [t for t in texts if len(t.split()) >= 80][:24]
    rows = [{"text": t} for t in texts]
    rows += [{"text": texts[i].replace(" ", "  ").upper()} for i in (1, 5, 9)]
    rows += [{"text": " ".join(texts[i].split()[:-3] + ["edited", "closing", "words"])} for i in (2, 6, 10)]
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(prefect_server, corpus, tmp_path_factory) -> dict:
    """The data flow on the default runner: crashed in clustering, rerun, then run once more."""
    cfg, root = config(corpus), str(tmp_path_factory.mktemp("threads") / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAIL_ENV, CLUSTER_FAIL)
        crashed = data_flow(cfg, root, return_state=True)
    rerun = data_flow(cfg, root, return_state=True)
    again = data_flow(cfg, root, return_state=True)
    return {"root": root, "crashed": crashed, "rerun": rerun, "again": again}


def config(corpus: Path, runner: RunnerConfig | None = None) -> DataConfig:
    return DataConfig(
        ingest=IngestConfig(sources=[SourceConfig(name="s", format="jsonl", path=str(corpus))], shard_rows=15),
        language=LanguageConfig(allowed=["en"], min_prob=0.5, workers=1),
        runner=runner or RunnerConfig(),
    )


def dedup_states(flow_state) -> dict[str, set[str]]:
    """State names of the flow run's dedup task runs, by step (signature, cluster, filter: the stage's parts)."""
    states: dict[str, set[str]] = {}
    for run in task_runs(flow_state.state_details.flow_run_id):
        if run.name.startswith("dedup-"):
            step = run.name.split("-")[1]
            states.setdefault("filter" if step == "part" else step, set()).add(run.state.name)
    return states


def dedup_manifest(paths: list[str]) -> str:
    [path] = [p for p in paths if Path(p).parent.parent.name == "dedup"]
    return path


def dedup_files(manifest_path: str) -> dict[str, str]:
    """Every file of the dedup stage (signatures, the clustering's removed rows, output) with its sha256."""
    stage = Path(manifest_path).parent
    manifest = json.loads(Path(manifest_path).read_text())
    dedup = stage.parent
    files = [*(dedup / "signatures").glob("*"), *(dedup / "clusters" / manifest["clusters"]).glob("*.parquet"),
             *(stage / f["path"] for f in manifest["files"] + manifest["rejected"])]
    return {str(p.relative_to(dedup)): file_sha256(p) for p in sorted(files) if p.suffix in (".parquet", ".npy")}


def test_a_crash_in_clustering_reuses_the_signatures(runs):
    assert runs["crashed"].is_failed()
    assert dedup_states(runs["crashed"]) == {"signature": {"Completed"}, "cluster": {"Failed"}}
    assert dedup_states(runs["rerun"]) == {"signature": {"Cached"}, "cluster": {"Completed"}, "filter": {"Completed"}}


def test_a_finished_stage_is_cached(runs):
    assert runs["again"].result() == runs["rerun"].result()
    assert dedup_states(runs["again"]) == {"signature": {"Cached"}, "cluster": {"Cached"}, "filter": {"Cached"}}
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["dedup-clusters"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[runs["again"].state_details.flow_run_id]),
            ),
            limit=1,
        )
    assert artifact.type == "table"
    assert {"size": "2", "clusters": 6, "documents": 12} in json.loads(artifact.data)


def test_ledger_balances_and_removed_rows_name_a_kept_representative(runs):
    path = dedup_manifest(runs["rerun"].result())
    manifest = json.loads(Path(path).read_text())
    ledger = manifest["ledger"]
    assert ledger["rows_in"] == 30 == ledger["rows_out"] + sum(ledger["dropped"].values()) + ledger["quarantined"]
    assert ledger["dropped"] == {"exact_duplicate": 3, "near_duplicate": 3}
    lsh = manifest["dedup"]["lsh"]  # the clustering summary travels in the manifest
    assert lsh["bands"] * lsh["rows"] <= lsh["num_perm"] == 256 and manifest["dedup"]["clusters"] == 6
    stage = Path(path).parent
    kept = {r["id"] for f in manifest["files"] for r in pq.read_table(stage / f["path"], columns=["id"]).to_pylist()}
    removed = [row for f in manifest["rejected"] for row in pq.read_table(stage / f["path"]).to_pylist()]
    assert len(removed) == 6
    assert all(row["detail"] in kept and row["reason"] in ("exact_duplicate", "near_duplicate") for row in removed)


def test_dask_local_cluster_gives_the_same_output_as_threads(runs, corpus, tmp_path):
    threads = runs["rerun"].result()
    dask = data_flow(config(corpus, RunnerConfig(kind="dask", workers=2)), str(tmp_path / "dask"))
    assert [Path(p).relative_to(runs["root"]) for p in threads] == [
        Path(p).relative_to(tmp_path / "dask") for p in dask
    ]
    files = dedup_files(dedup_manifest(threads))
    assert any(name.startswith("signatures/") for name in files) and any("/.rejected/" in name for name in files)
    assert dedup_files(dedup_manifest(dask)) == files
