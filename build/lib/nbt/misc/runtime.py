"""Where and how tensors run: the device (and the DDP rank) of a process, seeding, mixed precision."""
from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch
import torch.distributed as dist


def setup_runtime(opt) -> tuple[torch.device, int, int]:
    """(device, rank, world size): the GPU of this process's rank when `opt.cuda` and one exists,
    else the CPU; starts the process group under torchrun; seeds everything."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = opt.cuda and torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if opt.mGPUs and world == 1 and use_cuda and torch.cuda.device_count() > 1:
        print(f"note: --mGPUs True: {torch.cuda.device_count()} GPUs visible, this process uses one; "
              f"start with torchrun --nproc_per_node {torch.cuda.device_count()} main.py ... to use all",
              file=sys.stderr)
    seed_everything(opt.seed)
    return device, rank, world


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_device(batch: dict, device) -> dict:
    """Every tensor of a collated batch on `device` (other values as they are)."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def autocast(device, amp: str):
    """bf16 / fp16 autocast on a GPU; a no-op context on the CPU (or with amp 'none')."""
    device = torch.device(device)
    if device.type == "cuda" and amp in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
    return torch.autocast("cpu", enabled=False)
