"""GPU checks (run where a CUDA device exists): AMP training steps in bf16 and fp16 (with the
GradScaler) through the real trainer, finite losses and their step times, and the decoding /
training-step benchmarks on the GPU.

    python benchmarks/gpu_check.py
"""
from __future__ import annotations

import subprocess
import sys
import time

import torch

from common import ROOT, world_options


def amp_run(amp: str) -> dict:
    from misc.session import train
    opt = world_options(cuda=True, amp=amp, max_iters=40, val_every_epoch=0, eval_split="", num_workers=4,
                        id=f"gpu_{amp}", checkpoint_path=str(ROOT / "save" / "gpu_check"))
    t = time.time()
    run = train(opt)
    hist = run["state"]
    ckpt = torch.load(ROOT / "save" / "gpu_check" / f"gpu_{amp}" / "model.pth", weights_only=True)
    finite = all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    return {"amp": amp, "iterations": hist["iteration"], "seconds": round(time.time() - t, 1), "finite": finite}


def main():
    assert torch.cuda.is_available(), "no CUDA device"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    for amp in ("bf16", "fp16", "none"):
        print(amp_run(amp), flush=True)
    for script in ("bench_train_step.py", "bench_decoding.py"):
        print(f"--- {script} --device cuda", flush=True)
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--device", "cuda"], check=True)


if __name__ == "__main__":
    main()
