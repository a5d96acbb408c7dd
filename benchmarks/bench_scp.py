"""The peer comparison: this project's decoders against self-critical.pytorch's UpDown, in one process.

    python benchmarks/bench_scp.py --scp DIR [--rounds 3] [--images 50] [--train_images 10]

DIR is a checkout of https://github.com/ruotianluo/self-critical.pytorch (measured at commit
4c48a33), fetched by the user; it is put on sys.path by this script only (the project never
imports it). It needs the package `six`, which the project does not (`pip install six`).

Three sides, at COCO dimensions (benchmarks/coco_dims.py: vocabulary 9,500, rnn 1,024, attention
hidden 512, word encoding 512, 100 proposals + a 16 x 16 grid of ResNet-101 conv cells, 2,048-d):
  scp     SCP's UpDownModel (captioning/models/AttModel.py) with its LanguageModelCriterion
  plain   att_model updown_plain (the top-down decoder without pointer, sentinel, slot heads)
  nbt     att_model topdown (NBT)
fed the same features: each image's 100 proposals RoIAlign-pooled once (pooling/roi_align.py,
not timed) and its 256 grid cells, i.e. 356 vectors of 2,048 (SCP: att_feats (B, 356, 2048), fc
the grid's mean; here: the conv map and the pooled proposals as a cached batch).

Three tasks, each timed in process CPU time with 1 torch thread, the three sides interleaved
(scp, plain, nbt, scp, ...) for --rounds rounds after one warm-up each, so a loaded machine slows
all sides alike; each side's median, its ratio to SCP's median, and the median over rounds of
the ratio within a round (a drifting load moves that one least):
  train   one XE training step (forward, loss, backward, Adam step), train_images x 5 captions
  greedy  decoding `images` images, 16 tokens each (this project: beam_search with beam 1, as
          evaluation runs it; SCP: _sample, sample_method greedy), features encoded inside the timing
  beam3   the same with beam 3 (SCP: its batched CaptionModel.beam_search)
With random weights a caption rarely ends, and each model would end at different steps: the EOS
logit's bias is set to -100 on every side, so every caption runs all 16 tokens (the count is
printed).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coco_dims import COCO, coco_batch, coco_model, coco_options  # noqa: E402  (binds nbt to this checkout)

SIDES = ("scp", "plain", "nbt")
TASKS = ("train", "greedy", "beam3")
UNEQUAL = [
    "inputs: SCP attends over the 356 vectors at once; here the grid (256) and the regions (100) have "
    "separate attentions (summed), and a region vector also embeds its box and class",
    "losses: SCP's LanguageModelCriterion (mean over tokens); here the project's XE sums "
    "(NBT adds its pointer, plural and fine-grained terms)",
    "SCP's attention LSTM reads [h_lang(t-1); fc; word], this one [fc; word] (as NBT's)",
    "NBT also runs its sentinel, pointer and slot heads (the plain top-down has none)",
    "greedy: SCP runs its own greedy loop (_sample); here evaluation's beam_search with beam 1",
]


def load_scp(scp_dir: str):
    """SCP's UpDownModel and LanguageModelCriterion classes, from the user's checkout."""
    root = Path(scp_dir).resolve()
    if not (root / "captioning" / "models" / "AttModel.py").is_file():
        sys.exit(f"error: --scp {scp_dir}: not a self-critical.pytorch checkout (no captioning/models/AttModel.py)")
    sys.path.insert(0, str(root))
    try:
        with contextlib.redirect_stdout(io.StringIO()):      # its rewards module prints about cider
            from captioning.models.AttModel import UpDownModel
            from captioning.modules.losses import LanguageModelCriterion
    except ModuleNotFoundError as e:
        sys.exit(f"error: self-critical.pytorch at {root} needs the package '{e.name}' (pip install {e.name})")
    return UpDownModel, LanguageModelCriterion


def scp_options(vocab: int, seq_length: int = 16):
    """SCP's options at the same sizes: its vocab_size counts words without EOS (+1 logit)."""
    return types.SimpleNamespace(
        vocab_size=vocab - 1, input_encoding_size=512, rnn_size=1024, num_layers=2, drop_prob_lm=0.5,
        max_length=seq_length, seq_length=seq_length, fc_feat_size=COCO["feat"], att_feat_size=COCO["feat"],
        att_hid_size=512, use_bn=0, logit_layers=1, vocab={str(i): f"w{i}" for i in range(1, vocab)})


def pooled_inputs(batch: dict) -> dict:
    """The batch with its proposals RoIAlign-pooled once, and SCP's view of the same vectors."""
    from nbt.pooling.roi_align import pool_regions
    conv = batch["images"]                                                  # (B, 2048, 16, 16)
    with torch.no_grad():
        pooled = pool_regions(conv, batch["proposals"][..., :4], COCO["stride"])   # (B, 100, 2048)
    grid = conv.flatten(2).transpose(1, 2)                                  # (B, 256, 2048)
    return {**batch, "region_feats": pooled,
            "scp_fc": grid.mean(1), "scp_att": torch.cat([pooled, grid], 1).contiguous()}   # (B, 2048), (B, 356, 2048)


def suppress_eos(logit: torch.nn.Linear) -> None:
    with torch.no_grad():
        logit.bias[0] = -100.0


def scp_side(UpDownModel, Criterion, images: int, train_images: int, lr: float):
    torch.manual_seed(0)
    model = UpDownModel(scp_options(COCO["vocab"]))
    suppress_eos(model.logit)
    crit = Criterion()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    tb = pooled_inputs(coco_batch(train_images, visual=False))
    words = tb["words"]                                                    # (B, S, 16)
    labels = torch.nn.functional.pad(words, (1, 1))                        # (B, S, 18): BOS ... EOS
    n = (words > 0).sum(-1, keepdim=True)                                  # (B, S, 1)
    masks = (torch.arange(labels.shape[-1]) < n + 2).float()               # BOS, words, EOS

    def train():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        out = model(tb["scp_fc"], tb["scp_att"], labels[..., :-1], None)
        crit(out, labels[..., 1:], masks[..., 1:]).backward()
        optimizer.step()

    db = pooled_inputs(coco_batch(images, visual=False, seed=1))

    def decode(beam: int):
        def run():
            model.eval()
            with torch.no_grad():
                seq, _ = model(db["scp_fc"], db["scp_att"], None,
                               opt={"sample_method": "greedy", "beam_size": beam, "sample_n": 1}, mode="sample")
            return float((seq > 0).sum(1).float().mean())
        return run
    return {"train": train, "greedy": decode(1), "beam3": decode(3)}


def our_side(att_model: str, images: int, train_images: int):
    from bench_train_step import step_fn
    from nbt.misc.decoding import beam_search
    opt = coco_options(att_model=att_model, batch_size=train_images)
    model = coco_model(opt)
    suppress_eos(model.decoder.logit)
    visual = att_model == "topdown"
    train = step_fn(opt, model, pooled_inputs(coco_batch(train_images, visual=visual)), torch.device("cpu"))
    db = pooled_inputs(coco_batch(images, visual=visual, seed=1))

    def decode(beam: int):
        def run():
            model.eval()
            with torch.no_grad():
                out = beam_search(model.decoder, model.encode(db), beam_size=beam, max_len=16)
            return sum(len(d.tokens) for d in out) / len(out)
        return run
    return {"train": train, "greedy": decode(1), "beam3": decode(3)}, opt.learning_rate


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scp", required=True, help="a checkout of self-critical.pytorch (ruotianluo)")
    p.add_argument("--rounds", type=int, default=3, help="timed runs of each side and task (interleaved)")
    p.add_argument("--images", type=int, default=50, help="images decoded per run")
    p.add_argument("--train_images", type=int, default=10, help="images (x 5 captions) per training step")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    args = p.parse_args()
    torch.set_num_threads(1)
    UpDownModel, Criterion = load_scp(args.scp)
    plain, lr = our_side("updown_plain", args.images, args.train_images)
    nbt, _ = our_side("topdown", args.images, args.train_images)
    fns = {"scp": scp_side(UpDownModel, Criterion, args.images, args.train_images, lr), "plain": plain, "nbt": nbt}
    print(f"torch {torch.__version__}, 1 thread, process CPU time, {args.rounds} rounds interleaved; "
          f"SCP from {Path(args.scp).resolve()}", flush=True)
    for task in args.tasks:
        tokens = {side: fns[side][task]() for side in SIDES}              # warm-up, and the caption lengths
        times = {side: [] for side in SIDES}
        for _ in range(args.rounds):
            for side in SIDES:
                t = time.process_time()
                fns[side][task]()
                times[side].append(time.process_time() - t)
        med = {side: statistics.median(times[side]) * 1000 for side in SIDES}
        paired = {side: statistics.median(a / b for a, b in zip(times[side], times["scp"])) for side in SIDES}
        what = (f"{args.train_images} images x 5 captions" if task == "train"
                else f"{args.images} images, tokens per caption " + " / ".join(f"{tokens[s]:.1f}" for s in SIDES))
        print(f"{task:<7} ({what}): " + ", ".join(
            f"{side} {med[side]:,.0f} ms" + ("" if side == "scp" else
                                            f" ({med[side] / med['scp']:.2f}x; rounds {paired[side]:.2f}x)")
            for side in SIDES), flush=True)
    print("not equal between the sides:\n" + "\n".join(f"  - {u}" for u in UNEQUAL))


if __name__ == "__main__":
    main()
