"""Training: overfitting a tiny NBT, bit-identical resume after SIGKILL, DDP gradient equivalence."""
import os
import signal
import subprocess
import sys
import time

import torch

from conftest import ROOT, world_options
from nbt.misc.checkpoint import load_checkpoint
from nbt.misc.config import Options


def cli(opt: Options, **extra) -> list[str]:
    values = {**opt.to_dict(), **extra}
    args = []
    for k, v in values.items():
        if k == "path_opt":
            continue
        if isinstance(v, list):
            v = ",".join(v)
        elif isinstance(v, dict):
            import json
            v = json.dumps(v)
        args += [f"--{k}", str(v)]
    return args


def run_main(args, env=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_overfit_twenty_images(world_dir):
    """A tiny NBT learns 20 training images by heart: greedy decoding gives back their captions,
    with the visual words grounded in the right boxes."""
    from nbt.misc.dataset import CaptionDataset, DataBundle, collate
    from nbt.misc.losses import combine
    from nbt.misc.inference import Decoding, decode_batch, inference_mode
    from nbt.misc.trainer import batch_counts, evaluate
    from nbt.misc.builders import build_model, build_optimizer
    opt = world_options(world_dir, seq_per_img=1, rnn_size=128, input_encoding_size=64, att_hid_size=64,
                        att_feat_size=64, learning_rate=3e-3, eval_max_images=20,
                        region_grouping=True)
    bundle = DataBundle.load(opt)
    rows = bundle.rows("train")[:20]
    for r in rows:                                   # one caption per image: one right answer
        bundle.captions[r] = bundle.captions[r][:1]
    ds = CaptionDataset(bundle, "train", train=False, max_images=20)
    batch = collate([ds[(i, 0)] for i in range(20)])
    model = build_model(opt, bundle, torch.device("cpu")).train()
    optimizer = build_optimizer(opt, model)
    counts = batch_counts(batch, opt.seq_length)
    decoding = Decoding.from_options(opt, [])
    curve, exact = [], 0
    for step in range(300):                          # until it has learned them (300 steps at most)
        optimizer.zero_grad()
        loss = combine(model(batch), (1, 1, 1, 1), *counts)
        loss["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
        optimizer.step()
        curve.append(float(loss["loss"].detach()))
        if curve[-1] < 0.05 * curve[0] and step % 10 == 9:       # then read its greedy captions every 10 steps
            with inference_mode(model):
                said = decode_batch(model, batch, decoding, bundle.vocab, device=torch.device("cpu"))
            exact = sum(c.text in result_refs(bundle, i) for c, i in zip(said, batch["image_ids"]))
            if exact >= 18:
                break
    print(f"\noverfit loss curve (every 30 steps): {[round(l, 3) for l in curve[::30]]} -> {curve[-1]:.4f} "
          f"after {len(curve)} steps")
    assert curve[-1] < 0.05 * curve[0]
    result = evaluate(model, bundle, opt, torch.device("cpu"), "train", meteor=False, max_images=20, progress=False)
    exact = sum(p["caption"] in result_refs(bundle, p["image_id"]) for p in result["predictions"])
    print(f"overfit: {exact}/20 greedy captions equal the training caption; grounding {result['grounding']}")
    for p in result["predictions"]:
        if p["caption"] not in result_refs(bundle, p["image_id"]):
            print("  ", p["tagged"], "| reference:", result_refs(bundle, p["image_id"]))
    assert exact >= 18
    g = result["grounding"]
    assert g["grounding_accuracy"] >= 0.9 and g["fine_grained_accuracy"] >= 0.9 and g["plural_accuracy"] >= 0.9


def result_refs(bundle, image_id):
    row = next(i for i, im in enumerate(bundle.dic["images"]) if im["id"] == image_id)
    return {" ".join(c) for c in bundle.captions[row]}


def resumable_options(world_dir, **kw):
    """The runs that are interrupted and resumed, and the one uninterrupted run they are compared
    with (conftest's reference_run): 2 epochs of 64 images, 16 iterations, a checkpoint every 4,
    a progress line every iteration."""
    return world_options(world_dir, max_epochs=2, eval_split="", num_workers=1, disp_interval=1,
                         train_max_images=64, save_every_iters=4, **kw)


def assert_same_run(reference, resumed, *, rng: bool = True):
    a, b = load_checkpoint(reference / "model.pth"), load_checkpoint(resumed / "model.pth")
    assert a["iteration"] == b["iteration"] == 16
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    if rng:
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_sigkill_and_resume_is_bit_identical(world_dir, reference_run):
    base = resumable_options(world_dir)
    killed = run_main(cli(base, id="killed"))
    ckpt = world_dir / "save" / "killed" / "model.pth"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    state = load_checkpoint(ckpt)
    assert state["epoch"] < 2, "the run finished before it could be killed"
    print(f"\nkilled at epoch {state['epoch']} batch {state['batch_in_epoch']} iteration {state['iteration']}")
    resumed = run_main(cli(base, id="killed", start_from=str(ckpt)))
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert_same_run(reference_run, world_dir / "save" / "killed")


def test_mcan_style_resume_by_id_and_epoch(world_dir):
    opt = world_options(world_dir, max_epochs=1, id="mcan", eval_split="", train_max_images=16)
    p = run_main(cli(opt))
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    assert (world_dir / "save" / "mcan" / "epoch_0.pth").is_file()          # the log's "epoch 0"
    assert (world_dir / "save" / "mcan" / "config.yml").is_file()
    p = run_main(cli(opt, max_epochs=2, resume_epoch=0))
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    assert load_checkpoint(world_dir / "save" / "mcan" / "model.pth")["epoch"] == 2


def _ddp_worker(rank, world, root, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from pathlib import Path
    grads = _grads(ddp_options(Path(root)), rank, world)
    queue.put((rank, {n: g.numpy() for n, g in grads.items()}))      # by value, not shared memory
    torch.distributed.destroy_process_group()


def _grads(opt, rank, world):
    from nbt.misc.dataset import CaptionDataset, DataBundle, collate
    from nbt.misc.losses import combine
    from nbt.misc.trainer import batch_counts
    from nbt.misc.builders import build_model
    bundle = DataBundle.load(opt)
    ds = CaptionDataset(bundle, "train", train=True)
    items = [ds[(i, 0)] for i in range(8)][rank::world]
    batch = collate(items)
    model = build_model(opt, bundle, torch.device("cpu"))
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    counts = torch.tensor(batch_counts(batch, opt.seq_length))
    if world > 1:
        torch.distributed.all_reduce(counts)
    sums = model(batch)
    loss = combine(sums, (1, 1, 1), float(counts[0]), float(counts[1]))
    (loss["loss"] * world).backward()
    raw = model.module if world > 1 else model
    return {n: p.grad.clone() for n, p in raw.named_parameters() if p.grad is not None}


def ddp_options(root):
    """A frozen ResNet-18 (FrozenBatchNorm): batch statistics would differ per shard with the
    world's trainable BatchNorm CNN (on GPUs DDP converts it to SyncBatchNorm)."""
    return world_options(root, cnn_backend="res18", finetune_cnn=False, att_feat_size=512)


def test_ddp_two_processes_equal_one_process(world_dir):
    import socket

    import torch.multiprocessing as mp
    single = _grads(ddp_options(world_dir), 0, 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, str(world_dir), port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    for name, g in single.items():
        for r in (0, 1):
            assert torch.allclose(torch.from_numpy(results[r][name]), g, atol=1e-6, rtol=1e-4), name
