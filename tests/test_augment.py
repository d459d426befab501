"""The augment stage in the data flow, on a real Prefect test server: back-translated pairs from German
documents by a tiny reverse model trained on the bundled en-de pairs' train split, paraphrase round trips,
EDA copies, an honest ledger, a rerun that is all Cached, and a given reverse model used as is."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flow_helpers import task_runs
from flows.data import data_flow
from llmcore.augment.backtranslate import PARAPHRASES, SYNTHETIC, TRAINED, choose_sentences
from llmcore.config import AugmentConfig, DataConfig, IngestConfig, LanguageConfig, SourceConfig
from llmcore.finetune.formats import load_translation, split, split_of

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample"
PAIRS = SAMPLE / "parallel" / "en-de.jsonl"
pytestmark = pytest.mark.slow  # two models trained inside the data flow
# A reverse / forward model that trains in seconds: it only has to emit text, which min_new_tokens makes sure of
# whatever the CPU's rounding (an EOS first would leave no synthetic pair to check).
GENERATION = {"max_new_tokens": 12, "min_new_tokens": 3}
TINY = {
    "model": {"d_model": 32, "n_heads": 2, "n_layers": 1}, "vocab_size": 400,
    "max_source_length": 32, "max_target_length": 24, "validation_examples": 4,
    "train": {"max_steps": 150, "batch_size": 8, "lr": 5e-3, "warmup_steps": 10, "eval_every": 150, "checkpoint_every": 75,
              "log_every": 50, "precision": "fp32", "deterministic": True},
    "generation": GENERATION,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Real documents of the bundled sample: 12 each of English, German and French."""
    out = tmp_path_factory.mktemp("corpus")
    for lang in ("en", "de", "fr"):
        lines = (SAMPLE / "docs" / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:12]
        (out / f"{lang}.jsonl").write_text("".join(lines), encoding="utf-8")
    return out


def config(corpus: Path, augment: dict) -> DataConfig:
    return DataConfig(
        ingest=IngestConfig(sources=[SourceConfig(name="s", format="jsonl", path=str(corpus))], shard_rows=20),
        language=LanguageConfig(allowed=["en", "de", "fr"], workers=1),
        augment=AugmentConfig.model_validate(augment),
    )


BACKTRANSLATION = {"pairs": str(PAIRS), "source_lang": "en", "target_lang": "de", "max_sentences": 12,
                   "paraphrase_sentences": 6, "reverse": TINY, "generation": {**GENERATION, "batch_size": 8}}


@pytest.fixture(scope="module")
def runs(prefect_server, one_thread, corpus, tmp_path_factory) -> dict:
    """The data flow with back-translation, paraphrases and EDA, run twice."""
    root = str(tmp_path_factory.mktemp("augment") / "data")
    cfg = config(corpus, {"backtranslation": BACKTRANSLATION, "eda": {"fraction": 0.5, "rate": 0.2}})
    first = data_flow(cfg, root, return_state=True)
    assert first.is_completed()
    manifests = [json.loads(Path(p).read_text()) for p in first.result()]
    augment = next(m for m in manifests if m["stage"] == "augment")
    stage_dir = Path(root, "augment", augment["key"])
    # the global step's output (models, pairs, paraphrases) is kept apart from the stage directory, under its key
    [bt_dir] = Path(root, "augment", "backtranslation").iterdir()
    synthetic = stage_dir / ("." + SYNTHETIC)  # linked in from the global step's directory, under a dot-name
    assert synthetic.samefile(bt_dir / SYNTHETIC)
    mtime = synthetic.stat().st_mtime_ns
    second = data_flow(cfg, root, return_state=True)
    return {"root": root, "first": first, "second": second, "manifests": manifests, "augment": augment,
            "dir": stage_dir, "bt": bt_dir, "mtime": mtime}


def rows_of(stage_dir: Path, manifest: dict) -> list[dict]:
    return [row for f in manifest["files"] for row in pq.read_table(stage_dir / f["path"]).to_pylist()]


def test_stage_sits_between_dedup_and_tokenizer(runs):
    stages = [m["stage"] for m in runs["manifests"]]
    assert stages == ["ingest", "clean", "language", "dedup", "augment", "tokenizer", "tokenize"]
    dedup, augment, tokenize = (runs["manifests"][i] for i in (3, 4, 6))
    assert augment["synthetic"] == "." + SYNTHETIC and augment["pair"] == ["en", "de"]
    assert augment["upstream"][0] == dedup["key"] and tokenize["ledger"]["rows_in"] == augment["ledger"]["rows_out"]


def test_synthetic_pairs_are_marked_readable_and_from_german_documents(runs):
    path = runs["dir"] / runs["augment"]["synthetic"]
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert 0 < len(lines) <= 12 and all(line["synthetic"] is True for line in lines)
    pairs = load_translation(path, "en", "de")
    assert [p.target for p in pairs] == [line["de"] for line in lines] and all(p.source for p in pairs)
    dedup = runs["manifests"][3]
    docs = {row["id"]: row for row in rows_of(Path(runs["root"], "dedup", dedup["key"]), dedup)}
    for line in lines:
        doc = docs[line["origin"].rsplit("#", 1)[0]]
        assert doc["lang"] == "de" and line["de"] in " ".join(doc["text"].split())


def test_reverse_model_never_saw_a_test_pair(runs):
    trained = json.loads((runs["bt"] / "reverse" / TRAINED).read_text())
    reverse = split(load_translation(PAIRS, "de", "en"))
    forward_test = {ex.key for ex in load_translation(PAIRS, "en", "de") if split_of(ex) == "test"}
    assert trained["examples"]["train"] == len(reverse["train"])  # run() trained on this split, no more
    assert forward_test and not forward_test & {ex.key for ex in reverse["train"]}
    held_out = {ex.source for part in ("validation", "test") for ex in reverse[part]}
    synthetic = load_translation(runs["dir"] / runs["augment"]["synthetic"], "en", "de")
    assert not held_out & {ex.target for ex in synthetic}  # no evaluation sentence comes back as a synthetic pair


def test_augmented_rows_are_marked_and_the_ledger_balances(runs):
    augment, dedup = runs["augment"], runs["manifests"][3]
    rows = rows_of(runs["dir"], augment)
    originals = {r["id"] for r in rows if r["augmented"] is None}
    made = [r for r in rows if r["augmented"] is not None]
    assert len(originals) == dedup["ledger"]["rows_out"] and all(r["augmented_from"] in originals for r in made)
    kinds = Counter(r["augmented"] for r in made)
    ledger = augment["ledger"]
    assert ledger["added"] == kinds and kinds["eda"] > 0
    # a 150-step model's round trip may come back empty or unchanged: then it makes no paraphrase document
    paraphrases = (runs["bt"] / PARAPHRASES).read_text(encoding="utf-8").splitlines()
    assert kinds["paraphrase"] == len(paraphrases) == augment["backtranslation"]["paraphrase_documents"]
    assert ledger["rows_in"] == dedup["ledger"]["rows_out"]
    assert ledger["rows_in"] + sum(ledger["added"].values()) == ledger["rows_out"] + sum(ledger["dropped"].values()) + ledger["quarantined"]
    assert all(r["id"].endswith("-eda0") for r in made if r["augmented"] == "eda")
    assert all(r["lang"] == "en" and r["id"] == r["augmented_from"] + "-para" for r in made if r["augmented"] == "paraphrase")


def test_second_run_is_all_cached_and_translates_nothing(runs):
    assert runs["second"].result() == runs["first"].result()
    names = {r.name: r.state.name for r in task_runs(runs["second"].state_details.flow_run_id)}
    assert {"augment-model-reverse", "augment-model-forward", "augment-translate", "finalize-augment"} <= set(names)
    assert [name for name, state in names.items() if state != "Cached"] == []
    assert (runs["dir"] / runs["augment"]["synthetic"]).stat().st_mtime_ns == runs["mtime"]


def test_sentence_choice_ignores_shard_order(runs):
    dedup = runs["manifests"][3]
    shards = [str(Path(runs["root"], "dedup", dedup["key"], f["path"])) for f in dedup["files"]]
    assert len(shards) > 1
    chosen = choose_sentences(shards, "de", 20, 200, 5)
    assert chosen == choose_sentences(shards[::-1], "de", 20, 200, 5) and len(chosen) == 5


def test_a_given_reverse_model_is_used_instead_of_training_one(runs, corpus, tmp_path):
    given = shutil.copytree(runs["bt"] / "reverse" / "model", tmp_path / "reverse-model")
    bt = {**BACKTRANSLATION, "model": str(given), "paraphrase_sentences": 0, "max_sentences": 4}
    state = data_flow(config(corpus, {"backtranslation": bt}), runs["root"], return_state=True)
    manifest = json.loads(Path(state.result()[4]).read_text())
    assert manifest["stage"] == "augment" and manifest["backtranslation"]["reverse_model"] == str(given)
    assert "added" not in manifest["ledger"]  # no EDA, no paraphrases: the documents only
    names = [r.name for r in task_runs(state.state_details.flow_run_id)]
    assert "augment-translate" in names and not [n for n in names if n.startswith("augment-model")]
    [bt_dir] = set(Path(runs["root"], "augment", "backtranslation").iterdir()) - {runs["bt"]}  # its own global step
    assert (bt_dir / SYNTHETIC).exists() and not (bt_dir / "reverse").exists()
    assert len(load_translation(Path(runs["root"], "augment", manifest["key"], manifest["synthetic"]), "en", "de")) <= 4
