"""The distill flow: students and compressed copies of one fine-tuned model (the teacher), after fine-tuning.

Per student a cached, retryable task trains it against the teacher (word-level KD, optionally on the
teacher's beam outputs: sequence-level KD, whose data is its own cached task, shared by the students);
per model to compress (the teacher, a student) and method (int8, bf16 / fp16, pruning) a task writes the
compressed directory. Keys: the student's / compression's settings, the task's config and the teacher's
finetune key (or its files' hashes), so a rerun reuses every finished model and a changed student retrains
alone. Returns the members' manifests and, last, the set's manifest (`<data_root>/distill/<key>/manifest.json`:
teacher, task, speed settings, members), which the evaluate flow scores side by side (`compression_table`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.data import DEFAULT_DATA_ROOT
from llmcore.config import DistillConfig, EvaluateConfig, FinetuneTaskConfig, SpeedConfig
from llmcore.housekeeping import point
from llmcore.manifest import MANIFEST, atomic_write_json, file_sha256
from llmcore.report import format_table
from llmcore.stage import StageRef, content_key, key_config
from tasks.common import bind
from tasks.distill import COMPARISON, VERSION, compare_task, compress_task, student_task, teacher_outputs_task

STAGE, DATA_STAGE, COMPARE_STAGE = "distill", "distill-data", "compression"


def stage_key(stage: str, settings: dict, upstream: list[str]) -> str:
    return content_key(stage, VERSION, settings, upstream)


def _read(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def teacher_of(config: DistillConfig, finetune_manifests: list[str]) -> tuple[str, FinetuneTaskConfig, list[str]]:
    """(teacher model directory, the task's config, what the teacher's identity hashes to: its finetune key or files)."""
    finetunes = {m["name"]: (p, m) for p in finetune_manifests for m in [_read(p)]}
    if config.task not in finetunes:
        raise ValueError(f"distill.task {config.task!r} names no fine-tuned task; use one of {sorted(finetunes)}")
    path, manifest = finetunes[config.task]
    task_cfg = FinetuneTaskConfig.model_validate(manifest["config"])
    if config.teacher:
        teacher = os.path.abspath(config.teacher)
        return teacher, task_cfg, [file_sha256(p) for p in sorted(Path(teacher).iterdir()) if p.is_file()]
    return str(Path(path).parent / manifest["model"]), task_cfg, [manifest["key"]]


@flow(name="distill", persist_result=True, result_serializer="json")
def distill_flow(config: DistillConfig, finetune_manifests: list[str], data_root: str = DEFAULT_DATA_ROOT) -> list[str]:
    """Train the students and write the compressed models; returns their manifests, then the set's manifest."""
    root, logger = os.path.abspath(data_root), get_run_logger()
    teacher, task_cfg, teacher_keys = teacher_of(config, finetune_manifests)
    task_dump = key_config(task_cfg)
    members: dict[str, str] = {}
    sources = {"teacher": (teacher, teacher_keys)}
    sequence: dict[str, str] = {}  # sequence-KD data per decoding (its key -> the outputs file)
    for student in config.students:  # one at a time: each trains on every core
        upstream = [*teacher_keys, file_sha256(task_cfg.path)]
        data = None
        if student.kd.sequence:
            generation = student.kd.sequence_generation
            data_key = stage_key(DATA_STAGE, {"generation": key_config(generation), "task": task_dump}, upstream)
            if data_key not in sequence:
                made = bind(teacher_outputs_task, root)(root, DATA_STAGE, data_key, config.task, teacher, task_cfg, generation, upstream)
                sequence[data_key] = str(Path(made).parent / _read(made)["outputs"])
            data = sequence[data_key]
            upstream = [*upstream, data_key]
        key = stage_key(STAGE, {"student": key_config(student), "task": task_dump}, upstream)
        path = bind(student_task, root)(root, STAGE, key, student.name, task_cfg, student, teacher, data, upstream)
        manifest = _read(path)
        members[student.name] = path
        point(StageRef.of(path), student.name)  # distill/<student name>: that student's latest model
        sources[student.name] = (str(Path(path).parent / manifest["model"]), [manifest["key"]])
        logger.info("student %s: %s parameters (teacher %s), validation %s", student.name, manifest["summary"]["params"],
                    manifest["summary"]["teacher_params"], {k: round(v, 3) for k, v in manifest["validation"].items()
                                                             if isinstance(v, float)})
    c = config.compress
    methods = (["int8"] if c.int8 else []) + list(c.half) + (["prune"] if c.prune else [])
    for model in c.models:
        source, source_keys = sources[model]
        for method in methods:
            settings = {"method": method, "task": task_dump, **({"prune": key_config(c.prune)} if method == "prune" else {})}
            key = stage_key(STAGE, settings, source_keys)
            name = f"{model}-{method}"
            members[name] = bind(compress_task, root)(root, STAGE, key, name, method, source, task_cfg, c, source_keys)
            point(StageRef.of(members[name]), name)
            logger.info("%s: %s", name, Path(members[name]).parent / "model")
    member_keys = [_read(p)["key"] for p in members.values()]
    set_key = stage_key(STAGE, {"set": key_config(config)}, [*teacher_keys, *member_keys])
    set_manifest = Path(root, STAGE, set_key, MANIFEST)
    if not set_manifest.is_file():
        atomic_write_json(set_manifest, {"stage": STAGE, "kind": "set", "key": set_key, "name": config.task, "teacher": teacher,
                                         "task_config": task_dump, "speed": config.speed.model_dump(mode="json"),
                                         "members": members, "upstream": teacher_keys})
    point(StageRef(root, STAGE, set_key))
    return [*members.values(), str(set_manifest)]


def table_rows(rows: list[dict], metric: str) -> list[dict]:
    """The side-by-side table: each model's task metric, size and speed, and their ratios to the teacher's."""
    base = rows[0][metric] or None
    return [{"model": r["model"], "kind": r["kind"], "params": r["params"], "params x": round(r["params_ratio"], 3),
             "size MB": round(r["size_mb"], 2), "x smaller": round(r["size_ratio"], 2), metric: round(r[metric], 2),
             f"{metric} kept": None if base is None else round(r[metric] / base, 3),
             "tokens/s (CPU)": round(r["tokens_per_s"], 1), "speedup": round(r["speedup"], 2)} for r in rows]


def compression_table(config: EvaluateConfig, distill_manifest: str, data_root: str) -> str:
    """Score the set's teacher, students and compressed models side by side (a cached task) and show the
    `compression` table artifact; returns the comparison file's path."""
    root = os.path.abspath(data_root)
    plan = _read(distill_manifest)
    models = {"teacher": plan["teacher"]} | {name: str(Path(p).parent / _read(p)["model"]) for name, p in plan["members"].items()}
    task_cfg = FinetuneTaskConfig.model_validate(plan["task_config"])
    speed = SpeedConfig.model_validate(plan["speed"])
    key = stage_key(COMPARE_STAGE, {"evaluate": key_config(config), "speed": plan["speed"]}, [plan["key"]])
    path = bind(compare_task, root)(root, COMPARE_STAGE, key, plan["name"], models, task_cfg, config, speed, [plan["key"]])
    point(StageRef.of(path))
    comparison = Path(path).parent / COMPARISON
    result = _read(comparison)
    rows = table_rows(result["rows"], result["metric"])
    create_table_artifact(rows, key="compression", description=f"Teacher, students and compressed models of {plan['name']} on "
                          f"the same test examples: {result['metric']}, size, CPU generation speed ({comparison})")
    get_run_logger().info("Compression (%s)\n%s", comparison, format_table(rows))
    return str(comparison)
