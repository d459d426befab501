"""The language classifier called from a script without an `if __name__ == "__main__":` guard, in a real subprocess:
worker processes would import the script again and re-run it (then BrokenProcessPool), so it classifies in-process,
with one warning saying how to get the parallel speed; a guarded script still gets the workers. Same answers either way."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmcore.data.language import POOL_MIN_DOCS, detect_languages
from token_helpers import sample_texts

PREFIX, SEED = 40, 3
IMPORTS = """\
import json
import sys
from pathlib import Path

from llmcore.data.language import _pool, detect_languages

"""
WORK = f"""\
with open(sys.argv[1], "a") as fh:  # the script's top-level work: done once, or a worker re-ran it
    fh.write("ran\\n")
found = detect_languages(json.loads(Path(sys.argv[2]).read_text()), prefix_chars={PREFIX}, seed={SEED}, workers=2)
Path(sys.argv[3]).write_text(json.dumps({{"found": found, "pools": _pool.cache_info().currsize}}))
"""
WARNING = 'no `if __name__ == "__main__":` guard found'


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """POOL_MIN_DOCS short documents (six words of the bundled sample each), enough to start the workers."""
    words = " ".join(sample_texts()).split()
    return [" ".join(words[i : i + 6]) for i in range(0, 6 * POOL_MIN_DOCS, 6)]


def _run(tmp_path: Path, texts: list[str], guarded: bool) -> tuple[subprocess.CompletedProcess, Path, dict]:
    script = tmp_path / "classify.py"
    script.write_text(IMPORTS + ('if __name__ == "__main__":\n' + textwrap.indent(WORK, "    ") if guarded else WORK))
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    ran, out = tmp_path / "ran.txt", tmp_path / "out.json"
    done = subprocess.run([sys.executable, str(script), str(ran), str(tmp_path / "texts.json"), str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)  # before: BrokenProcessPool, then a hang
    return done, ran, json.loads(out.read_text()) if out.exists() else {}


def test_unguarded_script_classifies_in_process_once_with_one_warning(tmp_path, texts):
    done, ran, out = _run(tmp_path, texts, guarded=False)
    assert done.returncode == 0, done.stderr
    assert ran.read_text() == "ran\n"
    assert done.stderr.count(WARNING) == 1, done.stderr
    assert out["pools"] == 0
    assert [tuple(r) for r in out["found"]] == detect_languages(texts, PREFIX, SEED, workers=1)


def test_guarded_script_still_classifies_in_parallel(tmp_path, texts):
    done, ran, out = _run(tmp_path, texts, guarded=True)
    assert done.returncode == 0, done.stderr
    assert ran.read_text() == "ran\n"
    assert WARNING not in done.stderr
    assert out["pools"] == 1
    assert [tuple(r) for r in out["found"]] == detect_languages(texts, PREFIX, SEED, workers=1)
