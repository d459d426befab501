"""The loader: zero-copy reads, exact resume, ranks that split each epoch, deterministic shuffling."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from llmcore.data.loader import TokenLoader, TokenStream
from llmcore.data.tokens import TokenShardError, open_split
from llmcore.manifest import HIDDEN_MANIFEST, read_manifest
from llmcore.objectives import make_objective
from token_helpers import sample_texts, token_stage

KINDS = {"clm": "gpt", "mlm": "bert", "nsp": "bert", "span": "t5"}


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Path]:
    texts = sample_texts(40)
    root = tmp_path_factory.mktemp("loader")
    # small shards: many files, so epochs cross shard boundaries often
    return {
        family: token_stage(root / family, texts, family, sample_docs=100, shard_rows=45)
        for family in ("gpt", "bert", "t5")
    }


def loader(stage: Path, kind: str, length: int = 64, batch_size: int = 4, **kw) -> TokenLoader:
    return TokenLoader(stage, make_objective(kind, read_manifest(stage)["tokenizer"], length), batch_size, **kw)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_documents_are_views_into_the_memory_map(stages):
    before = pa.total_allocated_bytes()
    _, shards = open_split(stages["gpt"], "train")
    assert pa.total_allocated_bytes() == before  # Arrow allocated nothing: the buffers are the mapped files
    for shard in shards:
        size = shard.path.stat().st_size
        for chunk in shard.chunks:
            assert not chunk.flags.writeable and chunk.base is not None
        doc = shard.doc(len(shard) - 1)
        assert np.shares_memory(doc, shard.chunks[shard.chunk[-1]])
        assert doc.nbytes < size


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_restored_loader_gives_the_identical_next_batches(stages, kind, tmp_path):
    stage = stages[KINDS[kind]]
    first = loader(stage, kind, seed=3)
    while first.epoch < 1:  # past every shard and into the second epoch
        next(first)
    next(first)
    state = first.state_dict()
    expected = [next(first) for _ in range(5)]

    # the state is JSON, and also loads with torch.load(weights_only=True) inside a checkpoint
    buf = io.BytesIO()
    torch.save({"loader": state}, buf)
    buf.seek(0)
    for saved in (json.loads(json.dumps(state)), torch.load(buf, weights_only=True)["loader"]):
        resumed = loader(stage, kind, seed=3)
        resumed.load_state_dict(saved)
        assert all(same(a, b) for a, b in zip(expected, (next(resumed) for _ in range(5))))


def _epoch_docs(stage: Path, rank: int, world: int, epoch: int, seed: int = 0) -> list[int]:
    """The split-wide indices of the documents that `rank` reads in `epoch`, in order."""
    _, shards = open_split(stage, "train", verify="size")
    stream = TokenStream(shards, seed, rank, world, None, True)
    stream.seek({"epoch": epoch, "row": 0, "offset": 0})
    seen = []
    while stream.epoch == epoch:
        stream.current()
        seen.append(stream.doc_index())
        stream.advance()
        stream.current()  # moves over a finished epoch
    return seen


def test_two_ranks_together_cover_each_epoch_once(stages):
    stage = stages["gpt"]
    total = sum(f["rows"] for f in read_manifest(stage)["files"] if f["split"] == "train")
    for epoch in (0, 1):
        ranks = [_epoch_docs(stage, r, 2, epoch) for r in (0, 1)]
        assert not set(ranks[0]) & set(ranks[1])
        assert sorted(ranks[0] + ranks[1]) == list(range(total))
        assert abs(len(ranks[0]) - len(ranks[1])) <= len(read_manifest(stage)["files"])
    assert _epoch_docs(stage, 0, 2, 0) != _epoch_docs(stage, 0, 2, 1)  # a new order every epoch
    assert _epoch_docs(stage, 0, 1, 0) == _epoch_docs(stage, 0, 1, 0)  # the same for the same seed
    assert _epoch_docs(stage, 0, 1, 0) != _epoch_docs(stage, 0, 1, 0, seed=1)


def test_an_epoch_mixes_the_shards_from_its_first_documents(stages):
    """Shards often hold one language each: walking them in turn would train on one language at a time."""
    stage = stages["gpt"]
    first_doc = np.cumsum([0] + [f["rows"] for f in read_manifest(stage)["files"] if f["split"] == "train"])
    files = [int(np.searchsorted(first_doc, d, side="right")) - 1 for d in _epoch_docs(stage, 0, 1, 0)[:20]]
    assert len(first_doc) > 3 and len(set(files)) >= 3  # 20 documents drawn from at least 3 files
    in_order = TokenStream(open_split(stage, "train", verify="size")[1], 0, 0, 1, 1, shuffle=False)
    seen = []
    while in_order.current() is not None:
        seen.append(in_order.doc_index())
        in_order.advance()
    assert seen == list(range(first_doc[-1]))  # unshuffled (validation): the files' order


def test_two_ranks_pack_every_token_of_the_epoch_once(stages):
    stage = stages["gpt"]
    eos = read_manifest(stage)["tokenizer"]["special_ids"]["eos"]
    _, shards = open_split(stage, "train")
    docs = [s.doc(r) for s in shards for r in range(len(s))]
    want = np.bincount(np.concatenate(docs), minlength=1024)
    got, tails = np.zeros_like(want), 0
    for rank in (0, 1):
        batches = list(loader(stage, "clm", length=32, batch_size=8, rank=rank, world_size=2, epochs=1))
        assert all(b["input_ids"].shape[1] == 32 for b in batches) and batches[-1]["input_ids"].shape[0] <= 8
        ids = torch.cat([b["input_ids"] for b in batches]).reshape(-1).numpy()
        got += np.bincount(ids[ids != eos], minlength=1024)
        tails += 32  # each rank drops under one window at the end of its last epoch
    assert (got <= want).all() and want.sum() - got.sum() < tails


def test_a_finite_run_ends_and_states_from_other_settings_are_refused(stages):
    stage = stages["gpt"]
    finite = loader(stage, "clm", epochs=1, shuffle=False)
    n = sum(1 for _ in finite)
    assert n > 10 and finite.epoch == 1
    with pytest.raises(StopIteration):
        next(finite)
    state = loader(stage, "clm", rank=0, world_size=2).state_dict()
    with pytest.raises(ValueError, match=r"world_size: saved 2, now 1"):
        loader(stage, "clm").load_state_dict(state)
    with pytest.raises(ValueError, match="objective"):
        loader(stage, "clm", length=128, rank=0, world_size=2).load_state_dict(state)


def test_the_loader_refuses_a_changed_shard(stages, tmp_path):
    stage = token_stage(tmp_path, sample_texts(10))
    entry = read_manifest(stage)["files"][0]
    with open(stage / entry["path"], "r+b") as fh:
        fh.truncate(entry["bytes"] - 100)
    part = stage.parent / "parts" / entry["part"]
    with pytest.raises(TokenShardError, match=r"truncated.*delete the part") as err:
        loader(stage, "clm", split=entry["split"])
    message = str(err.value)
    assert f"delete the part {part} and {stage / HIDDEN_MANIFEST}, then rerun the data flow" in message


def test_too_many_ranks_for_the_documents_is_an_error(stages, tmp_path):
    stage = token_stage(tmp_path, sample_texts(1), shard_rows=100)
    docs = sum(f["rows"] for f in read_manifest(stage)["files"] if f["split"] == "train")
    with pytest.raises(ValueError, match="gets no document"):
        loader(stage, "clm", rank=docs, world_size=docs + 1)
