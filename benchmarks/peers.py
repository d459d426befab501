"""The data flow beside datatrove: the same corpus through llmpipe's ingest -> clean -> dedup and through
datatrove's JsonlReader -> the same filters -> its 4-step MinHash dedup, same machine, same run.

Corpus: benchmarks/peers_corpus.py (real text of this machine: manual pages, gettext catalogs, package
documentation, Python package descriptions and docstrings; recombined paragraphs beyond the real text;
3 % edited near copies and 1 % exact copies), `--docs` documents of `--bytes` text in total.

(a) ours: flows.data's own stage functions (per_part for ingest and clean, deduplicate) in a Prefect flow,
    on a Dask LocalCluster of `--workers` single-threaded processes (`runner: {kind: dask}`: the thread
    runner shares one GIL, the peer runs processes). The language stage is left out (it needs a model
    on both sides: datatrove's language filter downloads fastText's lid.176). Clean: the four named
    filters enabled for every document (`languages: []`; the peer judges every document as English),
    llmpipe's own base heuristics off (min_chars 0 ...: the peer has none).
(b) peer: benchmarks/peers_datatrove.py run by the datatrove venv (`--peer-python`), LocalPipelineExecutor
    with `--workers` processes per step.
Both: word 5-gram shingles, seed 1, threshold 0.8. llmpipe: 256 permutations, LSH 23 bands x 11 rows (its
optimiser's choice for 0.8 / 256), candidates verified by estimated Jaccard >= 0.8. datatrove has no
verification step (a shared bucket is a duplicate), so it gets the same S-curve: 23 buckets x 11 hashes
(253 permutations).

Each side runs in its own process tree; wall seconds and the peak of the summed resident sets of the tree
(sampled every 0.1 s, benchmarks/dedup.py's sampler) are measured from here. ours_s / peer_s are the
pipelines' own seconds (ours: the flow from runner start to the dedup manifest; peer: its five executor
runs); the process walls (imports, the Prefect server's start for ours) are reported beside.

kept_agreement: share of the corpus's documents that both filter steps keep or both drop. Dedup: the share
of documents kept by both filter steps that both dedup steps keep or both drop, and pair precision / recall
of each side's clusters against the exact Jaccard of llmpipe's word 5-gram sets, on a sample of those
documents (plus every member of the clusters they belong to on either side).

    python benchmarks/peers.py [--docs 1000000] [--bytes 1000000000] [--workers 2] [--workdir DIR] [--quick]

Prints the table; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import dedup as dedup_bench  # noqa: E402
from dedup import PeakRss, pair_scores, true_pairs  # noqa: E402

PEER_PYTHON = "/work/peers-venv/bin/python"
PEER_SETUP = ('python3 -m venv /work/peers-venv && /work/peers-venv/bin/pip install "datatrove[io,processing]" '
              "orjson spacy")
BANDS, ROWS = 23, 11  # llmpipe's lsh_params(0.8, 256, 0.9), given to datatrove as buckets x hashes per bucket
SOURCE = "peers"


class TreeRss(PeakRss):
    """PeakRss of another process's tree, and the CPU seconds (user + system) of every process seen in it
    (each one's last sample: a process living under 0.1 s is missed), which a busy machine moves less than
    wall seconds."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(interval)
        self.pid, self.ticks = pid, {}

    def _run(self) -> None:
        while not self._stop.is_set():
            tree = dedup_bench._tree(self.pid)
            self.peak = max(self.peak, sum(dedup_bench._rss(p) for p in tree))
            for p in tree:
                try:
                    fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                    self.ticks[p] = int(fields[11]) + int(fields[12])  # utime, stime
                except (OSError, IndexError, ValueError):
                    pass
            time.sleep(self.interval)

    @property
    def cpu_s(self) -> float:
        return round(sum(self.ticks.values()) / os.sysconf("SC_CLK_TCK"), 1)


def measured(cmd: list[str], env: dict | None = None, log: Path | None = None) -> tuple[dict, float, int]:
    """Run `cmd`; (its last stdout line as JSON with the tree's CPU seconds `cpu_s` added, wall seconds,
    peak RSS bytes of its process tree)."""
    start = time.perf_counter()
    with open(log or os.devnull, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        with TreeRss(proc.pid) as rss:
            out, _ = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = Path(log).read_text()[-3000:] if log else ""
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{tail}")
    result = json.loads(out.strip().splitlines()[-1])
    result["cpu_s"] = rss.cpu_s
    return result, wall, rss.peak


# ----------------------------------------------------------------------------- ours, in its own process
def clean_config():
    from llmcore.config import CleanConfig

    on = {"enabled": True, "languages": []}
    return CleanConfig(min_chars=0, max_chars=10**9, min_words=0, min_mean_word_len=0, max_mean_word_len=10**9,
                       max_symbol_ratio=1.0, max_dup_line_frac=1.0,
                       gopher_repetition=on, gopher_quality=on, c4=on, fineweb=on)


@contextmanager
def prefect_server(home: Path):
    """`prefect server start` (SQLite under `home`, a free port), a child of this process, as PREFECT_API_URL:
    one server for the flow and every Dask worker (each would start an embedded one of its own otherwise)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false", "PREFECT_API_URL": api}
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.log", "w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        os.environ.update(PREFECT_HOME=str(home), PREFECT_API_URL=api)
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_ours(corpus: Path, root: Path, workers: int, address: str | None = None) -> None:
    """The flow's ingest, clean and dedup stage functions in one flow; prints its seconds and manifests."""
    with prefect_server(root.parent / f"{root.name}-prefect"):
        _run_ours(corpus, root, workers, address)


def _run_ours(corpus: Path, root: Path, workers: int, address: str | None) -> None:
    from prefect import flow

    from flows.data import deduplicate, per_part, task_runner
    from llmcore.config import DataConfig, IngestConfig, LanguageConfig, RunnerConfig, SourceConfig
    from llmcore.data.stages import Clean, Dedup, Ingest

    @flow(name="peers-warm-up")
    def warm_up() -> None:  # the first flow run's set-up, outside the timed run
        return None

    @flow(name="peers-ingest-clean-dedup", persist_result=True, result_serializer="json")
    def ingest_clean_dedup(config, data_root):  # untyped: DataConfig is imported in this function, not the module
        seconds, start = {}, time.perf_counter()
        with task_runner(config.runner) as runner:
            seconds["runner_start"] = round(time.perf_counter() - start, 2)
            mark = time.perf_counter()
            ingested = per_part(runner, data_root, Ingest(config.ingest), None)
            seconds["ingest"] = round(time.perf_counter() - mark, 2)
            mark = time.perf_counter()
            cleaned = per_part(runner, data_root, Clean(config.clean), ingested)
            seconds["clean"] = round(time.perf_counter() - mark, 2)
            mark = time.perf_counter()
            deduped = deduplicate(runner, data_root, Dedup(config.dedup), cleaned)
            seconds["dedup"] = round(time.perf_counter() - mark, 2)
        seconds["total"] = round(time.perf_counter() - start, 2)
        manifests = {s.stage: str(s.manifest_path) for s in (ingested, cleaned, deduped)}
        seconds["dedup_cluster"] = deduped.manifest()["dedup"]["seconds"]
        return {"seconds": seconds, "manifests": manifests}

    config = DataConfig(
        ingest=IngestConfig(sources=[SourceConfig(name=SOURCE, format="jsonl", path=str(corpus), id_field="id")]),
        clean=clean_config(),
        language=LanguageConfig(allowed=["en"]),  # not run
        runner=RunnerConfig(kind="dask", workers=workers, dask_address=address),
    )
    warm_up()
    print(json.dumps(ingest_clean_dedup(config, str(root.resolve()))))


# ----------------------------------------------------------------------------- reading the outputs back
def stage_rows(manifest_path: str, kind: str, columns: list[str]) -> list[dict]:
    import pyarrow.parquet as pq

    manifest = json.loads(Path(manifest_path).read_text())
    stage = Path(manifest_path).parent
    return [r for f in manifest[kind] for r in pq.read_table(stage / f["path"], columns=columns).to_pylist()]


def own_id(doc_id: str) -> str:
    return doc_id.removeprefix(f"{SOURCE}/")


def agreement(corpus_ids: list[str], ours: set[str], peer: set[str]) -> dict:
    both_keep = sum(i in ours and i in peer for i in corpus_ids)
    both_drop = sum(i not in ours and i not in peer for i in corpus_ids)
    return {"docs": len(corpus_ids), "kept_agreement": round((both_keep + both_drop) / max(len(corpus_ids), 1), 5),
            "ours_kept": len(ours), "peer_kept": len(peer), "only_ours_kept": len(ours - peer),
            "only_peer_kept": len(peer - ours)}


def dedup_quality(texts: dict[str, str], ours_reps: dict[str, str], peer_cluster: dict[str, int],
                  peer_removed: set[str], sample: int, threshold: float, seed: int = 0) -> dict:
    """Pair precision / recall of both sides' clusters against exact Jaccard, on a sample of the documents both
    filter steps kept, closed over both sides' clusters."""
    peer_members = defaultdict(list)
    for doc_id, cluster in peer_cluster.items():
        peer_members[cluster].append(doc_id)
    peer_reps = {}
    for members in peer_members.values():
        kept = [m for m in members if m not in peer_removed] or sorted(members)
        peer_reps.update({m: kept[0] for m in members if m != kept[0]})
    ours_members = defaultdict(list)
    for doc_id, rep in ours_reps.items():
        ours_members[rep].append(doc_id)
    ids = sorted(texts)
    chosen = set(random.Random(seed).sample(ids, min(sample, len(ids))))
    for doc_id in list(chosen):
        rep = ours_reps.get(doc_id, doc_id)
        chosen.update([rep, *ours_members.get(rep, [])])
        if doc_id in peer_cluster:
            chosen.update(peer_members[peer_cluster[doc_id]])
    docs = [{"id": i, "text": texts[i]} for i in sorted(chosen) if i in texts]
    inside = {d["id"] for d in docs}
    truth = true_pairs(docs)
    out = {"sample_docs": len(docs), "true_pairs": sum(j >= threshold for j in truth.values())}
    for side, reps in (("ours", ours_reps), ("peer", peer_reps)):
        scores = pair_scores(docs, {k: v for k, v in reps.items() if k in inside and v in inside}, truth, threshold)
        out[side] = {k: scores[k] for k in ("precision", "recall", "f1", "predicted_pairs", "removed_below_threshold",
                                            "kept_duplicate_pairs")}
    return out


def ours_env() -> dict:
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)  # its own server, in its tree (prefect_server)
    return env


def corpus_of(args, work: Path) -> tuple[Path, dict]:
    from peers_corpus import build

    if args.corpus:
        return args.corpus, json.loads((args.corpus / "corpus.json").read_text())
    start = time.perf_counter()
    stats = build(work / "corpus", args.docs, args.bytes)
    print(f"corpus: {stats['docs']} documents, {stats['bytes'] / 1e6:.1f} MB, real share {stats['real_share']} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    return work / "corpus", stats


def scaling(args) -> None:
    """Ours on a cluster of separate processes (`dask scheduler`, `dask worker` x n), n = 1 then 2, each in a
    fresh data root; the tree measured is the flow's process (the workers are not its children)."""
    from dask_cluster import DaskCluster

    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="peers-scaling-", dir=args.workdir))
    try:
        corpus, stats = corpus_of(args, work)
        jsonl, out = corpus / "jsonl", {}
        for n in (1, 2):
            with DaskCluster(workers=n) as cluster:
                ours, wall, _ = measured([sys.executable, str(Path(__file__).resolve()), "--ours", str(jsonl),
                                          str(work / f"ours-{n}"), "--dask-address", cluster.address],
                                         env=ours_env(), log=work / f"ours-{n}.log")
            out[n] = ours["seconds"]
            print(f"{n} worker(s): {ours['seconds']}", flush=True)
        steps = ("ingest", "clean", "dedup", "total")
        result = {"docs": stats["docs"], "bytes": stats["bytes"], "seconds_1_worker": out[1], "seconds_2_workers": out[2],
                  "speedup": {k: round(out[1][k] / out[2][k], 2) for k in steps}}
        print(json.dumps(result))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def mb(n: int) -> int:
    return round(n / 2**20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--bytes", type=int, default=1_000_000_000)
    ap.add_argument("--quick", action="store_true", help="a CI-size run: 1,000 documents, 1 MB")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="where the corpus and both outputs go (default: a temp dir)")
    ap.add_argument("--corpus", type=Path, default=None, help="an existing peers_corpus.py output to reuse")
    ap.add_argument("--peer-python", default=os.environ.get("LLMPIPE_PEER_PYTHON", PEER_PYTHON))
    ap.add_argument("--sample", type=int, default=3000, help="documents sampled for dedup precision / recall")
    ap.add_argument("--scaling", action="store_true", help="only ours, on a `dask scheduler` with 1 then 2 `dask worker` "
                    "processes: the scaling of the Dask runner on this machine")
    ap.add_argument("--ours", nargs=2, type=Path, metavar=("CORPUS", "ROOT"), help=argparse.SUPPRESS)
    ap.add_argument("--dask-address", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ours:
        run_ours(*args.ours, args.workers, args.dask_address)
        return
    if args.scaling:
        scaling(args)
        return
    if not Path(args.peer_python).exists():
        print(f"datatrove's venv is missing ({args.peer_python}). Create it with:\n    {PEER_SETUP}\n"
              "or point --peer-python / LLMPIPE_PEER_PYTHON at a Python that has datatrove 0.10.", file=sys.stderr)
        raise SystemExit(2)
    if args.quick:
        args.docs, args.bytes = 1000, 1_000_000

    from llmcore.config import DedupConfig

    dedup_cfg = DedupConfig()
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="peers-", dir=args.workdir))
    try:
        corpus, stats = corpus_of(args, work)
        jsonl = corpus / "jsonl"
        for path in sorted(jsonl.glob("*.jsonl")):  # both read it from the page cache
            path.read_bytes()

        peer, peer_wall, peer_rss = measured(
            [args.peer_python, str(HERE / "peers_datatrove.py"), str(jsonl), str(work / "peer"), "--workers",
             str(args.workers), "--ngram", str(dedup_cfg.ngram), "--buckets", str(BANDS), "--rows", str(ROWS),
             "--seed", str(dedup_cfg.seed)], log=work / "peer.log")
        print(f"peer: {peer['seconds']}", flush=True)
        ours, ours_wall, ours_rss = measured(
            [sys.executable, str(Path(__file__).resolve()), "--ours", str(jsonl), str(work / "ours"), "--workers",
             str(args.workers)], env=ours_env(), log=work / "ours.log")
        print(f"ours: {ours['seconds']}", flush=True)

        # --- what each kept
        corpus_ids = [json.loads(line)["id"] for p in sorted(jsonl.glob("*.jsonl")) for line in p.open(encoding="utf-8")]
        clean_kept = stage_rows(ours["manifests"]["clean"], "files", ["id", "text"])
        ours_clean = {own_id(r["id"]) for r in clean_kept}
        reasons = {own_id(r["id"]): r["reason"] for r in stage_rows(ours["manifests"]["clean"], "rejected", ["id", "reason"])}
        ours_removed = {own_id(r["id"]): own_id(r["detail"])
                        for r in stage_rows(ours["manifests"]["dedup"], "rejected", ["id", "detail"])}
        ids = json.loads(Path(peer["ids"]).read_text())
        peer_clean, peer_removed = set(ids["filter_kept"]), set(ids["dedup_removed"])
        filters = agreement(corpus_ids, ours_clean, peer_clean)
        filters["ours_reasons_where_peer_kept"] = dict(Counter(reasons[i] for i in ours_clean ^ peer_clean
                                                               if i in reasons and i in peer_clean).most_common(8))
        both = sorted(ours_clean & peer_clean)
        dedup = agreement(both, {i for i in both if i not in ours_removed}, {i for i in both if i not in peer_removed})
        dedup.update({"ours_removed": len(ours_removed), "peer_removed": len(peer_removed)})
        texts = {own_id(r["id"]): r["text"] for r in clean_kept if own_id(r["id"]) in peer_clean}
        dedup.update(dedup_quality(texts, ours_removed, ids["cluster_of"], peer_removed, args.sample, dedup_cfg.threshold))

        peer_s = round(sum(peer["seconds"].values()), 2)
        ours_s = ours["seconds"]["total"]
        result = {
            "docs": stats["docs"], "bytes": stats["bytes"], "ours_s": ours_s, "peer_s": peer_s,
            "ratio": round(peer_s / ours_s, 2), "ours_peak_rss_mb": mb(ours_rss), "peer_peak_rss_mb": mb(peer_rss),
            "kept_agreement": filters["kept_agreement"], "dedup_kept_agreement": dedup["kept_agreement"],
            "ours_steps": ours["seconds"], "peer_steps": peer["seconds"],
            "ours_process_s": round(ours_wall, 1), "peer_process_s": round(peer_wall, 1),
            # CPU seconds of each whole process tree, process start to exit (ours: its Prefect server too)
            "ours_cpu_s": ours["cpu_s"], "peer_cpu_s": peer["cpu_s"], "cpu_ratio": round(peer["cpu_s"] / ours["cpu_s"], 2),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "filters": filters, "dedup": dedup, "workers": args.workers,
            "lsh": {"ours": f"{BANDS}x{ROWS} of {dedup_cfg.num_perm}, verified", "peer": f"{BANDS}x{ROWS}, unverified"},
            "corpus": {k: stats[k] for k in ("real_share", "real_docs", "recombined_docs", "near_copies", "exact_copies",
                                             "sha256", "files")},
            "language": "left out of both sides (datatrove's LanguageFilter downloads fastText lid.176)",
        }
        rows = [("step", "ours s", "datatrove s")]
        rows += [("ingest (read)", ours["seconds"]["ingest"], "-"), ("clean (4 filters)", ours["seconds"]["clean"],
                 peer["seconds"]["clean"]), ("dedup", ours["seconds"]["dedup"],
                 round(sum(v for k, v in peer["seconds"].items() if k.startswith("dedup")), 2)),
                 ("total", ours_s, peer_s)]
        for row in rows:
            print(f"{row[0]:<20}{row[1]!s:>12}{row[2]!s:>14}")
        print(f"ratio (peer_s / ours_s): {result['ratio']}  CPU seconds ours {result['ours_cpu_s']} / peer "
              f"{result['peer_cpu_s']}  kept_agreement: {result['kept_agreement']}  "
              f"peak RSS MB ours {result['ours_peak_rss_mb']} / peer {result['peer_peak_rss_mb']}", flush=True)
        print(json.dumps(result))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
