"""A real `prefect server start` process, and the prefect CLI and workers against it.

All the tests that need Prefect share one server per session (conftest.py): SQLite in a temporary
PREFECT_HOME, a free loopback port, the UI told where its API is.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.workers.process import ProcessWorker

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
SAMPLE = ROOT / "configs" / "sample" / "docs"
POOL, QUEUE = "llmpipe", "tests"  # the test's runs go to their own queue, away from the scheduled ones


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, home: Path):
        self.home, port = home, _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.url}/api"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LLMPIPE_"))}
        self.env = {
            **base,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        server_env = {
            **self.env,
            "PREFECT_UI_API_URL": self.api_url,  # else the UI calls 127.0.0.1:4200
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",  # upcoming runs appear soon after deploy
        }
        self.log = home / "server.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def wait_healthy(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError(f"prefect server not healthy after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its process group: the server and what it started
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)

    def cli(self, *args: str, extra_env: dict | None = None, timeout: float = 300) -> str:
        """Run `prefect ARGS` from the repository root against this server; its output."""
        done = subprocess.run(
            [PREFECT, *args], cwd=ROOT, env={**self.env, **(extra_env or {})},
            capture_output=True, text=True, timeout=timeout,
        )
        if done.returncode:
            raise AssertionError(f"prefect {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def run_worker_once(self, extra_env: dict | None = None) -> str:
        """A process worker that takes the queued runs, runs them to the end, and exits."""
        return self.cli("worker", "start", "--pool", POOL, "--work-queue", QUEUE, "--run-once", extra_env=extra_env)

    @contextmanager
    def settings(self) -> Iterator[None]:
        """Clients made in this block (get_client) talk to this server."""
        with temporary_settings({PREFECT_API_URL: self.api_url}):
            yield


_booted: LiveServer | None = None
_pipeline: Future | None = None  # (Deployed, the pipeline's flow run), made in the background by boot()


def boot(pipeline: bool = False) -> None:
    """Start the server now, to boot (about a minute on a busy machine) while other tests run; with `pipeline`,
    deploy to it and have a worker run the nightly pipeline there in the background too (early_pipeline())."""
    global _booted, _pipeline
    _booted = server = LiveServer(Path(tempfile.mkdtemp(prefix="prefect-home-")))
    atexit.register(server.stop)  # also when no test gets to use it
    if pipeline:
        _pipeline = Future()
        threading.Thread(target=_deploy_and_run, args=(server, _pipeline), daemon=True).start()  # never holds up the exit


def _deploy_and_run(server: LiveServer, future: Future) -> None:
    try:
        server.wait_healthy()
        (server.home / "deployed").mkdir()  # removed with the server's home
        deployed = deploy(server, server.home / "deployed")
        future.set_result((deployed, run_pipeline(deployed)))
    except BaseException as error:
        future.set_exception(error)


def early_pipeline() -> tuple[Deployed, FlowRun] | None:
    """What boot(pipeline=True) deployed and ran, once it is done; None without it."""
    return _pipeline.result() if _pipeline else None


@contextmanager
def live_server() -> Iterator[LiveServer]:
    server = _booted or LiveServer(Path(tempfile.mkdtemp(prefix="prefect-home-")))
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@dataclass
class Deployed:
    server: LiveServer
    config: Path
    data_root: Path
    deployments: dict[str, UUID]  # "flow/deployment" -> id

    def trigger(self, name: str, **overrides) -> UUID:
        """Create a run of a deployment through the API, for the test's worker queue."""
        with self.server.settings(), get_client(sync_client=True) as client:
            run = client.create_flow_run_from_deployment(self.deployments[name], parameters=overrides, work_queue_name=QUEUE)
        return run.id


def deploy(server: LiveServer, tmp: Path) -> Deployed:
    """A process work pool, then deployments/prefect.yaml deployed with a small-corpus config."""
    corpus = tmp / "corpus"
    corpus.mkdir()
    for path in sorted(SAMPLE.glob("*.jsonl")):  # a slice of the real sample: worker runs take seconds
        (corpus / path.name).write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:30]))
    config = tmp / "config.yaml"
    config.write_text(  # relative source path: resolved against this file at deploy time
        "name: deployed\ndata:\n  ingest:\n    sources: [{name: sample, format: jsonl, path: corpus}]\n    shard_rows: 40\n"
        "  language: {allowed: [en, de, fr, es], workers: 1}\n"
        "  runner: {workers: 1}\n"  # one part at a time: the lightest load on a shared 2-core machine
        # the pipeline trains too: a 2-step model
        "pretrain: {model: {d_model: 16, n_heads: 2, n_layers: 1}, block_size: 16, train: {max_steps: 2, batch_size: 2}}\n"
    )
    data_root = tmp / "shared"
    with server.settings(), get_client(sync_client=True) as client:  # as `prefect work-pool create`, one process fewer
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
        client.create_work_queue(QUEUE, work_pool_name=POOL)
    server.cli(
        "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml",
        extra_env={"LLMPIPE_CONFIG": str(config), "LLMPIPE_DATA_ROOT": str(data_root)},
    )
    with server.settings(), get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        names = {f"{flows[d.flow_id]}/{d.name}": d.id for d in client.read_deployments()}
    return Deployed(server, config, data_root, names)


def run_pipeline(deployed: Deployed) -> FlowRun:
    """The nightly pipeline deployment, triggered through the API and run to the end by a worker."""
    run_id = deployed.trigger("pipeline/nightly")
    deployed.server.run_worker_once()
    return wait_final(deployed.server, run_id)


def wait_final(server: LiveServer, flow_run_id: UUID, timeout: float = 300) -> FlowRun:
    """The flow run once it is in a final state."""
    deadline = time.monotonic() + timeout
    with server.settings(), get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run {flow_run_id} still {run.state.name if run.state else None} after {timeout}s")
            time.sleep(1)
