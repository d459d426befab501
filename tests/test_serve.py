"""`llmpipe serve` in a real subprocess, stopped by SIGTERM or Ctrl-C (SIGINT) while serving: within seconds, one
line saying so, exit code 0, no traceback; also when the API goes down with it (a temporary server, no PREFECT_API_URL:
the signal reaches the whole process group, as a terminal's Ctrl-C or systemd's stop does)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
LLMPIPE = str(Path(sys.executable).with_name("llmpipe"))
STOP_LIMIT = 10  # seconds from the signal to the exit
START_TIMEOUT = 300  # a temporary server starts slowly on a busy 2-core machine
SERVING = "SIGTERM or Ctrl-C stops"  # the line `llmpipe serve` prints once its deployments are registered


def _prefect_file(tmp_path: Path, name: str) -> Path:
    """One deployment of its own name: serving deployments/prefect.yaml would re-register (and pause on stop) the
    session server's deployments, which test_deployments.py reads."""
    path = tmp_path / "prefect.yaml"
    path.write_text(f"deployments:\n  - name: {name}\n    entrypoint: flows/data.py:data_flow\n    parameters:\n"
                    "      config: '{{ llmpipe.config.data }}'\n      data_root: '{{ llmpipe.data_root }}'\n")
    return path


def _serve_and_stop(tmp_path: Path, env: dict, signum: signal.Signals, name: str, api_url: str | None = None) -> tuple[float, int, str]:
    """Start `llmpipe serve` in a process group of its own; once the runner polls for runs (the deployment turns READY),
    send `signum` to the group. The seconds to exit, the exit code and the output."""
    log = tmp_path / "serve.log"
    command = [LLMPIPE, "serve", "--prefect-file", str(_prefect_file(tmp_path, name)), "--data-root", str(tmp_path / "data")]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, f"llmpipe serve exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"not serving after {START_TIMEOUT} s:\n{log.read_text()}"
            output = log.read_text()
            if SERVING in output:
                api_url = api_url or re.search(r"temporary server on (\S+)", output).group(1) + "/api"
                if httpx.get(f"{api_url}/deployments/name/data/{name}").json().get("status") == "READY":
                    break
            time.sleep(0.5)
        sent = time.monotonic()
        os.killpg(proc.pid, signum)
        code = proc.wait(60)
        return time.monotonic() - sent, code, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _stop_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("llmpipe serve: stopped")]


@pytest.mark.slow
def test_sigterm_stops_serving_a_temporary_server_in_seconds(tmp_path):
    """Before: about 70 s of retried API calls to the server that stopped with it, and three tracebacks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    seconds, code, output = _serve_and_stop(tmp_path, env, signal.SIGTERM, "serve-sigterm")
    assert "Traceback" not in output
    assert (code, len(_stop_lines(output))) == (0, 1), output
    assert _stop_lines(output)[0].startswith("llmpipe serve: stopped on SIGTERM")
    assert seconds < STOP_LIMIT, output


def test_ctrl_c_stops_serving_and_pauses_the_schedules(live_server, tmp_path):
    name = f"serve-sigint-{uuid4().hex[:8]}"
    deployment = f"{live_server.api_url}/deployments/name/data/{name}"
    try:
        seconds, code, output = _serve_and_stop(tmp_path, live_server.env, signal.SIGINT, name, live_server.api_url)
        assert "Traceback" not in output
        assert (code, _stop_lines(output)) == (0, ["llmpipe serve: stopped on SIGINT"]), output
        assert seconds < STOP_LIMIT, output
        assert httpx.get(deployment).json()["paused"]  # as Prefect's serve leaves them: no runs pile up unserved
    finally:  # test_deployments.py reads every deployment of the session's server
        found = httpx.get(deployment)
        if found.status_code == 200:
            httpx.delete(f"{live_server.api_url}/deployments/{found.json()['id']}")
