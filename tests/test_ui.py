"""The Prefect UI of the live server in headless Chromium (the `page` fixture): a deployed run's data funnel,
a deployment's form."""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterParentFlowRunId

pytestmark = pytest.mark.slow


def test_flow_run_shows_the_data_funnel_artifact(live_server, pipeline_run, page, screenshot):
    with live_server.settings(), get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["data-funnel"])),
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[pipeline_run.id])),
        )
        data_run = client.read_flow_run(artifact.flow_run_id)
        run_name = client.read_flow_run(pipeline_run.id).name
    rows = json.loads(artifact.data)
    # runs are told apart by name: the config's name and when (the deployed config is named "deployed")
    assert run_name.startswith("deployed-") and data_run.name == f"{run_name}/data"

    # As a user would: the pipeline run, its data subflow run, that run's artifacts, the funnel.
    page.goto(f"{live_server.url}/runs/flow-run/{pipeline_run.id}")
    page.get_by_text("Subflow Runs", exact=True).click()
    page.get_by_text(data_run.name, exact=True).click()
    page.get_by_text("Artifacts", exact=True).click()
    page.get_by_text("data-funnel", exact=True).first.click()
    table = page.locator("table")
    table.get_by_text("quarantined", exact=True).wait_for()
    shown = table.inner_text()
    screenshot("data-funnel")
    for row in rows:
        assert row["stage"] in shown and row["key"] in shown, (row, shown)


def test_custom_run_form_shows_the_config_fields(live_server, deployed, page, screenshot):
    page.goto(f"{live_server.url}/deployments/deployment/{deployed.deployments['pipeline/nightly']}/run")  # "Custom run"
    # Fields with their descriptions from the pydantic models, prefilled with the deployed config.
    page.get_by_text("Min Prob (Optional)").wait_for()
    page.get_by_text("drop documents whose top language is less likely than this").wait_for()
    corpus = str(deployed.data_root.parent / "corpus")
    assert page.locator("textarea, input").evaluate_all("els => els.map(e => e.value)").count(corpus) == 1
    screenshot("custom-run")
