"""Config files: valid ones load with paths resolved; bad ones name the file, line, field and fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flows.cli import DEFAULT_CONFIG, main
from llmcore.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "corpus").mkdir(exist_ok=True)
    (tmp_path / "corpus" / "web.jsonl").write_text('{"text": "a document"}\n')  # GOOD's source: validate checks it exists
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


GOOD = textwrap.dedent("""\
    data:
      ingest:
        sources:
          - {name: web, format: jsonl, path: corpus/web.jsonl}
      language:
        allowed: [en]
    """)


def test_bundled_default_config_is_valid():
    config = load_config(DEFAULT_CONFIG)
    for src in config.data.ingest.sources:
        assert Path(src.path).is_absolute()


def test_relative_source_paths_resolve_against_the_config_file(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.data.ingest.sources[0].path == str(tmp_path / "corpus/web.jsonl")


def test_wrong_type_names_file_line_and_field(tmp_path):
    path = write(tmp_path, GOOD + "  clean:\n    min_chars: lots\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert f"{path}:8 data.clean.min_chars" in msg
    assert "valid integer" in msg


def test_unknown_key_says_remove_it(tmp_path):
    path = write(tmp_path, GOOD.replace("allowed: [en]", "allowed: [en]\n    min_prbo: 0.5"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:7 data.language.min_prbo" in str(err.value)
    assert "remove this key or correct its spelling" in str(err.value)


def test_every_problem_is_listed(tmp_path):
    path = write(tmp_path, GOOD.replace("format: jsonl", "format: xml") + "  clean:\n    max_symbol_ratio: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "2 problem(s)" in msg
    assert "data.ingest.sources.0.format" in msg and "'jsonl'" in msg
    assert "data.clean.max_symbol_ratio" in msg


def test_validate_command(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, GOOD))]) == 0
    assert "valid (1 source(s): web)" in capsys.readouterr().out
    bad = write(tmp_path, GOOD.replace("[en]", "en"))
    assert main(["validate", str(bad)]) == 2
    assert "data.language.allowed" in capsys.readouterr().err


def test_missing_config_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
