"""Evaluation: perplexity against hand-computed cases, and the evaluate flow on a real Prefect server with
real tiny fine-tuned models: its saved scores match llmcore.metrics recomputed on its saved predictions,
the baseline is scored on the same examples, the artifacts show both, and a rerun is cached."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from prefect.client.schemas.filters import ArtifactFilterKey

from finetune_helpers import finetune_stage, finetuned_model, read_jsonl, task_config
from flow_helpers import artifacts, task_runs
from flows.evaluate import evaluate_flow
from llmcore import metrics
from llmcore.config import EvaluateConfig
from llmcore.finetune import baselines, formats
from llmcore.finetune.evaluate import evaluate
from llmcore.finetune.spec import load_finetuned
from llmcore.manifest import read_manifest
from llmcore.model import load, save
from llmcore.tokenizer import vocab_size
from tasks.evaluate import evaluate_task

pytestmark = pytest.mark.usefixtures("one_thread")
GREEDY = {"num_beams": 1, "max_new_tokens": 4, "batch_size": 4}  # batches of unequal lengths: padding is exercised


def lowest_ids(task_cfg, n: int) -> list[formats.Example]:
    """The test examples an evaluation capped at `n` scores: those with the lowest ids."""
    return sorted(formats.task_examples(task_cfg)["test"], key=lambda ex: ex.id)[:n]


@pytest.mark.parametrize("task, family", [("translation", "gpt"), ("summarization", "t5")])
def test_a_model_with_zero_logits_has_the_vocabulary_size_as_perplexity(tmp_path, task, family):
    """Uniform next-token probabilities 1/V: every target token costs log V, so perplexity is exactly V."""
    task_cfg = task_config(tmp_path, task)
    model_dir = finetuned_model(tmp_path / "model", task_cfg, family)
    model = load(model_dir)
    for p in model.parameters():
        p.data.zero_()
    save(model, model_dir)
    ft = load_finetuned(model_dir)
    vocab = vocab_size(ft.tok)

    results = evaluate(model_dir, task_cfg, EvaluateConfig(max_examples=5, examples_shown=2, generation=GREEDY))
    assert results["metrics"]["perplexity"] == pytest.approx(vocab, rel=1e-5)
    # the cap keeps the 5 lowest ids of the test split; every target token and its eos are counted
    scored = lowest_ids(task_cfg, 5)
    assert [o["id"] for o in results["outputs"]] == [ex.id for ex in scored]
    assert results["examples"] == 5 and results["samples"] == results["outputs"][:2]
    assert results["target_tokens"] == sum(len(ft.encoder.target_ids(ex)) for ex in scored)
    assert results["nll_sum"] == pytest.approx(results["target_tokens"] * math.log(vocab), rel=1e-5)


def test_decoder_only_perplexity_scores_the_target_tokens_only(tmp_path):
    """Against log-probabilities read off one forward pass per example, position by position."""
    task_cfg = task_config(tmp_path, "dialogue")
    model_dir = finetuned_model(tmp_path / "model", task_cfg, "gpt", steps=20)
    ft = load_finetuned(model_dir)
    results = evaluate(model_dir, task_cfg, EvaluateConfig(max_examples=6, generation=GREEDY))

    nll, count = 0.0, 0
    for ex in lowest_ids(task_cfg, 6):
        prompt, target = ft.encoder.prompt_ids(ex), ft.encoder.target_ids(ex)
        with torch.no_grad():
            logp = ft.model(torch.tensor([prompt + target])).logits[0].log_softmax(-1)
        # target token i sits at position len(prompt) + i and is predicted one position earlier
        nll -= sum(logp[len(prompt) + i - 1, t].item() for i, t in enumerate(target))
        count += len(target)
    assert results["target_tokens"] == count
    assert results["metrics"]["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_encoder_decoder_perplexity_is_the_models_own_loss(tmp_path):
    task_cfg = task_config(tmp_path, "translation")
    model_dir = finetuned_model(tmp_path / "model", task_cfg, "t5", steps=20)
    ft = load_finetuned(model_dir)
    results = evaluate(model_dir, task_cfg, EvaluateConfig(max_examples=6, generation=GREEDY))

    nll, count = 0.0, 0
    cfg = ft.model.config
    for ex in lowest_ids(task_cfg, 6):
        row = ft.encoder.seq2seq(ex)
        with torch.no_grad():
            batch = formats.collate_seq2seq([row], cfg.pad_token_id, cfg.decoder_start_token_id)
            loss = ft.model(**batch).loss.item()  # mean over the target tokens
        nll += loss * len(row["labels"])
        count += len(row["labels"])
    assert results["target_tokens"] == count
    assert results["metrics"]["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)


def recomputed(task: str, hypotheses: list[str], references: list[str]) -> dict[str, float]:
    if task == "translation":
        return {"bleu": metrics.bleu(hypotheses, references), "chrf": metrics.chrf(hypotheses, references)}
    if task == "summarization":
        return metrics.rouge(hypotheses, references)
    return {"token_f1": metrics.token_f1(hypotheses, references), "distinct1": metrics.distinct(hypotheses, 1),
            "distinct2": metrics.distinct(hypotheses, 2)}


@pytest.mark.slow  # three models trained, two flow runs
def test_evaluate_flow_scores_each_model_beside_its_baseline_and_reruns_cached(prefect_server, tmp_path):
    root = tmp_path / "data"
    stages = {task: (task_config(tmp_path, task, lines=32), family)
              for task, family in [("translation", "gpt"), ("summarization", "t5"), ("dialogue", "gpt")]}
    manifests = [str(finetune_stage(root, cfg, family, steps=150)) for cfg, family in stages.values()]
    config = EvaluateConfig(max_examples=5, examples_shown=2, generation={"num_beams": 2, "max_new_tokens": 8})

    state = evaluate_flow(config, manifests, str(root), return_state=True)
    assert state.is_completed()
    combined_path = Path(state.result())
    combined = json.loads(combined_path.read_text())
    assert combined_path.parent.parent == root / "evaluation" and combined["key"] == combined_path.parent.name
    assert [r["task"] for r in combined["tasks"]] == list(stages)

    for result, (task_cfg, _), finetune in zip(combined["tasks"], stages.values(), manifests):
        run_dir = Path(result["manifest"]).parent
        assert read_manifest(run_dir)["upstream"] == [read_manifest(Path(finetune).parent)["key"]]
        saved = json.loads((run_dir / "results.json").read_text())
        assert {**saved, "manifest": result["manifest"]} == result
        rows = read_jsonl(run_dir / "predictions.jsonl")
        scored = lowest_ids(task_cfg, 5)
        assert [r["id"] for r in rows] == [ex.id for ex in scored]
        references = [ex.target for ex in scored]
        assert [r["reference"] for r in rows] == references
        predictions, baseline = [r["prediction"] for r in rows], [r["baseline"] for r in rows]
        assert any(predictions), "the trained model says something"

        # the saved scores are llmcore.metrics on the saved outputs
        assert result["metrics"] == pytest.approx({**recomputed(task_cfg.task, predictions, references),
                                                   "perplexity": math.exp(result["nll_sum"] / result["target_tokens"])})
        assert result["baseline"]["metrics"] == pytest.approx(recomputed(task_cfg.task, baseline, references))
        # the baseline's outputs are its own, on the same examples
        if task_cfg.task == "translation":
            assert baseline == baselines.copy_source(scored)
        elif task_cfg.task == "summarization":
            assert baseline == baselines.lead(scored)
        else:
            assert baseline == baselines.frequent_reply(scored, formats.task_examples(task_cfg)["train"])
        assert result["samples"] == rows[:2]

    flow_run = state.state_details.flow_run_id
    [table] = artifacts(flow_run, key=ArtifactFilterKey(any_=["evaluation"]))
    shown = {(row["task"], row["metric"]): row for row in json.loads(table.data)}
    for result in combined["tasks"]:
        for metric, value in result["metrics"].items():
            row = shown.pop((result["name"], metric))
            base = result["baseline"]["metrics"].get(metric)
            assert row["model"] == round(value, 2)
            assert row["baseline"] == (None if base is None else round(base, 2))
            assert row["model - baseline"] == (None if base is None else round(value - base, 2))
    assert not shown
    [examples] = artifacts(flow_run, key=ArtifactFilterKey(any_=["evaluation-examples"]))
    for result in combined["tasks"]:
        assert f"## {result['name']} ({result['task']}, baseline: {result['baseline']['name']})" in examples.data
    assert examples.data.count("\n**Example ") == 3 * 2 and examples.data.count("\n- **model**: ") == 3 * 2  # two per task

    written = {m: (Path(m).parent / "results.json").stat().st_mtime_ns for m in (r["manifest"] for r in combined["tasks"])}
    again = evaluate_flow(config, manifests, str(root), return_state=True)
    assert Path(again.result()) == combined_path
    runs = [r for r in task_runs(again.state_details.flow_run_id) if r.name.startswith("evaluate")]
    assert sorted(r.name for r in runs) == sorted(f"evaluate-{cfg.name}" for cfg, _ in stages.values())
    assert all(r.state.name == "Cached" for r in runs)
    # the disk layer: with Prefect's cache out of the way, a finished stage is found, not recomputed
    for manifest in written:
        stage = read_manifest(Path(manifest).parent)
        assert evaluate_task.fn(str(root), "evaluate", stage["key"], stage["name"], config, stage["finetune"]) == manifest
    assert {m: (Path(m).parent / "results.json").stat().st_mtime_ns for m in written} == written
