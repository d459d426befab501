"""The deployments of deployments/prefect.yaml: its build step, and serving them without a work pool.

`prefect deploy` runs `deploy_settings` as the build step and stores its outputs as the deployments'
parameters; `llmpipe serve` reads the same file, so both give the same schedules, parameters and
concurrency limits, from one place.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import yaml
from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.flows import load_flow_from_entrypoint
from prefect.schedules import Schedule
from prefect.utilities.templating import apply_values

from flows.cli import DEFAULT_CONFIG
from flows.data import DEFAULT_DATA_ROOT
from llmcore.config import load_config
from tasks.results import results_dir

PROJECT_DIR = Path(__file__).resolve().parents[1]
PREFECT_FILE = PROJECT_DIR / "deployments" / "prefect.yaml"
STEP_ID = "llmpipe"  # the build step's id in prefect.yaml, whose outputs it uses as {{ llmpipe.* }}


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


def serve_deployments(prefect_file: Path = PREFECT_FILE, config: str = "", data_root: str = "", limit: int | None = None) -> None:
    """Run the deployments' schedules and triggered runs in this process (each run in a subprocess)."""
    deployments = load_deployments(prefect_file, config, data_root)
    for _, env in deployments:
        os.environ.update(env)  # runs inherit this process's environment, as a process worker's do
    serve(*(d for d, _ in deployments), limit=limit)
