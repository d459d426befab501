"""Scheduled runs over a growing corpus, against a real Prefect server: a new input file costs its own parts
(every other part comes back Cached), the outputs equal a from-scratch run over the same files in the same
order, a removed file drops its documents, settings that change no output rerun nothing, and pretraining
continues, restarts or is skipped as configured."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flow_helpers import task_runs
from flows.cli import main
from flows.data import data_flow
from flows.pretrain import pretrain_flow
from llmcore.config import DataConfig, IngestConfig, LanguageConfig, PretrainConfig, SourceConfig, TokenizerConfig, TrainConfig
from llmcore.housekeeping import collect, names
from llmcore.stage import StageRef, runtime_fields
from token_helpers import SAMPLE

BATCHES = 4
PER_FILE = 60  # documents of each sample file: four languages and the duplicated copyright texts


@pytest.fixture(scope="module")
def batches(tmp_path_factory) -> list[Path]:
    """The sample's documents dealt round-robin into BATCHES files: every batch holds every language, and
    copyright texts that duplicate those of earlier batches."""
    lines = [line for path in sorted(SAMPLE.glob("*.jsonl")) for line in path.read_text().splitlines()[:PER_FILE]]
    out = tmp_path_factory.mktemp("batches")
    files = []
    for b in range(BATCHES):
        path = out / f"batch-{b}.jsonl"
        path.write_text("".join(line + "\n" for line in lines[b::BATCHES]))
        files.append(path)
    return files


def config(inputs: Path, **changes) -> DataConfig:
    return DataConfig(
        ingest=IngestConfig(sources=[SourceConfig(name="s", format="jsonl", path=str(inputs / "*.jsonl"))]),
        language=LanguageConfig(allowed=["en", "de", "fr", "es"], workers=1),
        tokenizer=TokenizerConfig(vocab_size=600, sample_docs=400),
        **changes,
    )


def feed(inputs: Path, files: list[Path]) -> None:
    inputs.mkdir(exist_ok=True)
    for f in inputs.glob("*.jsonl"):
        f.unlink()
    for f in files:
        (inputs / f.name).write_bytes(f.read_bytes())


def run(cfg: DataConfig, root: Path) -> tuple[list[str], dict[str, str]]:
    """(the stages' manifest paths, each task run's state by name)."""
    state = data_flow(cfg, str(root), return_state=True)
    assert state.is_completed()
    return state.result(), {r.name: r.state.name for r in task_runs(state.state_details.flow_run_id)}


def outputs(manifests: list[str]) -> dict[str, list]:
    """What each stage wrote, in order: document rows, rejected rows, token ids."""
    seen = {}
    for path in manifests:
        ref = StageRef.of(path)
        m = ref.manifest()
        if m["stage"] == "tokenize":
            seen["tokenize"] = [row for f in m["files"] for row in
                                pa.ipc.open_stream(str(ref.path / f["path"])).read_all().to_pylist()]
        elif m["stage"] != "tokenizer":
            seen[m["stage"]] = [pq.read_table(ref.path / f["path"]).to_pylist() for f in m["files"]]
            seen[m["stage"] + " rejected"] = [pq.read_table(ref.path / f["path"]).to_pylist() for f in m["rejected"]]
    return seen


@pytest.fixture(scope="module")
def grown(prefect_server, batches, tmp_path_factory):
    """A root that processed batches 0-2, then the same root after batch 3 arrived."""
    base = tmp_path_factory.mktemp("grown")
    inputs, root = base / "in", base / "data"
    feed(inputs, batches[:3])
    first, _ = run(config(inputs), root)
    feed(inputs, batches)
    second, states = run(config(inputs), root)
    return {"inputs": inputs, "root": root, "first": first, "second": second, "states": states}


def test_a_new_file_costs_only_its_own_parts(grown):
    states = grown["states"]
    for stage in ("ingest", "clean", "language", "dedup-signature", "dedup", "tokenize"):
        parts = {name: s for name, s in states.items() if name.startswith(f"{stage}-part-")}
        assert parts == {**{f"{stage}-part-{i:05d}": "Cached" for i in range(3)}, f"{stage}-part-00003": "Completed"}, stage
    assert states["tokenizer"] == "Cached"  # kept as the corpus grows: old token shards stay valid
    assert states["dedup-cluster"] == "Completed"  # the corpus is clustered again, in order
    for stage in ("ingest", "clean", "tokenize"):  # every stage directory is new: it links one more part
        assert states[f"finalize-{stage}"] == "Completed"
    first = {StageRef.of(p).stage: StageRef.of(p).manifest() for p in grown["first"]}
    second = {StageRef.of(p).stage: StageRef.of(p).manifest() for p in grown["second"]}
    assert second["ingest"]["ledger"]["rows_in"] > first["ingest"]["ledger"]["rows_in"]
    assert second["tokenizer"]["key"] == first["tokenizer"]["key"]


def test_new_documents_never_remove_an_older_kept_one(grown):
    first, second = outputs(grown["first"]), outputs(grown["second"])
    kept_before = {row["id"] for shard in first["dedup"] for row in shard}
    removed_now = {row["id"] for shard in second["dedup rejected"] for row in shard}
    assert kept_before and not kept_before & removed_now
    assert second["dedup"][:3] == first["dedup"]  # the old shards' output is the same, row for row
    new_removed = [row for row in second["dedup rejected"][-1]]
    assert any(row["detail"] in kept_before for row in new_removed)  # new copies point at old kept documents


def test_the_grown_root_equals_a_run_from_scratch(grown, batches, tmp_path):
    tokenizer = StageRef.of(grown["second"][-2]).path / "tokenizer.json"  # the kept one, adopted from scratch
    cfg = config(grown["inputs"])
    cfg = cfg.model_copy(update={"tokenizer": cfg.tokenizer.model_copy(update={"path": str(tokenizer)})})
    scratch, _ = run(cfg, tmp_path / "scratch")
    grown_out, scratch_out = outputs(grown["second"]), outputs(scratch)
    assert grown_out.keys() == scratch_out.keys()
    for stage in grown_out:
        assert grown_out[stage] == scratch_out[stage], stage


def test_a_removed_file_drops_its_documents(grown, batches):
    feed(grown["inputs"], [batches[0], batches[2], batches[3]])
    manifests, states = run(config(grown["inputs"]), grown["root"])
    # the remaining files' parts are reused up to dedup; after it, a shard whose copies lost their original reruns
    assert not [name for name, s in states.items() if name.split("-part-")[0] in ("ingest", "clean", "language") and s != "Cached"]
    assert states["tokenizer"] == "Completed"  # not a grown corpus (a file left): the kept tokenizer does not apply
    gone = f"s/{batches[1].name}"  # ids are source/file:line
    rows = {stage: [r for shard in shards for r in shard] for stage, shards in outputs(manifests).items() if stage != "tokenize"}
    assert rows["ingest"] and not [r for stage_rows in rows.values() for r in stage_rows if r["id"].rsplit(":", 1)[0] == gone]
    feed(grown["inputs"], batches)  # as the other tests expect it


def test_settings_that_change_no_output_rerun_nothing(grown):
    changed = {"data.language.workers": 2, "data.dedup.sort_memory_mb": 64, "data.runner.workers": 1}
    # not run here: runner.kind / dask_address (the Dask tests), sources' token_env / token_secret (hf sources only)
    elsewhere = {"data.runner.kind", "data.runner.dask_address", "data.ingest.sources.token_env", "data.ingest.sources.token_secret"}
    # the training settings (back-translation's models) are checked on pretraining below
    assert set(changed) | elsewhere == {f"data.{f}" for f in runtime_fields(DataConfig) if ".train." not in f}
    cfg = config(grown["inputs"])
    sections = {}
    for path, value in changed.items():
        _, section, field = path.split(".")
        sections.setdefault(section, {})[field] = value
    cfg = cfg.model_copy(update={s: getattr(cfg, s).model_copy(update=f) for s, f in sections.items()})
    _, states = run(cfg, grown["root"])
    assert {name: s for name, s in states.items() if s != "Cached"} == {}


def test_pretraining_continues_over_new_shards(grown, tmp_path):
    tiny = PretrainConfig.model_validate({
        "model": {"d_model": 16, "n_heads": 2, "n_layers": 1}, "block_size": 16,
        "train": {"max_steps": 8, "batch_size": 2, "eval_every": 4, "checkpoint_every": 4, "precision": "fp32"}})
    root = str(grown["root"])
    base = pretrain_flow(tiny, grown["first"][-1], root)
    skip = tiny.model_copy(update={"on_new_data": "skip"})
    assert pretrain_flow(skip, grown["second"][-1], root) == base  # the corpus grew; skip keeps the model
    grown_path = pretrain_flow(tiny, grown["second"][-1], root)
    base_m, grown_m = StageRef.of(base).manifest(), StageRef.of(grown_path).manifest()
    assert grown_m["corpus"]["continued_from"] == base_m["key"]
    assert 1 <= grown_m["summary"]["step"] < tiny.train.max_steps  # steps in proportion to the new tokens
    # changed: every training setting that changes no output (logging, checkpoints, MFU peak, rendezvous): Cached
    distributed = tiny.train.distributed.model_copy(update={"node_rank": 0, "rdzv_endpoint": "10.0.0.1:29400"})
    changes = {"log_every": 1, "keep_checkpoints": 5, "checkpoint_every": 2, "peak_tflops": 1.0, "distributed": distributed}
    assert {*changes, "distributed.node_rank", "distributed.rdzv_endpoint"} - {"distributed"} == set(runtime_fields(TrainConfig))
    quiet = tiny.model_copy(update={"train": tiny.train.model_copy(update=changes)})
    assert pretrain_flow(quiet, grown["second"][-1], root) == grown_path
    restart = tiny.model_copy(update={"on_new_data": "restart"})
    fresh = StageRef.of(pretrain_flow(restart, grown["second"][-1], root)).manifest()
    assert "continued_from" not in fresh["corpus"] and fresh["summary"]["step"] == tiny.train.max_steps


def test_gc_removes_what_no_latest_run_reaches(grown, capsys):
    root = grown["root"]
    old_ingest = StageRef.of(grown["first"][0]).path  # the three-file run's stage directory, replaced since
    assert main(["gc", "--data-root", str(root)]) == 0  # a dry run
    listed = capsys.readouterr().out
    assert str(old_ingest.relative_to(root)) in listed and old_ingest.exists()
    garbage = collect(root)
    latest = {p for p in names(root).values()}
    assert old_ingest in garbage.paths and not latest & set(garbage.paths)
    assert main(["gc", "--data-root", str(root), "--delete"]) == 0
    assert not old_ingest.exists() and all(p.exists() for p in latest)
    _, states = run(config(grown["inputs"]), root)  # nothing the latest run needs was removed
    assert {name: s for name, s in states.items() if s != "Cached"} == {}
