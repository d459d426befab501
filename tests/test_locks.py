"""Overlapping runs: two writers of the same output, in two processes, do the work once."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

from llmcore.config import IngestConfig, SourceConfig
from llmcore.data.stage import PartDir
from llmcore.data.stages import Ingest
from llmcore.locks import file_lock, lock_path, once
from tasks.stages import run_part

CTX = multiprocessing.get_context("fork")


def _writer(marker: Path, log: Path, start) -> None:
    def work() -> None:
        with log.open("a") as fh:
            fh.write("ran\n")
        time.sleep(0.5)  # long enough for the other process to arrive while this one works
        marker.write_text("done")

    start.wait()
    once(marker, work)
    assert marker.read_text() == "done"


def test_two_concurrent_writers_do_the_work_once(tmp_path):
    marker, log = tmp_path / "ingest" / "parts" / "0123456789abcdef" / "summary.json", tmp_path / "log"
    start = CTX.Barrier(2)
    procs = [CTX.Process(target=_writer, args=(marker, log, start)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text() == "ran\n"


def test_lock_dies_with_its_holder(tmp_path):
    lock = tmp_path / "x.lock"
    holder = CTX.Process(target=_hold_forever, args=(lock,))
    holder.start()
    time.sleep(1.0)
    holder.kill()
    holder.join()
    with file_lock(lock):  # would block forever if the dead holder's lock outlived it
        pass


def _hold_forever(lock: Path) -> None:
    with file_lock(lock):
        time.sleep(600)


def test_stage_task_waits_for_a_run_writing_the_same_part(tmp_path):
    """The real part task, on an ingest part: while another run holds the part's lock, it waits, then writes the part."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document number {i} " * 10}) + "\n" for i in range(5)))
    src = SourceConfig(name="s", format="jsonl", path=str(docs))
    root = str(tmp_path / "data")
    stage = Ingest(IngestConfig(sources=[src]))
    [part] = stage.plan()
    summary = PartDir(root, "ingest", part.key).summary_path
    result: list[str] = []
    with file_lock(lock_path(summary)):
        worker = threading.Thread(target=lambda: result.append(run_part.fn(root, "ingest", part.name, part.key, stage, part)))
        worker.start()
        worker.join(2.0)
        assert worker.is_alive() and not summary.exists()
    worker.join(60)
    assert result == [str(summary)]
    assert json.loads(summary.read_text())["ledger"]["rows_out"] == 5
