"""Where Prefect keeps task and flow results: `<data_root>/prefect-results`, as JSON only, with paths
relative to the data root.

A shared data root is writable by every worker, so a result file there must not be able to run code:
Prefect's default serializer is cloudpickle, and a record names its own serializer, so a planted record
would be unpickled by the next run that hits the cache. This storage writes only JSON records and refuses
to read any other kind. Paths under the data root are stored as `${data_root}/...` and resolved against
the root that reads them, so a root can be moved, copied or mounted elsewhere and never reads another
root's files. A record whose paths no longer exist (a deleted stage directory) reads as missing, so the
task runs again and rebuilds its output instead of handing on a path to nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from prefect.filesystems import LocalFileSystem

from llmcore.manifest import atomic_write

PLACEHOLDER = "${data_root}"
log = logging.getLogger(__name__)


class UntrustedResult(ValueError):
    """A result record that this storage did not write (or that points at nothing): read as a cache miss."""


def results_dir(data_root: str | Path) -> Path:
    return Path(data_root) / "prefect-results"


class DataRootResults(LocalFileSystem):
    """Result storage of one data root (see the module docstring)."""

    _block_type_name = "llmpipe data-root results"

    @classmethod
    def of(cls, data_root: str | Path) -> DataRootResults:
        """The storage of `data_root`, saved on the Prefect server (Prefect takes only saved blocks), once
        per root and process."""
        return _saved(str(results_dir(Path(data_root).resolve())))

    @property
    def root(self) -> str:
        return str(Path(self.basepath).parent)

    # Prefect calls the a-methods from async code and the plain ones with `_sync=True` from sync code.
    async def awrite_path(self, path: str, content: bytes) -> str:
        return self._write(path, content)

    def write_path(self, path: str, content: bytes, **_: Any) -> str:
        return self._write(path, content)

    async def aread_path(self, path: str) -> bytes:
        return self._read(path)

    def read_path(self, path: str, **_: Any) -> bytes:
        return self._read(path)

    def _write(self, path: str, content: bytes) -> str:
        record = json.loads(content)
        if _is_record(record):  # a task's result: the value inside a record naming its serializer
            _require_json(record, path)
            record["metadata"]["storage_key"] = self._relative(record["metadata"].get("storage_key"))
            record["result"] = json.dumps(_map_strings(_decode(record), self._relative))
            data = record
        else:  # a flow's result: the value alone (Prefect keeps its metadata in the flow run's state)
            data = _map_strings(_checked(record), self._relative)
        target = self._resolve_path(path)
        atomic_write(target, json.dumps(data).encode())  # never half a record
        return str(target)

    def _read(self, path: str) -> bytes:
        target = self._resolve_path(path)
        if not target.is_file():
            raise ValueError(f"Path {target} does not exist.")
        try:
            data = json.loads(target.read_bytes())
            if _is_record(data):
                _require_json(data, target)
                data["metadata"]["serializer"] = {"type": "json"}  # Prefect's defaults, whatever hooks the file names
                value = _map_strings(_decode(data), self._absolute)
            else:
                value = _map_strings(_checked(data), self._absolute)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring result file %s (%s); the task runs again", target, exc)
            raise UntrustedResult(f"{target}: {exc}") from exc
        missing = [p for p in _paths_under(value, self.root) if not os.path.exists(p)]
        if missing:
            raise UntrustedResult(f"{target} points at {missing[0]}, which no longer exists: the task runs again")
        if not _is_record(data):
            return json.dumps(value).encode()
        data["metadata"]["storage_key"] = self._absolute(data["metadata"].get("storage_key"))
        data["result"] = json.dumps(value)
        return json.dumps(data).encode()

    def _relative(self, s: Any) -> Any:
        if isinstance(s, str) and (s == self.root or s.startswith(self.root + os.sep)):
            return PLACEHOLDER + s[len(self.root):]
        return s

    def _absolute(self, s: Any) -> Any:
        if isinstance(s, str) and s.startswith(PLACEHOLDER):
            return self.root + s[len(PLACEHOLDER):]
        return s


@functools.cache
def _saved(basepath: str) -> DataRootResults:
    block = DataRootResults(basepath=basepath)
    block.save(f"results-{hashlib.sha256(basepath.encode()).hexdigest()[:16]}", overwrite=True)
    return block


def _require_json(record: dict, where: Any) -> None:
    serializer = record.get("metadata", {}).get("serializer", {}).get("type")
    if serializer != "json":
        raise ValueError(f"{where}: a {serializer!r} result; llmpipe stores JSON results only")


def _is_record(data: Any) -> bool:
    return isinstance(data, dict) and "metadata" in data and "result" in data


def _decode(record: dict) -> Any:
    """The record's value as plain JSON: no `__class__` objects, which Prefect's decoder would import."""
    return _checked(json.loads(record["result"]))  # the JSON serializer's text


def _checked(value: Any) -> Any:
    if _holds_objects(value):
        raise ValueError("the result holds a Python object; llmpipe results are paths and plain JSON")
    return value


def _holds_objects(value: Any) -> bool:
    if isinstance(value, dict):
        return "__class__" in value or any(_holds_objects(v) for v in value.values())
    return isinstance(value, list) and any(_holds_objects(v) for v in value)


def _map_strings(value: Any, fn) -> Any:
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return fn(value)


def _paths_under(value: Any, root: str) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths_under(v, root)]
    if isinstance(value, list):
        return [p for v in value for p in _paths_under(v, root)]
    return [value] if isinstance(value, str) and value.startswith(root + os.sep) else []
