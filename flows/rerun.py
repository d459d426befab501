"""Retry a finished flow run in this process, as `prefect flow-run retry --entrypoint` does.

The run keeps its id and parameters; tasks whose results are cached come back Cached, so only
the stages that failed (and those after them) execute again.
"""

from __future__ import annotations

from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow
from prefect.states import Scheduled, State


def _flows() -> dict[str, Flow]:
    from flows.data import data_flow
    from flows.pipeline import pipeline_flow

    return {f.name: f for f in (data_flow, pipeline_flow)}


def retry_flow_run(flow_run_id: str | UUID) -> State:
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(str(flow_run_id)))
        flow_name = client.read_flow(flow_run.flow_id).name
        if flow_name not in _flows():
            raise ValueError(f"flow run {flow_run_id} belongs to flow {flow_name!r}, not one of {sorted(_flows())}")
        if flow_run.state is None or not flow_run.state.is_final():
            state = flow_run.state.type.value if flow_run.state else "unknown"
            raise ValueError(f"flow run {flow_run_id} is {state}; only finished runs can be retried")
        client.set_flow_run_state(flow_run.id, Scheduled(message="Retried by llmpipe retry"), force=True)
        flow_run = client.read_flow_run(flow_run.id)
    flow = _flows()[flow_name]
    return run_flow(flow=flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
