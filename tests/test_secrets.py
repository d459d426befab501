"""An hf_load source's token goes by name (token_env, token_secret): its value reaches the download and nothing
stored: not the flow run's parameters or logs, not a stage key, manifest or result. A token in the config is refused."""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path
from uuid import uuid4

import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker
from pydantic import ValidationError

from flows.data import data_flow
from llmcore.config import ConfigError, DataConfig, IngestConfig, LanguageConfig, SourceConfig, load_config
from llmcore.data.readers import SourceError
from tasks.stages import source_token
from token_helpers import sample_texts

ENV = "LLMPIPE_TEST_HF_TOKEN"


@pytest.fixture
def token() -> str:
    """A fresh value shaped like a Hugging Face token, to search for."""
    return "hf_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(34))


def _arrow_dataset(tmp_path: Path) -> dict:
    """hf_load arguments of a local dataset saved by save_to_disk: its Arrow files, read by load_dataset."""
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": sample_texts(per_file=30)})}).save_to_disk(str(tmp_path / "ds"))
    return {"path": "arrow", "data_files": {"train": str(tmp_path / "ds" / "train" / "*.arrow")}, "cache_dir": str(tmp_path / "hf-cache")}


def _files_holding(text: str, *roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.mark.parametrize("by", ["token_env", "token_secret"])
def test_token_is_used_by_name_and_stored_nowhere(prefect_server, tmp_path, monkeypatch, token, by):
    if by == "token_env":
        monkeypatch.setenv(ENV, token)
        named = {"token_env": ENV}
    else:
        named = {"token_secret": f"hf-token-{uuid4().hex[:8]}"}
        Secret(value=token).save(named["token_secret"])
    source = SourceConfig(name="hub", format="hf", hf_load=_arrow_dataset(tmp_path), **named)
    config = DataConfig(ingest=IngestConfig(sources=[source], shard_rows=40),
                        language=LanguageConfig(allowed=["en", "de", "fr", "es"], workers=1))
    assert source_token(source) == token  # what the ingest task hands load_dataset

    state = data_flow(config, str(tmp_path / "data"), return_state=True)
    assert state.is_completed()
    manifests = [json.loads(Path(p).read_text()) for p in state.result()]
    assert manifests[0]["ledger"]["rows_out"] == len(sample_texts(per_file=30))
    assert manifests[0]["config"]["sources"][0]["hf_load"]["path"] == "arrow"

    APILogWorker.drain_all()
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(flow_run_id).parameters
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    assert parameters["config"]["ingest"]["sources"][0][by] == named[by]
    assert token not in json.dumps(parameters)
    assert logs and not [log.message for log in logs if token in log.message]
    # the data root, the HF cache, and the flow results stored outside the data root
    assert _files_holding(token, tmp_path, Path(os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])) == []


def test_token_named_but_missing_fails_the_part_saying_where(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(SourceError, match=f"environment variable {ENV} .token_env. is not set"):
        source_token(SourceConfig(name="hub", format="hf", hf_load={"path": "x"}, token_env=ENV))


def test_secret_block_missing_fails_saying_so(prefect_server):
    with pytest.raises(SourceError, match="token_secret: .*no-such-block.*create the Secret block"):
        source_token(SourceConfig(name="hub", format="hf", hf_load={"path": "x"}, token_secret="no-such-block"))


@pytest.mark.parametrize("hf_load", [
    {"path": "org/private", "token": "{token}"},
    {"path": "org/private", "use_auth_token": "{token}"},
    {"path": "s3-data", "storage_options": {"client_kwargs": {"aws_secret_access_key": "abc123"}}},
    {"path": "https://host/data.json", "storage_options": {"headers": {"Authorization": "Bearer {token}"}}},  # by its shape
])
def test_a_secret_in_hf_load_is_refused(tmp_path, token, hf_load):
    hf_load = json.loads(json.dumps(hf_load).replace("{token}", token))
    with pytest.raises(ValidationError, match="token_env: HF_TOKEN .* token_secret: BLOCK"):
        SourceConfig(name="hub", format="hf", hf_load=hf_load)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"data": {"ingest": {"sources": [{"name": "hub", "format": "hf", "hf_load": hf_load}]},
                                           "language": {"allowed": ["en"]}}}))
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert "token_env" in str(refused.value) and token not in str(refused.value)


def test_what_names_a_token_is_accepted_and_checked(token):
    assert SourceConfig(name="hub", format="hf", hf_load={"path": "org/data", "token": True}).hf_load["token"] is True  # the login's
    assert SourceConfig(name="hub", format="hf", hf_load={"path": "org/data"}, token_env="HF_TOKEN").token_env == "HF_TOKEN"
    with pytest.raises(ValidationError, match="name of an environment variable holding the token, not the token itself"):
        SourceConfig(name="hub", format="hf", hf_load={"path": "org/data"}, token_env=token)
    with pytest.raises(ValidationError, match="set them only with hf_load"):
        SourceConfig(name="disk", format="hf", path="ds", token_env="HF_TOKEN")
    with pytest.raises(ValidationError, match="not both"):
        SourceConfig(name="hub", format="hf", hf_load={"path": "org/data"}, token_env="HF_TOKEN", token_secret="hf-token")
