"""A Dask cluster of separate processes, started as a user starts one: `dask scheduler` and `dask worker`
commands (tests/test_dask_cluster.py, benchmarks/peers.py --scaling).

    with DaskCluster(workers=2, env={"PREFECT_API_URL": ...}) as cluster:
        ... RunnerConfig(kind="dask", dask_address=cluster.address) ...
        cluster.kill(name)   # SIGKILL to a worker's process group (its nanny and its worker process)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DASK = str(Path(sys.executable).with_name("dask"))


class DaskCluster:
    def __init__(self, workers: int = 2, env: dict | None = None, timeout: float = 180):
        self.n, self.timeout = workers, timeout
        self.env = {**os.environ, **(env or {})}
        self.dir = Path(tempfile.mkdtemp(prefix="dask-cluster-"))
        self.scheduler: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.address = ""

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "w")
        # a session of its own: kill() takes the nanny and its worker process together
        return subprocess.Popen([DASK, *args], stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.dir,
                                start_new_session=True)

    def __enter__(self) -> DaskCluster:
        try:
            info = self.dir / "scheduler.json"
            self.scheduler = self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                                       "--no-dashboard", "--scheduler-file", str(info)])
            self.address = json.loads(self._wait(lambda: info.exists() and info.read_text(), "the scheduler file"))["address"]
            for i in range(self.n):
                self.add_worker(f"w{i}")
            self.wait_workers(self.n)
        except BaseException:
            self.close()
            raise
        return self

    def add_worker(self, name: str) -> None:
        self.workers[name] = self._start(name, ["worker", self.address, "--name", name, "--nworkers", "1",
                                                "--nthreads", "1", "--no-dashboard", "--local-directory",
                                                str(self.dir / name)])

    def _wait(self, check, what: str):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if (value := check()):
                return value
            if self.scheduler and self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited: {(self.dir / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"waited {self.timeout} s for {what}; logs in {self.dir}")

    def info(self) -> dict:
        """The scheduler's view: worker address -> {name, pid, ...}."""
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            return client.scheduler_info(n_workers=-1)["workers"]

    def processing(self) -> dict[str, int]:
        """Worker name -> tasks it is processing now."""
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            return {workers[a]["name"]: len(keys) for a, keys in client.processing().items() if a in workers}

    def wait_workers(self, n: int) -> None:
        self._wait(lambda: len(self.info()) == n, f"{n} dask workers")

    def kill(self, name: str) -> None:
        """SIGKILL to the worker's whole process group: no goodbye to the scheduler, as when a machine is lost."""
        proc = self.workers[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for proc in [*self.workers.values(), self.scheduler]:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers.values(), self.scheduler]:
            if proc is not None:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    def __exit__(self, *exc) -> None:
        self.close()
