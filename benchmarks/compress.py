"""Distillation and compression of the default config's en->de translation model, measured against it.

1. Teacher: the translation task of configs/tiny.yaml as `llmpipe run` trains it (a GPT of d_model 128 and
   2 layers from scratch, 4,000-token BPE, 4,000 steps of 32 pairs, best checkpoint by validation BLEU);
   or --teacher DIR, a fine-tuned model directory already trained.
2. Students, both of the same size (d_model 64, 4 heads, 2 layers: <= 50 % of the teacher's parameters),
   same recipe, steps (--student-steps), seed and dropout:
   - `distilled`: sequence-level KD (Kim & Rush 2016: trained on the teacher's beam-4 outputs over the
     training sources) plus word-level KD (alpha 0.5, T 2) against the teacher's distributions;
   - `plain`: the references only, no teacher (the anchor the distillation has to beat).
3. Compressed teacher: dynamic int8 (llmcore/distill/compress.py) and bf16 weights.
4. All scored on the same 314 test pairs (the config's evaluate decoding: beam 4, no repeated trigram), with
   parameters, size on disk and CPU generation speed (tokens/s over the first --speed-examples test pairs,
   same batch and decoding, the best of --repeats passes), ratios against the teacher.
5. Where int8 starts to pay: fp32 against int8 generation speed and size for untrained GPTs of growing width
   (same vocabulary, prompts, beam and number of generated tokens), --sweep.

    python benchmarks/compress.py                       # ~40 min on 2 CPU cores
    python benchmarks/compress.py --steps 60 --sweep 128 --speed-examples 8 --max-examples 16   # a smoke run

Prints the tables; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as typed, from any directory

from llmcore.config import EvaluateConfig, FinetuneTaskConfig, KDConfig, SpeedConfig, StudentConfig, load_config  # noqa: E402
from llmcore.distill import compress  # noqa: E402
from llmcore.distill.measure import compare  # noqa: E402
from llmcore.distill.run import DistillJob, teacher_outputs  # noqa: E402
from llmcore.distill.run import run as distill  # noqa: E402
from llmcore.finetune.formats import task_examples  # noqa: E402
from llmcore.finetune.run import FinetuneJob  # noqa: E402
from llmcore.finetune.run import run as finetune  # noqa: E402
from llmcore.finetune.spec import load_finetuned  # noqa: E402
from llmcore.generate import generate  # noqa: E402
from llmcore.model import TransformerConfig, build_model, save  # noqa: E402
from llmcore.report import format_table  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def recipe(steps: int | None) -> tuple[FinetuneTaskConfig, EvaluateConfig]:
    cfg = load_config(DEFAULT_CONFIG)
    task = next(t for t in cfg.finetune if t.task == "translation")
    if steps:
        task = task.model_copy(update={"train": task.train.model_copy(update={
            "max_steps": steps, "eval_every": max(1, steps // 2), "checkpoint_every": max(1, steps // 2)})})
    return task, cfg.evaluate


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def speed_sweep(widths: list[int], vocab: int, workdir: Path, threads: int) -> list[dict]:
    """fp32 against int8 generation for untrained GPTs of growing width (2 layers, d_model / 32 heads): 32 prompts
    of 24 tokens, beam 4, exactly 32 new tokens each (eos never chosen: min_new_tokens = max_new_tokens)."""
    rows = []
    torch.set_num_threads(threads)
    prompts = torch.randint(5, vocab, (32, 24), generator=torch.Generator().manual_seed(0))
    for width in widths:
        torch.manual_seed(0)
        model = build_model(TransformerConfig(family="gpt", vocab_size=vocab, d_model=width, n_heads=max(1, width // 32),
                                              n_layers=2, max_seq_len=64, dropout=0.0, eos_token_id=0, pad_token_id=0))
        fp32_dir, int8_dir = save(model, workdir / f"sweep-{width}"), workdir / f"sweep-{width}-int8"
        compress.quantize_int8(fp32_dir, int8_dir)
        timings = {}
        for kind, directory in (("fp32", fp32_dir), ("int8", int8_dir)):
            m = compress.load_model(directory)
            best = None
            for _ in range(2):
                started = time.perf_counter()
                generate(m, prompts, max_new_tokens=32, min_new_tokens=32, num_beams=4, eos_token_id=0, pad_token_id=0)
                seconds = time.perf_counter() - started
                best = seconds if best is None else min(best, seconds)
            timings[kind] = 32 * 32 / best
        params = model.num_parameters()
        rows.append({"d_model": width, "params_M": round(params / 1e6, 2),
                     "linear_share": round(1 - vocab * width / params, 2),
                     "fp32_tok_s": round(timings["fp32"], 1), "int8_tok_s": round(timings["int8"], 1),
                     "int8_speedup": round(timings["int8"] / timings["fp32"], 2),
                     "int8_size_ratio": round(compress.size_on_disk(fp32_dir) / compress.size_on_disk(int8_dir), 2)})
        print(rows[-1], flush=True)
    return rows


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, help="optimizer steps of the teacher and of each student (default: the recipe's)")
    parser.add_argument("--student-steps", type=int, help="optimizer steps of each student (default: --steps, or the recipe's)")
    parser.add_argument("--teacher", help="a fine-tuned teacher directory to use instead of training one")
    parser.add_argument("--student-width", type=int, default=64, help="the students' d_model")
    parser.add_argument("--student-dropout", type=float, default=0.1)
    parser.add_argument("--max-examples", type=int, help="test pairs scored (default: all)")
    parser.add_argument("--speed-examples", type=int, default=64, help="test pairs decoded for tokens/s")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per model (the fastest counts)")
    parser.add_argument("--sweep", default="128,256,512,1024", help="d_model of the int8 crossover sweep ('' for none)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared 2-core machine)")
    parser.add_argument("--workdir", help="default: a new temporary directory (a rerun on the same one resumes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="compress-"))
    work.mkdir(parents=True, exist_ok=True)
    task, evaluate = recipe(args.steps)
    if args.max_examples:
        evaluate = evaluate.model_copy(update={"max_examples": args.max_examples})
    started = time.perf_counter()
    timings = {}

    teacher = Path(args.teacher) if args.teacher else work / "teacher" / "model"
    if not args.teacher:
        t0 = time.perf_counter()
        finetune(FinetuneJob(task.model_copy(update={"init": "scratch"}), str(work / "teacher")))
        timings["teacher_train_s"] = round(time.perf_counter() - t0)

    t0 = time.perf_counter()
    sequence = work / "teacher_outputs.jsonl"
    if not sequence.is_file():
        kd = KDConfig(sequence=True)
        rows = teacher_outputs(load_finetuned(teacher), task_examples(task)["train"], kd.sequence_generation)
        sequence.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    timings["teacher_outputs_s"] = round(time.perf_counter() - t0)

    width = args.student_width
    student_train = task.train
    if args.student_steps:
        steps = args.student_steps
        student_train = task.train.model_copy(update={"max_steps": steps, "eval_every": min(task.train.eval_every, steps),
                                                      "checkpoint_every": min(task.train.checkpoint_every, steps)})
    shape = dict(d_model=width, n_heads=4, n_layers=2, init="fresh", dropout=args.student_dropout, train=student_train)
    students = {
        "distilled": StudentConfig(name="distilled", kd=KDConfig(alpha=0.5, temperature=2.0, sequence=True), **shape),
        "plain": StudentConfig(name="plain", kd=KDConfig(alpha=0.0), **shape),
    }
    dirs = {"teacher": teacher}
    for name, student in students.items():
        t0 = time.perf_counter()
        summary = distill(DistillJob(task, str(teacher), str(work / name), student,
                                     sequence_data=str(sequence) if student.kd.sequence else None))
        dirs[name] = work / name / summary["model"]
        timings[f"{name}_train_s"] = round(time.perf_counter() - t0)

    t0 = time.perf_counter()
    dirs["int8"] = compress.quantize_int8(teacher, work / "teacher-int8")
    dirs["bf16"] = compress.export_half(teacher, work / "teacher-bf16", "bf16")
    timings["compress_s"] = round(time.perf_counter() - t0, 1)

    rows = compare(dirs, task, evaluate, SpeedConfig(examples=args.speed_examples, threads=args.threads, repeats=args.repeats))
    shown = [{"model": r["model"], "kind": r["kind"], "params": r["params"], "params_ratio": round(r["params_ratio"], 3),
              "size_MB": round(r["size_mb"], 2), "x smaller": round(r["size_ratio"], 2), "BLEU": round(r["bleu"], 2),
              "chrF": round(r["chrf"], 2), "tokens/s": round(r["tokens_per_s"], 1), "speedup": round(r["speedup"], 2)}
             for r in rows]
    print(f"\nSide by side ({len(task_examples(task)['test'])} test pairs, {cpu_name()}, {args.threads} threads)\n"
          + format_table(shown))
    sweep = speed_sweep([int(w) for w in args.sweep.split(",") if w], 4000, work, args.threads) if args.sweep else []
    if sweep:
        print("\nint8 against fp32 by width (untrained GPTs, 2 layers, 4,000-token vocabulary)\n" + format_table(sweep))
    by = {r["model"]: r for r in rows}
    t = by["teacher"]
    result = {
        "teacher_bleu": round(t["bleu"], 2), "student_bleu": round(by["distilled"]["bleu"], 2),
        "student_plain_bleu": round(by["plain"]["bleu"], 2),
        "student_bleu_kept": round(by["distilled"]["bleu"] / t["bleu"], 3) if t["bleu"] else None,
        "student_params_ratio": round(by["distilled"]["params_ratio"], 3),
        "student_speedup": round(by["distilled"]["speedup"], 2),
        "int8_bleu": round(by["int8"]["bleu"], 2), "int8_size_ratio": round(by["int8"]["size_ratio"], 2),
        "int8_speedup": round(by["int8"]["speedup"], 2),
        "bf16_bleu": round(by["bf16"]["bleu"], 2), "bf16_size_ratio": round(by["bf16"]["size_ratio"], 2),
        "bf16_speedup": round(by["bf16"]["speedup"], 2),
        "sweep": [{k: r[k] for k in ("d_model", "int8_speedup", "int8_size_ratio")} for r in sweep],
        "cpu": cpu_name(), "threads": args.threads, "seconds": round(time.perf_counter() - started), **timings,
        "workdir": str(work),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
