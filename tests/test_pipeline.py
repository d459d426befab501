"""The whole chain on a slice of the bundled sample: data -> pretrain -> finetune -> evaluate, printed by
`llmpipe run`; a second run executes no stage body."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_helpers import task_config
from flow_helpers import children, task_runs
from flows.cli import DEFAULT_CONFIG, main
from flows.pipeline import pipeline_flow
from llmcore.config import load_config

LLMPIPE = str(Path(sys.executable).with_name("llmpipe"))


@pytest.mark.slow
def test_whole_chain_prints_the_evaluation_and_reruns_cached(prefect_server, corpus, tmp_path, capsys):
    task = task_config(tmp_path, "translation")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"data:\n  ingest:\n    sources: [{{name: s, format: jsonl, path: {corpus}}}]\n"
        "  language: {allowed: [en, de], workers: 1}\n"
        "pretrain: {model: {d_model: 16, n_heads: 2, n_layers: 1}, block_size: 64, train: {max_steps: 2, batch_size: 2}}\n"
        f"finetune:\n  - {{name: mt, task: translation, path: {task.path}, source_lang: en, target_lang: de, test_fraction: 0.25,\n"
        "     max_source_length: 32, max_target_length: 24, validation_examples: 4,\n"
        "     train: {max_steps: 2, batch_size: 4, eval_every: 2, early_stopping: {metric: bleu, mode: max}}}\n"
        "evaluate: {generation: {num_beams: 2, max_new_tokens: 8}}\n"
        # a narrower student and compressed copies, scored beside the teacher
        "distill: {task: mt, students: [{name: small, d_model: 8, n_heads: 2, init: fresh,\n"
        "          train: {max_steps: 2, batch_size: 4, eval_every: 2}}], compress: {models: [teacher, small]},\n"
        "          speed: {examples: 4}}\n"
    )
    root = tmp_path / "data"
    assert main(["run", str(cfg), "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "Evaluation on held-out test examples" in out and "bleu" in out and "chrf" in out and "perplexity" in out
    results = json.loads(Path(out.split("Results: ")[1].split()[0]).read_text())
    assert [t["name"] for t in results["tasks"]] == ["mt"] and results["tasks"][0]["baseline"]["name"] == "copy_source"
    side_by_side = out.split("Teacher, students and compressed models side by side")[1]
    assert "small" in side_by_side and "int8" in side_by_side and "bf16" in side_by_side
    # one summary: wall time, what ran, every model's path; Prefect's per-task lines stay out of the terminal
    assert out.count("Data funnel") == 1 and "Finished in " in out and "came back Cached" in out
    model = root / "finetune" / "mt" / "model"
    assert str(model.resolve()) in out and (model / "model.safetensors").exists()

    assert main(["status", "--data-root", str(root)]) == 0
    status = capsys.readouterr().out
    assert "tokenize/" in status and "finetune/mt" in status and "bleu" in status and "copy" not in status.split("Evaluation")[0]
    assert main(["run", str(cfg), "--data-root", str(root), "--dry-run"]) == 0
    plan = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in plan[3:]] == ["ingest", "clean", "language", "dedup-signature", "dedup-cluster", "dedup",
                                                      "tokenizer", "tokenize"]
    assert all(line.split()[-1] == "Cached" for line in plan[3:])
    assert main(["run", str(cfg), "--data-root", str(root), "--only", "evaluate", "--quiet"]) == 0
    assert "0 task runs ran" in capsys.readouterr().out  # the evaluation alone, on the latest models: Cached

    again = pipeline_flow(load_config(cfg), str(root), return_state=True)
    runs = children(again.state_details.flow_run_id)
    assert len(runs) == 5  # the data, pretrain, finetune, distill and evaluate subflows
    states = {r.name: r.state.name for child in runs for r in task_runs(child.id)}
    assert states and set(states.values()) == {"Cached"}, states
    assert any(name.startswith("finetune") for name in states) and any(name.startswith("evaluate") for name in states)


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_without_a_traceback(tmp_path):
    """Ctrl-C in `llmpipe run` (the bundled config, interrupted while it pretrains): exit 130, one line naming the
    command that resumes, no Python traceback."""
    # SIGINT as a terminal delivers it: a test run in the background inherits it ignored, and so would llmpipe
    proc = subprocess.Popen([LLMPIPE, "run", "--data-root", str(tmp_path / "data")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stderr:  # wait until it trains
        seen.append(line)
        if "training gpt" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=300)
    err = "".join(seen) + rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    [hint] = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert f"llmpipe run {DEFAULT_CONFIG} --data-root {tmp_path / 'data'}" in hint
