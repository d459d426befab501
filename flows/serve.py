"""The deployments of deployments/prefect.yaml: its build step, and serving them without a work pool.

`prefect deploy` runs `deploy_settings` as the build step and stores its outputs as the deployments'
parameters; `llmpipe serve` reads the same file, so both give the same schedules, parameters and
concurrency limits, from one place.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect.deployments.runner import RunnerDeployment
from prefect.flows import load_flow_from_entrypoint
from prefect.runner import Runner
from prefect.schedules import Schedule
from prefect.utilities.templating import apply_values

from flows.cli import DEFAULT_CONFIG
from flows.data import DEFAULT_DATA_ROOT
from llmcore.config import load_config
from tasks.results import results_dir

PROJECT_DIR = Path(__file__).resolve().parents[1]
PREFECT_FILE = PROJECT_DIR / "deployments" / "prefect.yaml"
STEP_ID = "llmpipe"  # the build step's id in prefect.yaml, whose outputs it uses as {{ llmpipe.* }}
# From a stop signal to exit at most (pausing the schedules at most PAUSE_SECONDS of it): what is not done by then is left.
STOP_SECONDS, PAUSE_SECONDS = 6, 3


def deploy_settings(config: str = "", data_root: str = "", project_dir: str = "") -> dict:
    """prefect.yaml's build step: the validated config (paths absolute), the shared root, the code's place.

    Empty arguments (an unset environment variable in prefect.yaml) mean the defaults.
    """
    root = Path(data_root or DEFAULT_DATA_ROOT).resolve()
    return {
        "config": load_config(config or DEFAULT_CONFIG).model_dump(mode="json"),
        "data_root": str(root),
        "results_dir": str(results_dir(root)),
        "project_dir": project_dir or str(PROJECT_DIR),
    }


def _schedule(spec: dict) -> Schedule:
    """A prefect.yaml schedule entry (cron, or interval in seconds, ...) as a Schedule."""
    if isinstance(spec.get("interval"), (int, float)):
        spec = {**spec, "interval": timedelta(seconds=spec["interval"])}
    return Schedule(**spec)


def load_deployments(prefect_file: Path = PREFECT_FILE, config: str = "", data_root: str = "") -> list[tuple[RunnerDeployment, dict]]:
    """prefect.yaml's deployments for `serve`, each with the environment its work pool gives a run."""
    spec = yaml.safe_load(Path(prefect_file).read_text())
    out = []
    for entry in apply_values(spec["deployments"], {STEP_ID: deploy_settings(config, data_root)}):
        flow = load_flow_from_entrypoint(str(PROJECT_DIR / entry["entrypoint"]))
        deployment = flow.to_deployment(
            name=entry["name"],
            schedules=[_schedule(s) for s in entry.get("schedules", [])],
            parameters=entry.get("parameters"),
            concurrency_limit=entry.get("concurrency_limit"),
            description=entry.get("description"),
        )
        out.append((deployment, entry.get("work_pool", {}).get("job_variables", {}).get("env", {})))
    return out


class _Stopped(BaseException):
    """A stop signal before serving began; a BaseException, so that no `except Exception` on the way swallows it."""


class _Stopper:
    """What SIGTERM and SIGINT (Ctrl-C) do: before serving, end the start-up; while serving, wake `_serve`."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event = asyncio.Event()

    def __call__(self, signum: int, frame: object = None) -> None:
        if self.signal:
            return  # stopping already: within STOP_SECONDS
        self.signal = signal.Signals(signum).name
        # stopping, a lost API connection is to be expected (Ctrl-C stops a temporary server too): its line, no traceback
        for handler in logging.getLogger().handlers:
            handler.addFilter(_without_traceback)
        if self.loop is None:
            raise _Stopped
        self.loop.call_soon_threadsafe(self.event.set)  # a Python signal handler does not wake the loop's select


def _without_traceback(record: logging.LogRecord) -> bool:
    record.exc_info = record.exc_text = None
    return True


class _Runner(Runner):
    """Prefect's Runner with `_Stopper` as its SIGTERM handler (`start` installs handle_sigterm)."""

    def __init__(self, stopper: _Stopper, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stopper = stopper

    def handle_sigterm(self, signum: int = signal.SIGTERM, frame: object = None) -> None:
        self.stopper(signum, frame)


def serve_deployments(prefect_file: Path = PREFECT_FILE, config: str = "", data_root: str = "", limit: int | None = None) -> str:
    """Run the deployments' schedules and triggered runs in this process (each run in a subprocess) until SIGTERM or
    SIGINT; then, within STOP_SECONDS, pause the schedules and cancel the runs in flight. Returns a line on the stop.

    Not Prefect's `serve`: its stop retries every API call for a minute, with tracebacks, when the API is gone (Ctrl-C
    reaches the temporary server of a session without PREFECT_API_URL too), and Ctrl-C interrupts it anywhere."""
    stopper = _Stopper()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopper)
    runner = _Runner(stopper, pause_on_shutdown=False, limit=limit)
    try:
        deployments = load_deployments(prefect_file, config, data_root)
        for _, env in deployments:
            os.environ.update(env)  # runs inherit this process's environment, as a process worker's do
        ids = [runner.add_deployment(d) for d, _ in deployments]
        print(f"Serving {', '.join(f'{d.flow_name}/{d.name}' for d, _ in deployments)}; SIGTERM or Ctrl-C stops.", flush=True)
        problems = asyncio.run(_serve(runner, ids, stopper))
    except _Stopped:
        problems = ["before serving began"]
    return f"llmpipe serve: stopped on {stopper.signal}" + "".join(f"; {p}" for p in problems)


async def _serve(runner: Runner, ids: list[UUID], stopper: _Stopper) -> list[str]:
    """Serve until `stopper` is woken, then stop as Prefect's serve does, but within STOP_SECONDS: pause the schedules,
    cancel the runs in flight. What could not be done."""
    stopper.loop = asyncio.get_running_loop()
    serving = asyncio.ensure_future(runner.start())
    woken = asyncio.ensure_future(stopper.event.wait())
    await asyncio.wait([serving, woken], return_when=asyncio.FIRST_COMPLETED)
    woken.cancel()
    if serving.done():
        serving.result()  # start() ends by itself only by failing: raise why
    problems, deadline = [], stopper.loop.time() + STOP_SECONDS
    try:
        async with asyncio.timeout(PAUSE_SECONDS):  # the client's retries ride out a busy server, not one that is gone
            async with get_client() as client:
                for deployment_id in ids:
                    await client.pause_deployment(deployment_id)
    except TimeoutError:
        problems.append(f"schedules not paused: no answer from the API within {PAUSE_SECONDS} s")
    except Exception as exc:
        problems.append(f"schedules not paused: {type(exc).__name__}: {exc}")
    try:
        async with asyncio.timeout_at(deadline):
            if runner.started:
                await runner.astop()  # cancels the runs in flight, ends the polling loops: start() returns
            else:
                serving.cancel()  # still starting: no run yet
            await asyncio.wait([serving])
    except TimeoutError:
        problems.append(f"gave up on cancelling the runs in flight after {STOP_SECONDS} s")
    serving.cancel()
    return problems
