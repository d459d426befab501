"""Several processes: the torchrun command, process-group setup in each worker, DDP / FSDP2 wrapping.

One process needs none of it: `World()` is a world of one and every helper is then a no-op.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from llmcore.config import DistributedConfig
from llmcore.model import Block


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launch_command(cfg: DistributedConfig, module: str, *args: str, run_id: str = "llmpipe") -> list[str]:
    """The command that starts this node's processes, each running `python -m module *args`.
    One node: llmcore.train.launch, everything on loopback; several: torchrun, every node running the same
    command with its own node_rank, meeting at rdzv_endpoint (the run directory must be on storage all
    nodes share; torchrun's store then listens on every interface, as multi-node needs)."""
    if cfg.nnodes == 1:
        return [sys.executable, "-m", "llmcore.train.launch", f"--nproc={cfg.nproc_per_node}", module, *args]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={cfg.nproc_per_node}",
            f"--nnodes={cfg.nnodes}", f"--node-rank={cfg.node_rank}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={cfg.rdzv_endpoint}", f"--rdzv-id={run_id}", "-m", module, *args]


def init(backend: str = "auto", device_type: str | None = None) -> World:
    """The process group of a torchrun worker (from its environment), or a world of one without torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    cuda = (device_type or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    world = World(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), size)
    if cuda:
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(("nccl" if cuda else "gloo") if backend == "auto" else backend)
    return world


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, strategy: str, device: torch.device, world: World) -> nn.Module:
    """DDP (a replica per process, gradients all-reduced), or FSDP2: parameters, gradients and optimizer
    state sharded per layer (`fully_shard` changes the model in place: saving needs full state dicts)."""
    if world.size == 1:
        return model
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (world.size,))
        for block in (m for m in model.modules() if isinstance(m, Block)):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    # No buffer broadcast: the model's buffers are constants (sinusoids, rotary frequencies), and evaluation
    # calls the bare module, which must not wait on collectives.
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
    )


def all_reduce(t: torch.Tensor, op: str = "avg") -> torch.Tensor:
    """In place over all ranks: avg, sum or min. gloo has no AVG: sum, then divide."""
    if not dist.is_initialized():
        return t
    if op == "avg":
        dist.all_reduce(t, dist.ReduceOp.SUM)
        return t.div_(dist.get_world_size())
    dist.all_reduce(t, {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op])
    return t


def from_main(value):
    """Rank 0's `value` on every rank (a choice that every process must share)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
