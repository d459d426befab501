"""deployments/prefect.yaml against a real `prefect server start`, a process work pool and its workers.

The failure is injected into the worker, not the run: a worker with LLMPIPE_FAIL_STAGE set (a
broken node) fails the run, a healthy one runs the retry. Injecting it through the run's job
variables would not do: `prefect flow-run retry` keeps a run's job variables, so the retry fails again.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from flow_helpers import children, stage_of, task_runs
from flows.serve import load_deployments
from live_prefect import wait_final
from llmcore.manifest import HIDDEN_MANIFEST
from tasks.common import FAIL_ENV

pytestmark = pytest.mark.slow
FAILING = "language"
BEFORE = {"ingest", "clean"}  # the stages that finish before it


def stage_task_runs(server, pipeline_run_id) -> list:
    with server.settings():
        return [r for child in children(pipeline_run_id) for r in task_runs(child.id)]


def test_schedules_and_parameters_are_deployed(deployed):
    with deployed.server.settings(), get_client(sync_client=True) as client:
        nightly = client.read_deployment(deployed.deployments["pipeline/nightly"])
        refresh = client.read_deployment(deployed.deployments["data/refresh"])
        pretrain = client.read_deployment(deployed.deployments["pretrain/on-demand"])
        upcoming = _upcoming(client, nightly.id)
    [cron] = nightly.schedules
    assert (cron.schedule.cron, cron.schedule.timezone, cron.active) == ("0 2 * * *", "UTC", True)
    assert nightly.global_concurrency_limit.limit == 1
    assert [s.schedule.interval for s in refresh.schedules] == [timedelta(hours=6)]
    assert refresh.global_concurrency_limit is None
    assert pretrain.schedules == [] and pretrain.global_concurrency_limit.limit == 1

    # upcoming, not backfilled; a run that came due at 02:00 while the suite ran is still there (late), so allow that
    since = datetime.now(timezone.utc) - timedelta(minutes=30)
    assert len(upcoming) >= 3
    assert all(t > since and (t.hour, t.minute) == (2, 0) for t in upcoming)
    assert [b - a for a, b in zip(upcoming, upcoming[1:3])] == [timedelta(days=1)] * 2

    # The config file went in whole, its relative source path made absolute; the UI's form comes
    # from the pydantic schema, with each section's fields, types and defaults.
    [source] = nightly.parameters["config"]["data"]["ingest"]["sources"]
    assert source["path"] == str(deployed.data_root.parent / "corpus")
    assert nightly.parameters["data_root"] == str(deployed.data_root)
    assert refresh.parameters["config"] == nightly.parameters["config"]["data"]
    assert pretrain.parameters["config"] == nightly.parameters["config"]["pretrain"]
    assert "tokens_manifest" in pretrain.parameter_openapi_schema["required"]  # given when triggered
    schema = nightly.parameter_openapi_schema
    assert schema["required"] == ["config"]
    language = schema["definitions"]["LanguageConfig"]["properties"]
    assert language["min_prob"]["type"] == "number" and language["min_prob"]["default"] == 0.8


def _upcoming(client, deployment_id, timeout: float = 60) -> list[datetime]:
    """Scheduled start times of the deployment's runs, once the server's scheduler has made them."""
    deadline = time.monotonic() + timeout
    while True:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
        )
        if len(runs) >= 3 or time.monotonic() > deadline:
            return sorted(r.expected_start_time for r in runs)
        time.sleep(1)


def test_serve_serves_what_prefect_deploy_deployed(deployed):
    """`llmpipe serve` reads the same prefect.yaml: same parameters, schedules and limits, no work pool."""
    served = {d.name: d for d, _ in load_deployments(config=str(deployed.config), data_root=str(deployed.data_root))}
    with deployed.server.settings(), get_client(sync_client=True) as client:
        for deployment_id in deployed.deployments.values():
            server_side = client.read_deployment(deployment_id)
            local = served[server_side.name]
            assert local.parameters == server_side.parameters
            assert [s.schedule for s in local.schedules] == [s.schedule for s in server_side.schedules]
            limit = server_side.global_concurrency_limit
            assert local.concurrency_limit == (limit.limit if limit else None)
            assert local.work_pool_name is None


def test_worker_runs_the_triggered_pipeline(deployed, pipeline_run):
    assert pipeline_run.state.is_completed(), pipeline_run.state.message
    # tagged as `llmpipe run` tags its runs, by the flow from the config it was given: the run, its subflow runs, their tasks
    tags = {"llmpipe", "config:deployed", f"root:{pipeline_run.parameters['data_root']}"}
    with deployed.server.settings():
        subflows = children(pipeline_run.id)
    stage_tasks = stage_task_runs(deployed.server, pipeline_run.id)
    assert tags <= set(pipeline_run.tags) and subflows and stage_tasks
    assert all(tags <= set(r.tags) for r in subflows + stage_tasks)
    manifests = sorted(p.parent.parent.name for p in deployed.data_root.glob(f"*/*/{HIDDEN_MANIFEST}"))
    assert BEFORE | {FAILING} <= set(manifests)
    assert list((deployed.data_root / "prefect-results").iterdir())  # task and flow results on the shared root
    with deployed.server.settings(), get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(  # published by the data stage flow, a child of the pipeline run
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["data-funnel"])),
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[pipeline_run.id])),
        )
    assert [a.type for a in artifacts] == ["table"]


def test_retry_of_a_failed_deployment_run_reruns_only_the_failed_stages(deployed, tmp_path):
    server = deployed.server
    run_id = deployed.trigger("pipeline/nightly", data_root=str(tmp_path / "shared"))  # nothing cached yet
    server.run_worker_once(extra_env={FAIL_ENV: FAILING})
    assert wait_final(server, run_id).state.is_failed()
    first = stage_task_runs(server, run_id)
    failing = {r.state.name for r in first if stage_of(r) == FAILING}
    assert "Failed" in failing and failing <= {"Failed", "Crashed"}  # parts in flight when the run stopped: Crashed
    assert {r.state.name for r in first if stage_of(r) in BEFORE} == {"Completed"}
    assert not list(tmp_path.glob(f"shared/{FAILING}/*/{HIDDEN_MANIFEST}"))

    server.cli("flow-run", "retry", str(run_id))
    server.run_worker_once()
    assert wait_final(server, run_id).state.is_completed()
    seen = {r.id for r in first}
    retried = [r for r in stage_task_runs(server, run_id) if r.id not in seen]
    states: dict[str, set[str]] = {}
    for r in retried:
        states.setdefault(stage_of(r), set()).add(r.state.name)
    assert {stage: states.pop(stage) for stage in BEFORE} == {stage: {"Cached"} for stage in BEFORE}
    assert states.pop(FAILING) == {"Completed"}
    assert all(names == {"Completed"} for names in states.values()), states  # the later stages ran
