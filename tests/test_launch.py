"""The single-node launcher: workers form a gloo group through a store served on loopback only, nothing
listens on another interface, and one failing worker stops the rest with its exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

WORKER = '''
import os, sys, time
import torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([dist.get_rank() + 1.0])
dist.all_reduce(t)
os.write(1, f"sum {int(t.item())}\\n".encode())  # one write: the two workers' lines never interleave
if dist.get_rank() == 1 and sys.argv[1] == "fail":
    sys.exit(3)
time.sleep(float(sys.argv[2]))
os.write(1, b"slept\\n")
dist.destroy_process_group()
'''


def listening() -> set[str]:
    """Local addresses of listening TCP sockets (IPv4 and IPv6), as /proc/net/tcp* shows them."""
    found = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                found.add(local)
    return found


def loopback(addr: str) -> bool:
    host = addr.split(":")[0]
    return host.endswith("0100007F") or host == "00000000000000000000000001000000"  # 127.0.0.1, ::1


def launch(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    (tmp_path / "worker.py").write_text(WORKER)
    before, seen, done = listening(), set(), threading.Event()

    def watch():
        while not done.is_set():
            seen.update(listening())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    try:
        proc = subprocess.run([sys.executable, "-m", "llmcore.train.launch", "--nproc=2", "worker", *args],
                              env=env, capture_output=True, text=True, timeout=300)
    finally:
        done.set()
        watcher.join()
    return proc, seen - before


def test_workers_meet_on_loopback_only(tmp_path):
    proc, opened = launch(tmp_path, "ok", "3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("sum 3\n") == 2 and proc.stdout.count("slept") == 2  # ranks 0 and 1 reduced 1 + 2
    assert opened and all(loopback(addr) for addr in opened), opened  # the store and gloo's sockets


def test_a_failing_worker_stops_the_others(tmp_path):
    proc, _ = launch(tmp_path, "fail", "600")  # rank 0 sleeping it out would exceed launch()'s timeout
    # rank 1's exit code, or rank 0's own when it died first of its lost peer
    assert proc.returncode != 0 and "slept" not in proc.stdout
