"""The Prefect UI of the live server in headless Chromium: a deployed run's data funnel, a deployment's form.

Debian's `chromium` (installed by .ci/run) driven by Playwright through its executable path:
nothing is downloaded. Screenshots go to the test's tmp_path, recorded as `screenshot` properties.
"""

from __future__ import annotations

import json
import shutil

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterParentFlowRunId

CHROMIUM = shutil.which("chromium")
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
]  # Playwright adds --headless itself (headless=True)
TIMEOUT_MS = 90_000  # the UI's first load is slow on a busy 2-core machine


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium package (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    page.close()


def _screenshot(page, tmp_path, name: str, record_property) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    record_property("screenshot", str(path))
    print(f"screenshot: {path}")


def test_flow_run_shows_the_data_funnel_artifact(live_server, pipeline_run, page, tmp_path, record_property):
    with live_server.settings(), get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["data-funnel"])),
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[pipeline_run.id])),
        )
        data_run = client.read_flow_run(artifact.flow_run_id)
    rows = json.loads(artifact.data)

    # As a user would: the pipeline run, its data subflow run, that run's artifacts, the funnel.
    page.goto(f"{live_server.url}/runs/flow-run/{pipeline_run.id}")
    page.get_by_text("Subflow Runs", exact=True).click()
    page.get_by_text(data_run.name, exact=True).click()
    page.get_by_text("Artifacts", exact=True).click()
    page.get_by_text("data-funnel", exact=True).first.click()
    table = page.locator("table")
    table.get_by_text("quarantined", exact=True).wait_for()
    shown = table.inner_text()
    _screenshot(page, tmp_path, "data-funnel", record_property)
    for row in rows:
        assert row["stage"] in shown and row["key"] in shown, (row, shown)


def test_custom_run_form_shows_the_config_fields(live_server, deployed, page, tmp_path, record_property):
    page.goto(f"{live_server.url}/deployments/deployment/{deployed.deployments['pipeline/nightly']}/run")  # "Custom run"
    # Fields with their descriptions from the pydantic models, prefilled with the deployed config.
    page.get_by_text("Min Prob (Optional)").wait_for()
    page.get_by_text("drop documents whose top language is less likely than this").wait_for()
    corpus = str(deployed.data_root.parent / "corpus")
    assert page.locator("textarea, input").evaluate_all("els => els.map(e => e.value)").count(corpus) == 1
    _screenshot(page, tmp_path, "custom-run", record_property)
