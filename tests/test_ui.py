"""The Prefect UI of the live server in headless Chromium (the `page` fixture): a deployed run's data funnel and
training artifacts, the example outputs of an evaluation, a deployment's form."""

from __future__ import annotations

import json
import re

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterParentFlowRunId

from flow_helpers import artifacts, children
from flows.evaluate import SHOWN_CHARS, examples_markdown

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


def _significant(number: str) -> int:
    """Significant digits of a number as shown: "8.498" 4, "4907.0" 4, "0.01234" 4, "8.4275652885437" 14."""
    return len(number.replace(".", "").strip("0"))


def test_a_training_run_shows_its_progress_and_one_evaluation_table(live_server, pipeline_run, page, screenshot):
    """The deployed pipeline's pretrain run: one progress artifact, updated in place up to the last step with its loss;
    one evaluation table for the run's key, not a copy per evaluation; numbers to 4 significant digits."""
    with live_server.settings():
        [pretrain] = [run for run in children(pipeline_run.id) if run.name.endswith("/pretrain")]
        [table] = artifacts(pretrain.id, key=ArtifactFilterKey(any_=["pretrain-eval"]))

    page.goto(f"{live_server.url}/runs/flow-run/{pretrain.id}")
    page.get_by_text("Artifacts", exact=True).click()
    cards = page.locator(".artifact-card")
    cards.filter(has_text="pretrain-eval").wait_for()
    shown = cards.all_inner_texts()
    screenshot("training-artifacts")
    assert len(shown) == 3 and sum("pretrain-eval" in card for card in shown) == 1  # with the curve and the progress
    [progress] = [card.splitlines()[-1] for card in shown if card.startswith("PROGRESS")]
    assert re.fullmatch(r"pretrain: step (\d+)/\1, loss [\d.]+, val_loss [\d.]+, val_ppl [\d.]+", progress), progress
    assert all(_significant(n) <= 4 for n in re.findall(r"\d+\.\d+", progress)), progress

    cards.filter(has_text="pretrain-eval").click()
    page.locator("table").get_by_text("val_loss", exact=True).wait_for()
    cells = page.locator("table td").all_inner_texts()
    numbers = [c for c in cells if re.fullmatch(r"\d+\.\d+", c)]
    screenshot("pretrain-eval")
    assert len(page.locator("table tbody tr").all()) == len(json.loads(table.data))
    assert numbers and all(_significant(n) <= 4 for n in numbers), numbers


def test_example_outputs_fit_the_page(live_server, page, screenshot):
    """The evaluation-examples artifact as the evaluate flow writes it, for outputs much longer than a line: each text
    is cut (the file it names has them in full), and nothing in it is wider than the page."""
    long = " ".join(f"word{i}" for i in range(400))
    results = [{"name": "summarization", "task": "summarization", "baseline": {"name": "lead"},
                "manifest": "/data/evaluate/0123456789abcdef/manifest.json",
                "samples": [{"source": long, "reference": long, "prediction": long, "baseline": long}] * 2}]
    with live_server.settings(), get_client(sync_client=True) as client:
        artifact = client.create_artifact(ArtifactCreate(key="evaluation-examples", type="markdown", data=examples_markdown(results)))

    page.goto(f"{live_server.url}/artifacts/artifact/{artifact.id}")
    body = page.locator("article.artifact-data-markdown")
    body.locator("li").first.wait_for()
    shown = body.locator("li").all_inner_texts()
    screenshot("evaluation-examples")
    assert len(shown) == 2 * 4 and all(text.endswith(" ...") and len(text) <= len("reference: ") + SHOWN_CHARS + 4 for text in shown), shown
    assert body.evaluate("md => [...md.querySelectorAll('*')].every(e => e.scrollWidth <= md.clientWidth)")


def test_custom_run_form_shows_the_config_fields(live_server, deployed, page, screenshot):
    page.goto(f"{live_server.url}/deployments/deployment/{deployed.deployments['pipeline/nightly']}/run")  # "Custom run"
    # Fields with their descriptions from the pydantic models, prefilled with the deployed config.
    page.get_by_text("Min Prob (Optional)").wait_for()
    page.get_by_text("drop documents whose top language is less likely than this").wait_for()
    corpus = str(deployed.data_root.parent / "corpus")
    assert page.locator("textarea, input").evaluate_all("els => els.map(e => e.value)").count(corpus) == 1
    screenshot("custom-run")
