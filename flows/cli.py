"""The `llmpipe` command: run the pipeline, validate a config, retry a failed flow run, serve the deployments, export a
model, show a data root's status, collect its garbage."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Offline machines: no telemetry calls out of the embedded server (must precede the prefect import).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# The embedded server starts slower than the default 20 s allow on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from llmcore.config import ConfigError, load_config  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _quiet_task_endings() -> None:
    """Prefect's one line per finished task ("Finished in state Cached()", hundreds per run) stays in the UI and
    leaves the terminal, where failures and the summary are what a person reads."""
    import logging

    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    setup_logging()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(lambda r: not (r.name == "prefect.task_runs" and r.getMessage().startswith("Finished in state")
                                             and r.levelno < logging.WARNING))


def _stages(args: argparse.Namespace) -> list[str]:
    from flows.pipeline import FLOWS

    if args.only:
        return [args.only]
    start = FLOWS.index(args.start) if args.start else 0
    end = FLOWS.index(args.until) + 1 if args.until else len(FLOWS)
    if start >= end:
        raise ConfigError(f"--from {args.start} comes after --until {args.until}: nothing to run")
    return list(FLOWS[start:end])


def _run(args: argparse.Namespace) -> int:
    from flows.data import DEFAULT_DATA_ROOT
    from flows.pipeline import pipeline_flow
    from flows.summary import print_summary
    from llmcore.report import format_table
    from tasks.common import cache_refreshed
    from tasks.results import DataRootResults

    config = load_config(args.config)
    root = os.path.abspath(args.data_root or DEFAULT_DATA_ROOT)
    stages = _stages(args)
    if args.dry_run:
        from flows.plan import dry_run

        print(f"{args.config} on {root}: what a run would do (data stages; training stages run when their input is new)")
        print(format_table(dry_run(config, root)))
        return 0
    _quiet_task_endings()
    start = time.monotonic()
    state = None
    try:
        with cache_refreshed(args.refresh_cache):  # the flow tags its runs (config name, data root)
            state = pipeline_flow.with_options(result_storage=DataRootResults.of(root))(config, root, stages, return_state=True)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished parts and stages are kept. Resume with: llmpipe run {args.config} --data-root {root}"
              " (finished stages come back Cached)", file=sys.stderr)
        return 130
    if not state.is_completed():
        print(f"\nthe run failed: {state.message}\nfix the cause, then: llmpipe retry {state.state_details.flow_run_id} "
              "(finished stages come back Cached)", file=sys.stderr)
        return 1
    print_summary(state, root, time.monotonic() - start)
    return 0


def _validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    sources = ", ".join(s.name for s in config.data.ingest.sources)
    print(f"{args.config}: valid ({len(config.data.ingest.sources)} source(s): {sources})")
    return 0


def _retry(args: argparse.Namespace) -> int:
    from flows.rerun import retry_flow_run

    state = retry_flow_run(args.flow_run_id)
    print(f"flow run {args.flow_run_id}: {state.type.value}")
    return 0 if state.is_completed() else 1


def _serve(args: argparse.Namespace) -> int:
    from flows.serve import PREFECT_FILE, serve_deployments

    # 0: a stop that SIGTERM or Ctrl-C asked for is a clean end (systemd, Docker and Kubernetes read 143 as a failure)
    print(serve_deployments(args.prefect_file or PREFECT_FILE, args.config, args.data_root or "", args.limit))
    return 0


def _export(args: argparse.Namespace) -> int:
    from llmcore.export import export, loading_example

    out = export(args.model_dir, args.to)
    print(f"{args.model_dir} exported to {out}")
    print(f"load it: {loading_example(out)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from flows.data import DEFAULT_DATA_ROOT
    from llmcore.status import report

    root = Path(args.data_root or DEFAULT_DATA_ROOT)
    if not root.is_dir():
        print(f"{root.resolve()}: no such data root", file=sys.stderr)
        return 2
    print(report(root))
    return 0


def _gc(args: argparse.Namespace) -> int:
    from flows.data import DEFAULT_DATA_ROOT
    from llmcore.housekeeping import collect, delete, names

    root = Path(args.data_root or DEFAULT_DATA_ROOT).resolve()
    if not root.is_dir():
        print(f"{root}: no such data root", file=sys.stderr)
        return 2
    garbage = collect(root)
    for path in garbage.paths:
        print(f"  {path.relative_to(root)}")
    print(f"{len(garbage.paths)} unreachable entries and {len(garbage.results)} Prefect result records, "
          f"{garbage.bytes / 2**20:.1f} MiB; kept: {garbage.kept} entries reached from {', '.join(sorted(names(root))) or 'no name'}")
    if args.delete:
        delete(garbage)
        print("deleted")
    elif garbage.paths:
        print("a dry run: add --delete to remove them")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmpipe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline (default: the bundled sample, configs/tiny.yaml)")
    run.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    run.add_argument("--data-root", help="where stage directories go (default ./llmpipe-data)")
    run.add_argument("--refresh-cache", action="store_true", help="ignore Prefect's cache (stages on disk are still reused)")
    flows = ["data", "pretrain", "finetune", "distill", "evaluate"]
    which = run.add_mutually_exclusive_group()
    which.add_argument("--only", choices=flows, help="run this stage alone, on the latest outputs of the ones before it")
    which.add_argument("--from", dest="start", choices=flows, help="run from this stage on (the ones before: their latest outputs)")
    run.add_argument("--until", choices=flows, help="stop after this stage")
    run.add_argument("--dry-run", action="store_true", help="show which data stages (and parts) would run or come back Cached")
    run.add_argument("--quiet", action="store_true", help="warnings and the final summary only")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="Prefect's log level in the terminal")
    run.set_defaults(func=_run)
    validate = sub.add_parser("validate", help="check a config file and print every problem with its location")
    validate.add_argument("config")
    validate.set_defaults(func=_validate)
    retry = sub.add_parser("retry", help="rerun a failed flow run here: finished stages come back Cached")
    retry.add_argument("flow_run_id")
    retry.set_defaults(func=_retry)
    serve = sub.add_parser("serve", help="serve deployments/prefect.yaml's deployments and schedules here, without a work pool")
    serve.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    serve.add_argument("--data-root", help="the shared root for stage directories and results (default ./llmpipe-data)")
    serve.add_argument("--prefect-file", help="the deployments to serve (default deployments/prefect.yaml)")
    serve.add_argument("--limit", type=int, help="at most this many flow runs at once")
    serve.set_defaults(func=_serve)
    export = sub.add_parser("export", help="write a pretrained or fine-tuned model directory as one transformers loads as it is")
    export.add_argument("model_dir", metavar="DIR", help="a checkpoint, a fine-tuned model, or the pretrain / finetune stage holding it")
    export.add_argument("--to", required=True, metavar="OUT", help="the new directory (must not exist, or be empty)")
    export.set_defaults(func=_export)
    status = sub.add_parser("status", help="what a data root holds: latest stages, funnel, models and scores, evaluation")
    status.add_argument("--data-root", help="the data root (default ./llmpipe-data)")
    status.set_defaults(func=_status)
    gc = sub.add_parser("gc", help="list (or --delete) what no latest run reaches: old stage directories, parts, results")
    gc.add_argument("--data-root", help="the data root (default ./llmpipe-data)")
    gc.add_argument("--delete", action="store_true", help="remove them (default: a dry run that lists them)")
    gc.set_defaults(func=_gc)
    args = parser.parse_args(argv)
    if getattr(args, "quiet", False) or getattr(args, "log_level", None):
        # read when Prefect is imported, which has not happened yet (flows are imported by the commands)
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING" if args.quiet else args.log_level
    try:
        return args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
