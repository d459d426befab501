"""One real Prefect test server per session, with result storage in a temp dir (DESIGN.md §4)."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# precision probes of the tests' tiny models stay out of the user's ~/.cache (subprocesses inherit it)
os.environ["LLMPIPE_CACHE_DIR"] = tempfile.mkdtemp(prefix="llmpipe-test-cache-")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A temporary Prefect API (SQLite) for the tests that run flows; started once (~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(tmp_path_factory.mktemp("prefect-results"))
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """When a selected test needs the live server, start it now: it boots while the other tests run."""
    if not config.option.collectonly and any("live_server" in item.fixturenames for item in items):
        from live_prefect import boot

        boot()


@pytest.fixture(scope="session")
def live_server():
    """A `prefect server start` process (SQLite in a temp PREFECT_HOME, a free loopback port), UI included."""
    from live_prefect import live_server

    with live_server() as server:
        yield server


@pytest.fixture(scope="session")
def deployed(live_server, tmp_path_factory):
    """deployments/prefect.yaml deployed to the live server (a process pool), on a small corpus."""
    from live_prefect import deploy

    return deploy(live_server, tmp_path_factory.mktemp("deployed"))


@pytest.fixture(scope="session")
def pipeline_run(deployed):
    """The nightly pipeline deployment, triggered through the API and run to the end by a worker."""
    from live_prefect import wait_final

    run_id = deployed.trigger("pipeline/nightly")
    deployed.server.run_worker_once()
    return wait_final(deployed.server, run_id)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, and a busy 2-core machine makes OpenMP threads spin-wait."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
