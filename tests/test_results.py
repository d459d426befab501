"""Task results on a shared data root: JSON only, never unpickled, paths relative to the root, so a root can
be moved or copied, and a result whose output was deleted runs its task again (real Prefect test server)."""

from __future__ import annotations

import base64
import json
import pickle
import shutil
from pathlib import Path

import pytest
from prefect import flow, get_client, task, unmapped
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from tasks.common import STAGE_TASK, bind, cache_refreshed
from tasks.results import PLACEHOLDER, results_dir


@task(**{**STAGE_TASK, "cache_key_fn": lambda context, params: f"part-{params['name']}"})
def write_part(data_root: str, name: str) -> str:
    out = Path(data_root, "stage", name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(name)
    return str(out)


@flow
def two_parts(data_root: str) -> list[str]:
    # mapped: the parts run in the task runner's threads, as the data flow's do
    return bind(write_part, data_root).map(unmapped(data_root), ["a", "b"]).result()


def run(root: Path) -> tuple[list[str], list[str]]:
    """The flow's result and its task runs' state names."""
    state = two_parts(str(root), return_state=True)
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return state.result(), sorted(r.state.name for r in runs)


class Planted:
    """A pickle that creates a file when loaded: what an attacker with write access to the root would plant."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_results_are_json_with_root_relative_paths(prefect_server, tmp_path):
    root = tmp_path / "root"
    paths, states = run(root)
    assert states == ["Completed", "Completed"] and paths == [str(root / "stage" / "a"), str(root / "stage" / "b")]
    record = json.loads((results_dir(root) / "part-a").read_text())
    assert record["metadata"]["serializer"]["type"] == "json"
    assert json.loads(record["result"]) == f"{PLACEHOLDER}/stage/a" and str(root) not in json.dumps(record)
    assert run(root) == (paths, ["Cached", "Cached"])


def test_a_planted_pickle_is_never_loaded_and_the_task_runs_again(prefect_server, tmp_path):
    root, marker = tmp_path / "root", tmp_path / "pwned"
    run(root)
    payload = base64.b64encode(pickle.dumps(Planted(marker))).decode()
    record = json.loads((results_dir(root) / "part-a").read_text())
    record["metadata"]["serializer"] = {"type": "pickle", "picklelib": "pickle"}
    record["result"] = payload
    (results_dir(root) / "part-a").write_text(json.dumps(record))
    paths, states = run(root)
    assert not marker.exists()
    assert states == ["Cached", "Completed"] and paths[0] == str(root / "stage" / "a")
    assert json.loads((results_dir(root) / "part-a").read_text())["metadata"]["serializer"]["type"] == "json"


@pytest.mark.parametrize("how", ["move", "copy"])
def test_a_moved_or_copied_root_reads_its_own_files(prefect_server, tmp_path, how):
    old, new = tmp_path / "old", tmp_path / "new"
    run(old)
    if how == "move":
        shutil.move(old, new)
    else:
        shutil.copytree(old, new)
        (new / "stage" / "b").unlink()  # the copy lost an output: rebuilt in the copy, never read from the old root
    paths, states = run(new)
    assert paths == [str(new / "stage" / "a"), str(new / "stage" / "b")]
    assert states == (["Cached", "Cached"] if how == "move" else ["Cached", "Completed"])
    assert (new / "stage" / "b").read_text() == "b"


def test_refresh_cache_runs_every_task_again(prefect_server, tmp_path):
    """What `llmpipe run --refresh-cache` does (the variable PREFECT_TASKS_REFRESH_CACHE, set after Prefect's
    import as the CLI did before, changed nothing: every task came back Cached)."""
    root = tmp_path / "root"
    run(root)
    with cache_refreshed():
        assert run(root)[1] == ["Completed", "Completed"]
    assert run(root)[1] == ["Cached", "Cached"]


@flow(persist_result=True, result_serializer="json")
def child_flow(data_root: str) -> list[str]:
    return [str(Path(data_root, "stage", "a"))]


@flow(persist_result=True, result_serializer="json")
def parent_flow(data_root: str) -> list[str]:
    from tasks.results import DataRootResults

    return child_flow.with_options(result_storage=DataRootResults.of(data_root))(data_root)


def test_a_subflow_result_persists_as_json_under_the_root(prefect_server, tmp_path):
    """A flow's result is stored as its value alone (Prefect keeps the metadata in the run's state): persisted, so that
    retrying the parent reuses a finished subflow, as plain JSON with root-relative paths."""
    from tasks.results import DataRootResults

    root = tmp_path / "data"
    (root / "stage").mkdir(parents=True)
    (root / "stage" / "a").write_text("a")
    state = parent_flow.with_options(result_storage=DataRootResults.of(root))(str(root), return_state=True)
    assert state.result() == [str(root / "stage" / "a")]
    stored = [json.loads(p.read_text()) for p in results_dir(root).iterdir()]
    assert [f"{PLACEHOLDER}/stage/a"] in stored  # the subflow's and the parent's result, relative to the root
