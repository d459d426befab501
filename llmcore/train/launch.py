"""One node's training processes without torchrun, everything bound to loopback.

torchrun's agent serves its rendezvous store on every interface (`*:PORT`, unauthenticated), though on a
single node all processes are local. Here the launcher serves the store on a socket it bound to 127.0.0.1
(TCPStore takes a listening socket), and the workers join it as clients (TORCHELASTIC_USE_AGENT_STORE, as
under torchrun), with gloo's own connections on loopback too. One worker failing stops the others.

    python -m llmcore.train.launch --nproc 2 MODULE ARGS...   # each worker runs `python -m MODULE ARGS...`
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta

from torch.distributed import TCPStore

LOOPBACK = "127.0.0.1"


def worker_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    return {
        **os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size), "GROUP_RANK": "0", "MASTER_ADDR": LOOPBACK, "MASTER_PORT": str(port),
        "TORCHELASTIC_USE_AGENT_STORE": "True", "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),  # torchrun's default: no oversubscription
    }


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the launcher dies, so a killed launcher leaves no orphans."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def launch(nproc: int, module: str, args: list[str]) -> int:
    """Run the workers to the end; the first non-zero exit code stops the rest and is returned."""
    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]
    _store = TCPStore(LOOPBACK, port, nproc, True, timedelta(minutes=30), wait_for_workers=False,  # served while workers run
                      master_listen_fd=listener.fileno())
    workers = [subprocess.Popen([sys.executable, "-m", module, *args], env=worker_env(rank, nproc, port),
                                preexec_fn=_die_with_parent) for rank in range(nproc)]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # the finally below stops the workers
    try:
        while True:
            codes = [w.poll() for w in workers]
            failed = next((c for c in codes if c not in (None, 0)), None)
            if failed is not None:
                return failed
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.2)
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
        for w in workers:
            w.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, required=True)
    parser.add_argument("module")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args()
    sys.exit(launch(ns.nproc, ns.module, ns.args))


if __name__ == "__main__":
    main()
