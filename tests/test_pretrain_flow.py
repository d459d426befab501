"""The pretrain flow on a real Prefect server: a training task that crashes is retried and resumes from
its checkpoint; the run shows up as progress, table and markdown (loss curve PNG) artifacts; a rerun is
cached; in the UI of a live server, the loss curve of a deployed pipeline run is drawn."""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.sorting import ArtifactSort

from flow_helpers import artifacts, task_runs
from flows.pretrain import pretrain_flow
from llmcore.manifest import file_sha256
from tasks.train import CRASH_ENV, readable
from train_helpers import data_root, events, tiny

pytestmark = pytest.mark.slow


def test_crashed_training_task_is_retried_and_resumes_from_its_checkpoint(prefect_server, tmp_path, monkeypatch):
    root, tokens = data_root(tmp_path)
    cfg = tiny(max_steps=20, checkpoint_every=5, eval_every=10)
    monkeypatch.setenv(CRASH_ENV, "12")
    state = pretrain_flow(cfg, str(tokens), str(root), return_state=True)
    assert state.is_completed()
    manifest_path = state.result()
    manifest = json.loads(open(manifest_path).read())
    run_dir = root / "pretrain" / manifest["key"]
    assert manifest["checkpoint"] == "checkpoints/step-00000020"
    model = next(f for f in manifest["files"] if f["path"].endswith("model.safetensors"))
    assert model["sha256"] == file_sha256(run_dir / model["path"])
    # the second attempt started from the step-10 checkpoint, not from scratch
    assert [e["resumed_from"] for e in events(run_dir, "start")] == [0, 10]
    [run] = [r for r in task_runs(state.state_details.flow_run_id) if r.name.startswith("pretrain")]
    assert run.state.is_completed() and run.run_count == 2
    tags = {"llmpipe", f"root:{root.absolute()}"}  # as the on-demand deployment's runs are
    with get_client(sync_client=True) as client:
        assert tags <= set(client.read_flow_run(state.state_details.flow_run_id).tags) and tags <= set(run.tags)

    flow_run = state.state_details.flow_run_id
    progress = artifacts(flow_run, type=ArtifactFilterType(any_=["progress"]))
    assert progress and max(float(a.data) for a in progress) == 100.0
    [table] = artifacts(flow_run, key=ArtifactFilterKey(any_=["pretrain-eval"]))[:1]
    assert [row["step"] for row in json.loads(table.data)] == [10, 20]
    [curve] = artifacts(flow_run, key=ArtifactFilterKey(any_=["pretrain-loss-curve"]))[:1]
    assert "![loss curve](data:image/png;base64,iVBORw0KGgo" in curve.data

    monkeypatch.delenv(CRASH_ENV)
    again = pretrain_flow(cfg, str(tokens), str(root), return_state=True)
    assert again.result() == manifest_path
    [cached] = [r for r in task_runs(again.state_details.flow_run_id) if r.name.startswith("pretrain")]
    assert cached.state.name == "Cached"


def test_the_loss_curve_shows_in_the_prefect_ui(live_server, pipeline_run, page, screenshot):
    """The deployed pipeline's pretrain artifact page, in headless Chromium: the embedded PNG is drawn."""
    with live_server.settings(), get_client(sync_client=True) as client:
        [curve] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["pretrain-loss-curve"])), sort=ArtifactSort.CREATED_DESC,
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[pipeline_run.id])))[:1]
    page.goto(f"{live_server.url}/artifacts/artifact/{curve.id}")
    image = page.locator("img[src^='data:image/png;base64,']")
    image.wait_for()
    page.wait_for_function("() => document.querySelector(\"img[src^='data:image/png']\").naturalWidth > 0")
    assert image.evaluate("img => img.naturalWidth") >= 400
    screenshot("loss-curve")


def test_figures_shown_in_the_ui_have_4_significant_digits_and_no_trailing_zero():
    assert readable(8.4275652885437) == 8.428 and readable(0.012345678) == 0.01235
    assert readable(4907.4) == 4907 and str(readable(4907.4)) == "4907"  # not 4907.0
    assert str(readable(123456.7)) == "123500" and readable(7) == 7 and readable("fp32") == "fp32"
