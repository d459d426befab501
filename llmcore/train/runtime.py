"""Where and how the math runs: device, precision, determinism."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from llmcore.manifest import atomic_write_json
from llmcore.model.linear import cpu_has_native_bf16

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PROBE_STEPS = 5  # timed forward + backward passes per precision, after one untimed warm-up each


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is cuda but torch sees no CUDA device; set train.device: cpu (or auto)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_precision(name: str, device: torch.device, model: torch.nn.Module | None = None,
                      batch_shape: tuple[int, int] | None = None) -> str:
    """The precision `name` means here. `auto`: bf16 on GPUs that have it (else fp16); on a CPU with native
    bf16, bf16 only where a short probe of `model` on a (batch, seq_len) batch of `batch_shape` finds it
    faster (tiny models lose more to casts than they gain from bf16 matmuls); fp32 otherwise, and fp32 when
    no model is given (the safe choice, e.g. for a memory estimate)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if model is None or batch_shape is None or not cpu_has_native_bf16():
        return "fp32"
    return cpu_precision_probe(model, batch_shape)["precision"]


def probe_cache() -> Path:
    """Where probe results are kept, per machine: $LLMPIPE_CACHE_DIR or ~/.cache/llmpipe."""
    base = os.environ.get("LLMPIPE_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmpipe"
    return Path(base) / "cpu-precision.json"


def cpu_precision_probe(model: torch.nn.Module, batch_shape: tuple[int, int]) -> dict:
    """Median seconds of a forward + backward pass of `model` in fp32 and under bf16 autocast, and the
    faster precision. Cached per CPU, torch build, thread count, model configuration and batch shape, so
    a machine makes the same choice every run (a probe takes a few seconds; noise could flip a close call)."""
    config = getattr(model, "config", None)
    identity = {
        "cpu": _cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""), "batch": list(batch_shape),
        "model": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else repr(model),
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = probe_cache()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return cached[key]
    seconds = _time_passes(model, batch_shape)
    result = {"precision": min(seconds, key=seconds.get), **{f"{p}_s": round(s, 6) for p, s in seconds.items()}}
    with contextlib.suppress(OSError):  # a read-only home only costs a probe per run
        atomic_write_json(path, {**cached, key: result})
    return result


def _time_passes(model: torch.nn.Module, batch_shape: tuple[int, int]) -> dict[str, float]:
    """Alternating fp32 / bf16 passes on a copy of the model over random ids (input and labels), so the
    model, its gradients and the RNG streams of training are left as they were."""
    probe = copy.deepcopy(model).train()
    vocab = probe.config.vocab_size
    rng = torch.get_rng_state()
    ids = torch.randint(vocab, batch_shape, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    try:
        for step in range(PROBE_STEPS + 1):
            for precision in times:
                start = time.perf_counter()
                with autocast(torch.device("cpu"), precision):
                    loss = probe(input_ids=ids, labels=ids).loss
                loss.backward()
                probe.zero_grad(set_to_none=True)
                if step:
                    times[precision].append(time.perf_counter() - start)
    finally:
        torch.set_rng_state(rng)
    return {p: sorted(t)[len(t) // 2] for p, t in times.items()}


def cpu_kind() -> str:
    """The CPU as benchmarks record it, e.g. "AMD EPYC, AVX512, bf16 native"."""
    bf16 = "bf16 native" if cpu_has_native_bf16() else "bf16 emulated"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{_cpu_name()}, {torch.backends.cpu.get_cpu_capability()}, {bf16}" + (f" (ONEDNN_MAX_CPU_ISA={isa})" if isa else "")


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}


def _cpu_name() -> str:
    return cpuinfo().get("model name") or platform.processor()


def autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def configure(device: torch.device, deterministic: bool) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (TF32), as nanoGPT does
        torch.backends.cudnn.allow_tf32 = True
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
