"""What every llmpipe task shares: content cache keys, persisted results, retries, run tags.

Two cache layers: Prefect's cache, keyed by the stage directory's content key and
the part, and the disk, where a finished part or stage is found by its marker file even when the
Prefect result store was wiped.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from prefect import Task, get_client, tags
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings
from prefect.tasks import exponential_backoff

from llmcore.config import ConfigError
from llmcore.data.readers import SourceError
from llmcore.manifest import ManifestError
from tasks.results import DataRootResults

FAIL_ENV = "LLMPIPE_FAIL_STAGE"  # tests set it to a stage name to make that stage fail


class InjectedFailure(RuntimeError):
    """Raised by a stage named in $LLMPIPE_FAIL_STAGE: a test's stand-in for an OOM or lost node."""


def maybe_fail(stage: str) -> None:
    if os.environ.get(FAIL_ENV) == stage:
        raise InjectedFailure(f"stage {stage!r} failed on purpose ({FAIL_ENV}={stage})")


# Fail the same way every time: a retry would only repeat them (a damaged model file is a ManifestError too).
PERMANENT = (InjectedFailure, SourceError, ConfigError, ManifestError)


def retry_unless(*permanent: type[BaseException]):
    """A retry condition: retry any failure but these, which would fail the same way again."""

    def worth_retrying(task: Task, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except permanent:
            return False
        except Exception:
            return True
        return True

    return worth_retrying


def _part_key(context: Any, params: dict) -> str:
    return f"{params['stage']}-{params['key']}-{params.get('part', 'manifest')}"


# Options of every stage task: retried with backoff, cached by content, result persisted (a path, as JSON).
STAGE_TASK = dict(
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless(*PERMANENT),
    cache_key_fn=_part_key,
    persist_result=True,
    result_serializer="json",
)


def cache_refreshed(enabled: bool = True):
    """A context in which Prefect ignores its cache (tasks run and overwrite their results; stages on disk are
    still reused). A settings context, read as each task starts: PREFECT_TASKS_REFRESH_CACHE in the
    environment is read once, when Prefect is imported, so setting it later does nothing."""
    return temporary_settings({PREFECT_TASKS_REFRESH_CACHE: enabled})


def bind(stage_task: Task, data_root: str | Path) -> Task:
    """The task with its results stored under the data root (tasks/results.py)."""
    return stage_task.with_options(result_storage=DataRootResults.of(data_root))


@contextmanager
def tagged(*names: str) -> Iterator[None]:
    """This flow run tagged with `names`, and the subflow and task runs made in the block (prefect.tags). A
    deployment creates its run before the flow reads the config that names it, so the flow tags its own run
    (a subflow run already carries its parent's tags: nothing to update)."""
    run = FlowRunContext.get().flow_run
    if not set(names) <= set(run.tags):
        with get_client(sync_client=True) as client:
            client.update_flow_run(run.id, tags=[*run.tags, *(n for n in names if n not in run.tags)])
    with tags(*names):
        yield
