"""Reading flow runs back from the Prefect API of the current settings: their task runs, child flow runs
and artifacts."""

from __future__ import annotations

import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
from prefect.client.schemas.sorting import ArtifactSort


def task_runs(flow_run_id: UUID, timeout: float = 60) -> list:
    """The flow run's task runs once the server has recorded them all (states arrive as events)."""
    deadline, last = time.monotonic() + timeout, None
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            seen = sorted((str(r.id), r.state.name if r.state else "") for r in runs)
            settled = seen == last and all(r.state and r.state.is_final() for r in runs)
            if settled or time.monotonic() > deadline:
                return runs
            last = seen
            time.sleep(1.0)


def stage_of(task_run) -> str:
    """The stage a task run works for, read from its name: a part task "<stage>-<part name>" ("clean-part-00003"),
    a global step "<stage>-<step>..." ("dedup-signature-part-00001", "dedup-cluster", "augment-model-reverse",
    "augment-translate"), the tokenizer's "tokenizer", or "finalize-<stage>"."""
    name = task_run.name
    return name.split("-")[1] if name.startswith("finalize-") else name.split("-")[0]


def children(flow_run_id) -> list:
    """The flow runs started by a flow run (the pipeline's stage flows)."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))


def artifacts(flow_run_id, **filters):
    """The flow run's artifacts matching `filters`, newest first."""
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(**filters), sort=ArtifactSort.CREATED_DESC,
                                     flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
