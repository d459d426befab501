"""`precision: auto` on CPU: fp32 unless bf16 is native and measured faster for the model at hand; the probe
leaves the model as it was and its choice is kept per machine; MFU peaks follow the instructions used."""

from __future__ import annotations

import json

import pytest
import torch

from llmcore.config import TrainConfig
from llmcore.model import GPT, TransformerConfig
from llmcore.model.linear import cpu_has_native_bf16
from llmcore.train.mfu import cpu_flops_per_cycle, peak_flops
from llmcore.train.runtime import cpu_precision_probe, probe_cache, resolve_precision
from llmcore.train.trainer import Trainer

CPU = torch.device("cpu")
native_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16 (AVX512-BF16 / AMX): "
                                 "auto is fp32 without a probe")
emulated_bf16 = pytest.mark.skipif(cpu_has_native_bf16(), reason="this CPU has native bf16: auto runs the probe")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMPIPE_CACHE_DIR", str(tmp_path))
    return probe_cache()


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(TransformerConfig(vocab_size=128, d_model=32, n_heads=2, n_layers=2, max_seq_len=32))


def test_named_precisions_are_kept_and_auto_without_a_model_is_fp32():
    model = tiny_gpt()
    assert [resolve_precision(p, CPU, model, (4, 32)) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    assert resolve_precision("auto", CPU) == "fp32"  # e.g. the memory check: the larger estimate


def test_probe_leaves_the_model_its_gradients_and_the_rng_as_they_were(cache):
    model = tiny_gpt()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = cpu_precision_probe(model, (4, 32))
    assert result["precision"] in ("fp32", "bf16") and result["fp32_s"] > 0 and result["bf16_s"] > 0
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert torch.equal(torch.get_rng_state(), rng)


@native_bf16
def test_auto_picks_the_faster_precision_and_keeps_the_choice(cache):
    model = tiny_gpt()
    chosen = resolve_precision("auto", CPU, model, (4, 32))
    (key, entry), = json.loads(cache.read_text()).items()
    assert chosen == entry["precision"] == min(("fp32", "bf16"), key=lambda p: entry[f"{p}_s"])
    # the next run on this machine reads the kept choice instead of measuring again
    other = "bf16" if chosen == "fp32" else "fp32"
    cache.write_text(json.dumps({key: {**entry, "precision": other}}))
    assert resolve_precision("auto", CPU, model, (4, 32)) == other
    # another batch shape is probed again (its choice is the measurement's: close calls may go either way)
    again = resolve_precision("auto", CPU, model, (8, 32))
    entries = json.loads(cache.read_text())
    assert len(entries) == 2 and again == next(e["precision"] for k, e in entries.items() if k != key)


@emulated_bf16
def test_auto_is_fp32_where_bf16_is_emulated(cache):
    assert resolve_precision("auto", CPU, tiny_gpt(), (4, 32)) == "fp32"
    assert not cache.exists()  # no probe was run


def test_trainer_states_the_precision_it_resolved(cache, tmp_path):
    model = tiny_gpt()
    batches = iter(lambda: {"input_ids": torch.randint(128, (4, 32)), "labels": torch.randint(128, (4, 32))}, None)
    trainer = Trainer(model, TrainConfig(max_steps=1, eval_every=100, checkpoint_every=100), tmp_path / "run", batches,
                      seq_len=32)
    expected = json.loads(cache.read_text()).popitem()[1]["precision"] if cpu_has_native_bf16() else "fp32"
    assert trainer.precision == expected


def test_peaks_follow_the_instructions_the_precision_runs_on():
    assert cpu_flops_per_cycle("fp32", "AVX2", [], native_bf16=False) == 32
    assert cpu_flops_per_cycle("fp32", "AVX512", [], native_bf16=True) == 64
    assert cpu_flops_per_cycle("fp32", "AVX512", [], native_bf16=True, half_width_avx512=True) == 32
    assert cpu_flops_per_cycle("bf16", "AVX512", ["avx512_bf16"], native_bf16=True) == 128
    assert cpu_flops_per_cycle("bf16", "AVX512", ["avx512_bf16", "amx_bf16"], native_bf16=True) == 1024
    assert cpu_flops_per_cycle("bf16", "AVX2", [], native_bf16=False) is None  # emulated: no meaningful peak
    assert (peak_flops(CPU, "bf16") is None) == (not cpu_has_native_bf16())
