"""The whole data flow on a Dask cluster of separate processes, started as a user starts one (`dask scheduler`,
two `dask worker` commands; `runner: {kind: dask, dask_address: ...}`): every stage's output is byte-identical
to the thread runner's, and a worker killed (SIGKILL to its nanny and worker process) while a stage's parts
are in flight does not stop the run: the scheduler sends its tasks to the other worker (Dask's own
rescheduling; Prefect's retries stay as a second line)."""

from __future__ import annotations

import contextvars
import json
import sys
import threading
import time
from pathlib import Path

import pytest
from distributed import Client

from flows.data import data_flow
from llmcore.config import DataConfig, IngestConfig, LanguageConfig, RunnerConfig, SourceConfig, TokenizerConfig
from llmcore.manifest import HIDDEN_MANIFEST, file_sha256

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from dask_cluster import DaskCluster  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample" / "docs"
FILES, PER_FILE = 12, 60
pytestmark = pytest.mark.slow  # a scheduler and two workers start per test; three data flow runs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """12 JSONL files of real documents (the sample's en, de, fr, es), one ingest part each."""
    docs = []
    for lang in ("en", "de", "fr", "es"):
        docs += [json.loads(line)["text"] for line in (SAMPLE / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()]
    docs = docs[::2]  # interleaved languages across files
    out = tmp_path_factory.mktemp("dask-corpus")
    for f in range(FILES):
        rows = docs[f::FILES][:PER_FILE]
        (out / f"part-{f:02d}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows), encoding="utf-8")
    return out


def config(corpus: Path, runner: RunnerConfig) -> DataConfig:
    return DataConfig(
        ingest=IngestConfig(sources=[SourceConfig(name="s", format="jsonl", path=str(corpus))], shard_rows=PER_FILE),
        language=LanguageConfig(allowed=["en", "de", "fr", "es"], workers=1),
        tokenizer=TokenizerConfig(vocab_size=1000),
        runner=runner,
    )


def outputs(paths: list[str], root: str) -> dict[str, list]:
    """Stage -> its manifest's files, rejected rows and quarantine: (path, sha256) in order."""
    out = {}
    for p in paths:
        manifest = json.loads(Path(p).read_text())
        stage = Path(p).relative_to(root).parts[0]
        out[stage] = {k: [(f["path"], f["sha256"]) for f in manifest.get(k) or []] for k in ("files", "rejected")}
        quarantine = Path(p).parent / manifest.get("quarantine", "-")
        out[stage]["quarantine"] = file_sha256(quarantine) if quarantine.is_file() else None
        out[stage]["key"] = manifest["key"]
    return out


@pytest.fixture(scope="module")
def threads(prefect_server, corpus, tmp_path_factory) -> dict:
    root = str(tmp_path_factory.mktemp("threads") / "data")
    return outputs(data_flow(config(corpus, RunnerConfig(kind="threads", workers=2)), root), root)


@pytest.fixture
def cluster(live_server, prefect_server):
    """A scheduler and two single-threaded workers, each its own `dask` process (with its nanny), told where
    the Prefect API is by the environment, as on another machine."""
    with DaskCluster(workers=2, env={"PREFECT_API_URL": live_server.api_url}) as running:
        yield running


def test_dask_cluster_output_is_byte_identical_to_threads(threads, cluster, corpus, tmp_path):
    root = str(tmp_path / "data")
    paths = data_flow(config(corpus, RunnerConfig(kind="dask", dask_address=cluster.address)), root)
    assert [Path(p).relative_to(root).parts[0] for p in paths] == list(threads)
    assert outputs(paths, root) == threads
    assert threads["dedup"]["files"] and threads["dedup"]["rejected"]  # dedup removed documents (same ones on both)
    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        imported = client.run(lambda: "torch" in sys.modules)
    assert len(imported) == 2 and not any(imported.values())  # no data stage needs torch: ~230 MB less per worker


def test_a_worker_killed_mid_stage_the_run_completes(threads, cluster, corpus, tmp_path):
    root = tmp_path / "data"
    result: dict = {}

    def run() -> None:
        try:
            result["paths"] = data_flow(config(corpus, RunnerConfig(kind="dask", dask_address=cluster.address)), str(root))
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            result["error"] = exc

    flow = threading.Thread(target=contextvars.copy_context().run, args=(run,))  # with the live server's settings
    flow.start()
    killed, deadline = None, time.monotonic() + 600
    while flow.is_alive() and killed is None and time.monotonic() < deadline:
        # the language stage: once its first part is done and others are running, the busiest worker goes
        done = list(root.glob("language/parts/*/summary.json"))
        if done and not list(root.glob(f"language/*/{HIDDEN_MANIFEST}")):
            busy = {name: n for name, n in cluster.processing().items() if n}
            if busy:
                killed = max(busy, key=busy.get)
                cluster.kill(killed)
                stage_done_at_kill = bool(list(root.glob(f"language/*/{HIDDEN_MANIFEST}")))
        time.sleep(0.05)
    flow.join(timeout=600)
    assert killed is not None, "the language stage finished before a worker could be killed"
    assert not stage_done_at_kill
    assert "error" not in result, result.get("error")
    assert len(cluster.info()) == 1  # the run finished on the one worker left
    assert outputs(result["paths"], str(root)) == threads
