"""The `llmpipe` command: run the pipeline, validate a config, retry a failed flow run, serve the deployments, export a model."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Offline machines: no telemetry calls out of the embedded server (must precede the prefect import).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# The embedded server starts slower than the default 20 s allow on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from llmcore.config import ConfigError, load_config  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _run(args: argparse.Namespace) -> int:
    from flows.data import DEFAULT_DATA_ROOT
    from flows.pipeline import pipeline_flow
    from llmcore.report import format_table, funnel
    from tasks.common import cache_refreshed
    from tasks.results import DataRootResults

    config = load_config(args.config)
    root = os.path.abspath(args.data_root or DEFAULT_DATA_ROOT)
    with cache_refreshed(args.refresh_cache):
        result = pipeline_flow.with_options(result_storage=DataRootResults.of(root))(config, root)
    manifests = [json.loads(Path(p).read_text()) for p in result["data"]]
    print("\nData funnel\n" + format_table(funnel(manifests)))
    print(f"\nCorpus: {Path(result['data'][-1]).parent}")
    print(f"Pretrained model: {Path(result['pretrain'][0]).parent}")
    if "evaluate" in result:
        from flows.evaluate import table_rows

        evaluation = json.loads(Path(result["evaluate"][0]).read_text())
        print("\nEvaluation on held-out test examples (model beside its trivial baseline)\n"
              + format_table(table_rows(evaluation["tasks"])))
        print(f"\nResults: {result['evaluate'][0]}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmpipe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline (default: the bundled sample, configs/tiny.yaml)")
    run.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    run.add_argument("--data-root", help="where stage directories go (default ./llmpipe-data)")
    run.add_argument("--refresh-cache", action="store_true", help="ignore Prefect's cache (stages on disk are still reused)")
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
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
