"""benchmarks/peers.py at CI size: the same corpus through llmpipe's ingest -> clean -> dedup and datatrove's
reader -> the same four filters -> its MinHash dedup; the filter steps keep and drop the same documents.

Needs datatrove's venv (benchmarks/peers.py says how to make it; LLMPIPE_PEER_PYTHON points elsewhere); the
full-size run and its figures are in BENCHMARKS.md ("Data flow beside datatrove")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PEER = os.environ.get("LLMPIPE_PEER_PYTHON", "/work/peers-venv/bin/python")
pytestmark = pytest.mark.slow  # both pipelines, a Prefect server and a Dask LocalCluster: a minute or two


@pytest.mark.skipif(not Path(PEER).exists(), reason=f"datatrove's venv is missing ({PEER}); benchmarks/peers.py "
                    "prints how to create it")
def test_filters_agree_with_datatrove_and_dedup_is_scored(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peers.py"), "--quick", "--workdir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["docs"] == 1000 and result["bytes"] >= 900_000
    assert result["kept_agreement"] >= 0.99, result["filters"]
    assert 0 < result["filters"]["ours_kept"] < result["docs"]  # the filters had work: some kept, most dropped
    assert result["dedup_kept_agreement"] >= 0.95, result["dedup"]
    for side in ("ours", "peer"):
        assert result["dedup"][side]["recall"] >= 0.8, result["dedup"]
    assert result["ours_peak_rss_mb"] > 0 and result["peer_peak_rss_mb"] > 0
