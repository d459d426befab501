"""The data flow against a real Prefect test server: cached reruns, retry of a failed run, the funnel."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from flow_helpers import stage_of, task_runs
from flows.cli import main
from flows.data import data_flow
from flows.rerun import retry_flow_run
from llmcore.config import AugmentConfig, DataConfig, EdaConfig, IngestConfig, LanguageConfig, SourceConfig
from llmcore.housekeeping import LATEST
from llmcore.manifest import HIDDEN_MANIFEST
from llmcore.stage import DOCUMENT_STAGES, StageRef
from tasks.common import FAIL_ENV

STAGES = ["ingest", "clean", "language", "dedup", "tokenizer", "tokenize"]


@pytest.fixture
def config(corpus: Path) -> DataConfig:
    source = SourceConfig(name="sample", format="jsonl", path=str(corpus))
    return DataConfig(
        ingest=IngestConfig(sources=[source], shard_rows=40),
        language=LanguageConfig(allowed=["en", "de", "fr", "es"], workers=1),
    )


def test_second_run_executes_no_stage(prefect_server, config, tmp_path):
    root = str(tmp_path / "data")
    first = data_flow(config, root, return_state=True)
    assert first.is_completed()
    paths = first.result()
    manifests = [json.loads(Path(p).read_text()) for p in paths]
    assert [m["stage"] for m in manifests] == STAGES
    documents = [m for m in manifests if m["stage"] != "tokenizer"]  # the tokenizer reads a sample
    for upstream, m in zip(documents, documents[1:]):
        assert m["ledger"]["rows_in"] == upstream["ledger"]["rows_out"]
    assert manifests[0]["ledger"]["quarantined"] == 1
    assert manifests[-1]["ledger"]["rows_out"] > 0

    second = data_flow(config, root, return_state=True)
    assert second.result() == paths
    runs = task_runs(second.state_details.flow_run_id)
    assert {stage_of(r) for r in runs} == set(STAGES)
    # run alone (as the refresh deployment runs it), it is tagged as in a pipeline run: the flow and its tasks
    tags = {"llmpipe", f"root:{Path(root).absolute()}"}
    with get_client(sync_client=True) as client:
        assert tags <= set(client.read_flow_run(second.state_details.flow_run_id).tags)
    assert all(tags <= set(r.tags) for r in runs)
    assert [r.name for r in runs if r.state.name != "Cached"] == []

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(  # this run's: other tests' flows publish the same key
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["data-funnel"]),
                                           flow_run_id=ArtifactFilterFlowRunId(any_=[second.state_details.flow_run_id])),
        ) or [None]
    assert artifact is not None and artifact.type == "table"
    assert [row["stage"] for row in json.loads(artifact.data)] == STAGES


def test_stage_directories_read_as_datasets(prefect_server, config, tmp_path):
    """pandas and datasets, pointed at a document stage's directory, read exactly its kept documents: its rejected
    rows, quarantine and manifest lie beside the shards under dot-names, which both skip."""
    import datasets

    root, cache = tmp_path / "data", str(tmp_path / "hf-cache")
    augmented = config.model_copy(update={"augment": AugmentConfig(eda=EdaConfig(fraction=0.3))})
    refs = {ref.stage: ref for ref in map(StageRef.of, data_flow(augmented, str(root)))}
    assert set(refs) == {*DOCUMENT_STAGES, "tokenizer"}
    assert refs["dedup"].manifest()["rejected"] and refs["ingest"].manifest()["ledger"]["quarantined"]  # to be left out
    for stage in DOCUMENT_STAGES:
        directory = root / stage / LATEST  # the name a person uses; datasets resolves it, pyarrow follows it
        assert directory.resolve() == refs[stage].path
        manifest = refs[stage].manifest()
        ids = {split: sorted(i for f in manifest["files"] if f.get("split", "train") == split for i in _ids(directory / f["path"]))
               for split in ("train", "validation")}
        assert sum(map(len, ids.values())) == manifest["ledger"]["rows_out"]
        if stage == "tokenize":  # Arrow token shards, in one directory per split
            loaded = datasets.load_dataset("arrow", data_dir=str(directory), cache_dir=cache)
            assert list(loaded) == ["train", "validation"] and all(ids.values())
        else:
            assert sorted(pd.read_parquet(directory)["id"]) == ids["train"], stage
            loaded = datasets.load_dataset("parquet", data_dir=str(directory), cache_dir=cache)
            assert list(loaded) == ["train"], stage
        assert {split: sorted(rows["id"]) for split, rows in loaded.items()} == {s: i for s, i in ids.items() if i}, stage


def _ids(path: Path) -> list[str]:
    """The document ids of one shard, Parquet or Arrow stream, read on its own."""
    table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all() if path.suffix == ".arrow" else pq.read_table(path)
    return table.column("id").to_pylist()


def test_retry_of_failed_run_reruns_only_the_failed_stage(prefect_server, config, tmp_path, monkeypatch):
    root = str(tmp_path / "data")
    monkeypatch.setenv(FAIL_ENV, "language")
    failed = data_flow(config, root, return_state=True)
    assert failed.is_failed()
    flow_run_id = failed.state_details.flow_run_id
    first_attempt = task_runs(flow_run_id)
    # the injected failure fails a part; parts still running when the flow stops are cancelled
    assert "Failed" in {r.state.name for r in first_attempt if stage_of(r) == "language"} <= {"Failed", "Crashed"}
    assert not list((tmp_path / "data").glob(f"language/*/{HIDDEN_MANIFEST}"))

    monkeypatch.delenv(FAIL_ENV)
    assert retry_flow_run(flow_run_id).is_completed()
    seen = {r.id for r in first_attempt}
    retried = [r for r in task_runs(flow_run_id) if r.id not in seen]
    states = {(stage_of(r), r.state.name) for r in retried}
    assert states == {("ingest", "Cached"), ("clean", "Cached")} | {(stage, "Completed") for stage in STAGES[2:]}


@pytest.mark.slow  # `llmpipe run` through pretraining
def test_llmpipe_run_prints_the_funnel(prefect_server, corpus, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"data:\n  ingest:\n    sources: [{{name: s, format: jsonl, path: {corpus}}}]\n"
        "  language: {allowed: [en, de], workers: 1}\n"
        # the pipeline trains too: a 2-step model keeps this test fast
        "pretrain: {model: {d_model: 16, n_heads: 2, n_layers: 1}, block_size: 16, train: {max_steps: 2, batch_size: 2}}\n"
    )
    assert main(["run", str(cfg), "--data-root", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "Data funnel" in out and "language_not_allowed" in out and "quarantined" in out
