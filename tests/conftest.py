"""One real Prefect server per session for every test that needs one, with result storage in a temp dir;
the fixtures several test modules share."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from token_helpers import SAMPLE

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# precision probes of the tests' tiny models stay out of the user's ~/.cache (subprocesses inherit it)
os.environ["LLMPIPE_CACHE_DIR"] = tempfile.mkdtemp(prefix="llmpipe-test-cache-")

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
]  # Playwright adds --headless itself (headless=True)
PAGE_TIMEOUT_MS = 90_000  # the UI's first load is slow on a busy 2-core machine


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The tests that need the Prefect server run last, and the server starts now: it boots, and the deployed
    pipeline runs on it, while the others run."""
    items.sort(key=lambda item: "live_server" in item.fixturenames)  # stable: file order within each group
    if not config.option.collectonly and any("live_server" in item.fixturenames for item in items):
        from live_prefect import boot

        boot(pipeline=any("pipeline_run" in item.fixturenames for item in items))


@pytest.fixture(scope="session")
def live_server():
    """The session's one `prefect server start` process (SQLite in a temp PREFECT_HOME, a free loopback port),
    UI included; the flow tests use it too (prefect_server)."""
    from live_prefect import live_server

    with live_server() as server:
        yield server


@pytest.fixture(scope="session")
def prefect_server(live_server, tmp_path_factory):
    """Flows run in the test process report to the live server, their results stored in a temp dir."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(tmp_path_factory.mktemp("prefect-results"))
    with live_server.settings():
        yield
        # what the flows logged and emitted reaches the server before it stops
        APILogWorker.drain_all()
        EventsWorker.drain_all()


@pytest.fixture(scope="session")
def deployed(live_server, tmp_path_factory):
    """deployments/prefect.yaml deployed to the live server (a process pool), on a small corpus; made early,
    together with pipeline_run, when the session wants that run."""
    from live_prefect import deploy, early_pipeline

    early = early_pipeline()
    return early[0] if early else deploy(live_server, tmp_path_factory.mktemp("deployed"))


@pytest.fixture(scope="session")
def pipeline_run(deployed):
    """The nightly pipeline deployment, triggered through the API and run to the end by a worker."""
    from live_prefect import early_pipeline, run_pipeline

    early = early_pipeline()
    return early[1] if early else run_pipeline(deployed)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A slice of the bundled sample (real text, four languages) plus one malformed line."""
    out = tmp_path / "corpus"
    out.mkdir()
    for path in sorted(SAMPLE.glob("*.jsonl")):
        (out / path.name).write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:30]), encoding="utf-8")
    with (out / sorted(SAMPLE.glob("*.jsonl"))[0].name).open("a") as fh:
        fh.write('{"text": "a line cut off mid-write\n')
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, and a busy 2-core machine makes OpenMP threads spin-wait."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's `chromium` (installed by .ci/run) driven by Playwright through its executable path: nothing
    is downloaded. Per module: Playwright's sync API runs an event loop on this thread while it is open, and
    under it Prefect's sync calls (State.result) return coroutines."""
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium package (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    yield page
    page.close()


@pytest.fixture
def screenshot(page, tmp_path, record_property):
    """screenshot(name): the whole page as <tmp_path>/<name>.png, recorded as the test's `screenshot` property."""
    def take(name: str) -> None:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=path, full_page=True)
        record_property("screenshot", str(path))
        print(f"screenshot: {path}")

    return take
