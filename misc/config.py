"""Options: YAML files in cfgs/ plus command-line flags.

Every option of the original `opts.py` keeps its name and default unless its help says "changed";
options the original had but never used are accepted with a one-line notice (`DEAD_OPTIONS`), so
scripts written for it keep running. Precedence, unlike the original (where YAML beat the command
line):

    defaults  <  --path_opt YAML  <  command line

The data options a config does not give default to the original's places under `data_path`
(`DATA_LAYOUT`: coco -> data/coco/cap_coco.json, data/coco/annotations/instances_{train,val}2014.json,
data/coco/coco_class_name.txt ...), and `instances_json` first to the files prepro recorded in the
dic. A config that sets `checkpoint_path` but no `id` (the original's files: its checkpoint_path
was the run folder) names the run folder itself.

The command line accepts an unambiguous prefix of an option, as the original's argparse did
(`--max_epoch 30` is `--max_epochs 30`). An unknown key, an ambiguous prefix, a value outside an
option's choices or range is a one-line `ConfigError` naming the nearest valid names, raised before
any data is read; booleans parse `True/False/1/0/yes/no`, so `--cuda False` really means False.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml


class ConfigError(ValueError):
    """Bad configuration; its message is one line naming the key or file."""


def _o(default, help: str, *, choices: tuple = (), lo=None, hi=None, lo_open: bool = False,
       hi_open: bool = False):
    """An option: its default, a one-line help, and optionally its allowed values or range."""
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


SPLITS = ("train", "val", "test")
DATASETS = ("world", "coco", "flickr30k")
POINTER_DECODERS = ("topdown", "att2in2")      # decoders with visual slots (pointer, plural and fine-grained heads)
CNN_BACKENDS = ("tiny", "res18", "res50", "res101", "vgg16", "inception_v3", "densenet121", "densenet161",
                "res50_caffe", "res101_caffe", "res152_caffe")


@dataclass
class Options:
    # --- data and I/O -----------------------------------------------------------------
    path_opt: str = _o("", "YAML config file read before the command line (default: cfgs/world.yml)")
    dataset: str = _o("world", "data set kind; 'world' is generated on first use into data/world; the data "
                      "options not given default to its places under data_path", choices=DATASETS)
    data_path: str = _o("data", "root of the data sets: input_json, input_dic, image_path, proposal_h5, "
                        "instances_json, class_name_file and cached_tokens default to the original's places "
                        "under it, e.g. <data_path>/coco/cap_coco.json (changed: the original's default was '')")
    input_json: str = _o("data/world/cap_world.json", "captions file cap_*.json (one caption list per image)")
    input_dic: str = _o("data/world/dic_world.json", "dic_*.json: vocabulary, visual words, images and splits")
    image_path: str = _o("data/world/images", "folder the dic's image file_path entries are relative to")
    proposal_h5: str = _o("data/world/world_detection.h5", "detection h5 (dets_labels N x 100 x 6, dets_num, nms_num)")
    instances_json: list = _o(["data/world/annotations/instances_world.json"],
                              "COCO-style instance files giving the GT boxes (comma-separated list); default: "
                              "the files prepro recorded in the dic, else the data set's place under data_path")
    class_name_file: str = _o("data/world/world_class_name.txt",
                              "class-name file: one line per class, comma-separated fine-grained words")
    language: str = _o("", "caption language of the data: en, zh; '' = the dic's own (its 'language' key, "
                       "English when absent); given, it must match the dic's", choices=("", "en", "zh"))
    cnn_backend: str = _o("res101", "CNN that makes the conv map (tiny = small CNN trained from scratch; "
                          "*_caffe = the original's ResNet, width att_feat_size)", choices=CNN_BACKENDS)
    cnn_weights: str = _o("", "local .pth of the CNN's torchvision weights; '' = torchvision's download "
                          "(or random for tiny)")
    pretrained_cnn: bool = _o(True, "load ImageNet weights for the CNN (False: random init, for tests)")
    decode_noc: bool = _o(False, "novel-object decoding: held-out classes borrow embeddings "
                          "(noc_word_map) and get NOC F1 (changed: the original's default was True)")
    noc_word_map: dict = _o({}, "novel class -> seen class whose embeddings it borrows, as JSON or YAML")
    dcc_annotations: str = _o("", "NOC F1: folder of DCC's captions_split_set_<object>_val_<split>_"
                              "{novel,train}2014.json (the original's <data_path>/coco_noc/annotations); "
                              "'' = DCC's novel / train images derived from the split's references")
    att_model: str = _o("topdown", "decoder: topdown = NBT; att2in2 = NBT with the original's one-LSTM att2in2 "
                        "core; updown_plain, showtell, aoanet = baselines",
                        choices=("topdown", "att2in2", "updown_plain", "showtell", "aoanet"))
    num_workers: int = _o(2, "DataLoader worker processes (changed: the original used 10)", lo=0)
    cuda: bool = _o(True, "use the GPU when one exists (the CPU otherwise)")
    mGPUs: bool = _o(False, "several GPUs: runs use DistributedDataParallel, started with "
                     "torchrun --nproc_per_node N main.py ...")
    cached_tokens: str = _o("data/world/world-train-df.json",
                            "CIDEr-D document frequencies of the training references (SCST reward): the JSON of "
                            "prepro_dic_coco.py --output_df, or the original's prepro_ngrams.py pickle, by path or "
                            "by its name as the original gave it (coco-train-idxs = data/coco-train-idxs.p)")
    cached_features: str = _o("", "folder of precomputed CNN features (prepro/prepro_features.py); "
                              "'' = run the CNN")
    seed: int = _o(123, "random seed of the run (initialisation, shuffling, crops, sampling)")
    # --- model size -------------------------------------------------------------------
    rnn_size: int = _o(1024, "hidden size of both LSTMs and of the region / grid vectors", lo=1)
    input_encoding_size: int = _o(512, "size of the word (and pointed-class) embeddings fed to the attention LSTM", lo=1)
    att_hid_size: int = _o(512, "hidden size of the additive attentions and the pointer", lo=1)
    att_feat_size: int = _o(2048, "conv feature channels (the tiny CNN's width; others read it from the CNN)",
                            lo=1)
    image_size: int = _o(576, "training images are resized to this square size (pixels), then cropped", lo=1)
    image_crop_size: int = _o(512, "random training crop and evaluation size (pixels)", lo=1)
    max_proposal: int = _o(100, "proposals kept per image (highest-scored first)", lo=1)
    grid_size: int = _o(0, "average-pool the attention grid to this many cells per side (0 = as is)", lo=0)
    class_emb_size: int = _o(300, "class embedding size (300 with GloVe)", lo=1)
    loc_emb_size: int = _o(300, "box location embedding size", lo=1)
    aoa_heads: int = _o(8, "AoANet baseline: attention heads", lo=1)
    aoa_refine_layers: int = _o(6, "AoANet baseline: refiner layers", lo=0)
    glove_path: str = _o("", "GloVe txt file (word v1 ... v300) for frozen class embeddings; '' = learned")
    roi_align: str = _o("torchvision", "RoIAlign sampling: torchvision's bin centres inside the box, or the "
                        "original's RoIAlignAvg(1, 1) (box start and end + 1 cells, extrapolated at the edges)",
                        choices=("torchvision", "original"))
    sentinel_cell: str = _o("current", "NBT's visual sentinel reads the language LSTM's current cell state "
                            "(adaptive attention) or the previous one (the original)", choices=("current", "previous"))
    sentinel_key: str = _o("shared", "pointer key of the sentinel: the pointer's key layer of the regions (shared) "
                           "or a layer of its own (the original)", choices=("shared", "own"))
    extra_word_logit: bool = _o(False, "one word logit more than words, never emitted but in the softmax "
                                "(the original's vocab_size + 1 outputs)")
    fine_head: str = _o("linear", "fine-grained slot head: a logit per word (linear), or a 300-d output scored "
                        "against fixed word vectors (glove: the original's)", choices=("linear", "glove"))
    # --- optimisation ------------------------------------------------------------------
    max_epochs: int = _o(30, "epochs to train (a resumed run continues up to this total)", lo=1)
    batch_size: int = _o(10, "images per step (each with seq_per_img captions)", lo=1)
    grad_accum: int = _o(1, "accumulate gradients over this many batches per optimiser step", lo=1)
    grad_clip: float = _o(0.1, "clip the gradient norm at this value", lo=0, lo_open=True)
    drop_prob_lm: float = _o(0.5, "dropout probability in the decoder", lo=0, hi=1, hi_open=True)
    self_critical: bool = _o(False, "train with SCST from the first epoch")
    self_critical_after: int = _o(-1, "epoch from which SCST replaces XE (-1 = never)", lo=-1)
    train_sample_n: int = _o(5, "SCST: sampled captions per image", lo=1)
    scst_baseline: str = _o("greedy", "SCST baseline: greedy caption, or mean reward of the other samples",
                            choices=("greedy", "mean"))
    scst_learning_rate: float = _o(2e-5, "SCST learning rate (constant; AoANet's recipe)", lo=0, lo_open=True)
    seq_per_img: int = _o(5, "captions per image per step", lo=1)
    seq_length: int = _o(20, "maximum caption length in tokens (training and decoding)", lo=1)
    beam_size: int = _o(1, "beam size for evaluation (1 = greedy)", lo=1, hi=100)
    length_penalty: float = _o(0.0, "final beam score / length ** alpha (0 = none)", lo=0)
    beam_first_finished: bool = _o(False, "beam search returns the first caption to end, not the best, as the "
                                   "original's did (it kept a finished beam's score as a view, then overwrote it "
                                   "with -1000); not with cbs")
    lm_loss_weight: float = _o(1.0, "weight of the word + pointer loss", lo=0)
    bn_loss_weight: float = _o(1.0, "weight of the plural (singular / plural) slot loss", lo=0)
    fg_loss_weight: float = _o(1.0, "weight of the fine-grained word slot loss", lo=0)
    region_grouping: bool = _o(False, "NBT: learned group sizes on region vectors (misc/grouping.py)")
    group_loss_weight: float = _o(1.0, "weight of the region-grouping pair loss", lo=0)
    amp: str = _o("bf16", "mixed precision on the GPU (ignored on the CPU)", choices=("none", "bf16", "fp16"))
    # --- scheduled sampling --------------------------------------------------------------
    scheduled_sampling_start: int = _o(-1, "epoch from which inputs are sometimes the model's own "
                                       "predictions (-1 = never)", lo=-1)
    scheduled_sampling_increase_every: int = _o(5, "epochs between increases of that probability", lo=1)
    scheduled_sampling_increase_prob: float = _o(0.05, "probability added at each increase", lo=0, hi=1)
    scheduled_sampling_max_prob: float = _o(0.25, "largest scheduled-sampling probability", lo=0, hi=1)
    # --- language-model optimiser ------------------------------------------------------
    optim: str = _o("adam", "optimiser of the decoder (sgd uses momentum 0.9)", choices=("adam", "adamax", "sgd"))
    learning_rate: float = _o(5e-4, "learning rate of the decoder", lo=0, lo_open=True)
    learning_rate_decay_start: int = _o(1, "epoch from which the learning rate decays (-1 = never)", lo=-1)
    learning_rate_decay_every: int = _o(3, "epochs between learning-rate decays", lo=1)
    learning_rate_decay_rate: float = _o(0.8, "factor applied at each decay", lo=0, hi=1, lo_open=True)
    optim_alpha: float = _o(0.9, "Adam beta1 (momentum) of the decoder's optimiser", lo=0, hi=1, hi_open=True)
    optim_beta: float = _o(0.999, "Adam beta2 (second-moment decay) of the decoder's optimiser", lo=0, hi=1, hi_open=True)
    weight_decay: float = _o(0.0, "weight decay of the decoder", lo=0)
    # --- CNN fine-tuning ---------------------------------------------------------------
    finetune_cnn: bool = _o(False, "train the CNN's unfrozen blocks too")
    fixed_block: int = _o(1, "with finetune_cnn, CNN blocks kept frozen: 0 = none ... 4 = all", lo=0, hi=4)
    cnn_optim_alpha: float = _o(0.8, "Adam beta1 of the fine-tuned CNN's optimiser", lo=0, hi=1, hi_open=True)
    cnn_optim_beta: float = _o(0.999, "Adam beta2 of the fine-tuned CNN's optimiser", lo=0, hi=1, hi_open=True)
    cnn_learning_rate: float = _o(1e-5, "learning rate of a fine-tuned pretrained CNN", lo=0, lo_open=True)
    cnn_weight_decay: float = _o(0.0, "weight decay of the fine-tuned CNN", lo=0)
    # --- session, checkpoints, evaluation ----------------------------------------------
    start_from: str = _o("", "resume from (or evaluate) this run folder save/<id> or .pth file; a resumed "
                         "run keeps writing there unless --id is given")
    resume_epoch: int = _o(-1, "with --id, resume from save/<id>/epoch_<n>.pth (MCAN style; -1 = off)", lo=-1)
    id: str = _o("", "run name: checkpoints go to <checkpoint_path>/<id> (default: the config file's name)")
    overwrite: bool = _o(False, "allow a new run or an evaluation to replace another run's files")
    val_split: str = _o("val", "split for per-epoch validation and best-model selection "
                        "(changed: the original selected on test)", choices=SPLITS)
    eval_split: str = _o("test", "split evaluated after training and by --inference_only ('' = none)",
                         choices=("",) + SPLITS)
    inference_only: bool = _o(False, "evaluate --start_from on --eval_split and exit")
    val_every_epoch: int = _o(1, "validate every N epochs (0 = never; changed: the original used 3)", lo=0)
    checkpoint_path: str = _o("save", "folder holding the run folders; a config or command line that sets it "
                              "(other than save) without an id names the run folder itself, as the original did")
    load_best_score: bool = _o(True, "evaluate / demo from model-best.pth (else model.pth)")
    disp_interval: int = _o(100, "print a progress line (iteration, losses, speed, time left) every N "
                            "iterations (0 = never)", lo=0)
    keep_epoch_checkpoints: int = _o(3, "epoch_<n>.pth files kept (-1 = all, 0 = none)", lo=-1)
    save_every_iters: int = _o(0, "also checkpoint mid-epoch every N iterations (0 = only at epoch ends)", lo=0)
    max_iters: int = _o(-1, "stop after N iterations (-1 = no limit; tests, benchmarks)", lo=-1)
    cbs: bool = _o(False, "constrained beam search: the caption must mention detected objects")
    cbs_tag_size: int = _o(3, "CBS: objects to mention (the search keeps 2^k states per beam)", lo=1, hi=8)
    cbs_mode: str = _o("all", "CBS: which detections become constraints: top-scored (all), one per class "
                       "(unique), held-out classes only (novel)", choices=("all", "unique", "novel"))
    cbs_score_thresh: float = _o(-1.0, "CBS unique / novel: detections scoring at least this become "
                                 "constraints; -1 = calibrated on the training images, the lowest score at "
                                 "which detections are right cbs_min_precision of the time (changed: the "
                                 "original's fixed 0.8 suits only its own detector)", lo=-1, hi=1)
    cbs_min_precision: float = _o(0.9, "CBS calibration: how often detections at the threshold and above "
                                  "must overlap a GT box of their class on the training images", lo=0, hi=1,
                                  lo_open=True)
    det_oracle: bool = _o(False, "use the GT boxes (score 1) as proposals: the paper's oracle rows")
    eval_max_images: int = _o(-1, "evaluate only the first N images of the split (-1 = all)", lo=-1)
    train_max_images: int = _o(-1, "train on the first N training images only (-1 = all)", lo=-1)
    spice: bool = _o(False, "also compute SPICE (needs its Stanford CoreNLP jars)")
    # --- grounding targets ---------------------------------------------------------------
    pos_iou_thresh: float = _o(0.5, "a proposal is a pointer positive above this IoU with a GT box of the "
                               "word's class", lo=0, hi=1)
    pos_score_thresh: float = _o(-1.0, "... and at least this detection score; -1 = calibrated on the "
                                 "training images like cbs_score_thresh, with pos_min_precision (changed: the "
                                 "original's fixed 0.5 suits only its own detector)", lo=-1, hi=1)
    pos_min_precision: float = _o(0.95, "pointer-target calibration: how often detections at the threshold and "
                                  "above must overlap a GT box of their class on the training images", lo=0, hi=1,
                                  lo_open=True)
    # --- demo ------------------------------------------------------------------------------
    demo_path: str = _o("", "demo: an image or a folder of images ('' = test images of the run's data)")
    demo_out: str = _o("visu", "demo: output folder for pictures and JSON (never the input folder)")
    demo_detections: str = _o("", "demo: detection JSON for the images (coco-mini format)")
    demo_max_images: int = _o(8, "demo: images captioned at most (0 = all)", lo=0)
    demo_min_score: float = _o(0.5, "demo picture: grey boxes for proposals scoring at least this (grounded "
                               "boxes are always drawn)", lo=0, hi=1)
    demo_max_boxes: int = _o(10, "demo picture: at most this many grey proposal boxes", lo=0)
    detector_weights: str = _o("", "torchvision Faster R-CNN v2 weights (.pth) for photos without proposals")

    # -------------------------------------------------------------------------------------
    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        from nbt.misc.io import atomic_write_text
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=True))


# Options of the original that it never used: accepted (command line or YAML) with a notice.
DEAD_OPTIONS = {
    "language_eval": "metrics are always computed",
    "losses_log_every": "TensorBoard gets every iteration; see --disp_interval for printed lines",
    "rnn_type": "the decoder's LSTMs are fixed by the paper",
    "optim_epsilon": "the original never passed it to the optimiser",
    "cnn_optim": "the CNN uses the same optimiser kind as the decoder",
    "cider_df": "the SCST document frequencies come from --cached_tokens",
    "val_images_use": "validation uses the whole split (see --eval_max_images)",
    "num_layers": "NBT's decoder always has its two LSTM layers",
    "fc_feat_size": "the feature size is read from the CNN",
}
_noticed: set[str] = set()


def notice_dead(key: str, where: str) -> None:
    if key not in _noticed:
        _noticed.add(key)
        print(f"note: {where}'{key}' has no effect here ({DEAD_OPTIONS[key]})", file=sys.stderr)


def default_of(key: str) -> Any:
    f = Options.fields()[key]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def parse_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    near = _nearest(text, ["True", "False"], cutoff=0.5)
    hint = f" (did you mean {near}?)" if near else ""
    raise ConfigError(f"option '{key}': expected True or False, got {value!r}{hint}")


def _nearest(key: str, names, cutoff: float = 0.0) -> str | None:
    match = difflib.get_close_matches(key, list(names), n=1, cutoff=cutoff)
    return match[0] if match else None


def _unknown(key: str, dashes: str = "") -> ConfigError:
    near = _nearest(key, Options.fields())
    return ConfigError(f"unknown option '{dashes}{key}' (did you mean '{dashes}{near}'?)")


def coerce(key: str, value: Any) -> Any:
    """Convert a YAML or command-line value to the declared type of `key` and check it."""
    fields = Options.fields()
    if key not in fields:
        raise _unknown(key)
    default = default_of(key)
    try:
        if isinstance(default, bool):
            out = parse_bool(value, key)
        elif isinstance(default, int):
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            out = int(number)
        elif isinstance(default, float):
            out = float(value)
        elif isinstance(default, list):
            if isinstance(value, str):
                value = json.loads(value) if value.startswith("[") else [v for v in value.split(",") if v]
            if not isinstance(value, list):
                raise ValueError
            out = list(value)
        elif isinstance(default, dict):
            if isinstance(value, str):
                value = yaml.safe_load(value) if value.strip() else {}
            if not isinstance(value, dict):
                raise ValueError
            out = dict(value)
        else:
            out = "" if value is None else str(value)
    except ConfigError:
        raise
    except (ValueError, TypeError, OverflowError, yaml.YAMLError):
        raise ConfigError(f"option '{key}': cannot read {value!r} as {type(default).__name__}") from None
    check_value(key, out)
    return out


def check_value(key: str, value: Any) -> None:
    """Choices and ranges of one option; a one-line error naming the valid values."""
    meta = Options.fields()[key].metadata
    if meta.get("choices") and value not in meta["choices"]:
        shown = ", ".join(repr(c) if c == "" else c for c in meta["choices"])
        near = _nearest(str(value), [c for c in meta["choices"] if c])
        hint = f"; did you mean '{near}'?" if near else ""
        raise ConfigError(f"option '{key}': '{value}' is not one of {shown}{hint}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"option '{key}': {value} is not a finite number")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None and hi is None or isinstance(value, bool):
        return
    too_low = lo is not None and (value <= lo if meta["lo_open"] else value < lo)
    too_high = hi is not None and (value >= hi if meta["hi_open"] else value > hi)
    if too_low or too_high:
        raise ConfigError(f"option '{key}': {value} is out of range ({_range_text(meta)})")


def _range_text(meta: dict) -> str:
    lo, hi = meta.get("lo"), meta.get("hi")
    parts = []
    if lo is not None:
        parts.append(f"{'>' if meta['lo_open'] else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if meta['hi_open'] else '<='} {hi}")
    return " and ".join(parts)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's options; the original's dead options are dropped with a notice."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else str(path)
        raise ConfigError(f"malformed YAML in {where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of option: value")
    out = {}
    for key, value in data.items():
        if key in DEAD_OPTIONS:
            notice_dead(key, f"{path}: ")
        elif key not in Options.fields():
            raise ConfigError(f"{path}: unknown option '{key}' (did you mean '{_nearest(key, Options.fields())}'?)")
        else:
            out[key] = value
    return out


def resolve_key(token: str, keys=None) -> str:
    """A command-line name -> the option it names: exact, or an unambiguous prefix (as argparse).
    May return a dead option of the original. `keys` restricts the valid names (the demo's)."""
    keys = list(Options.fields() if keys is None else keys)
    if token in keys or token in DEAD_OPTIONS:
        return token
    hits = [k for k in keys + list(DEAD_OPTIONS) if k.startswith(token)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ConfigError(f"ambiguous option '--{token}': could be " + ", ".join(f"--{h}" for h in hits))
    raise ConfigError(f"unknown option '--{token}' (did you mean '--{_nearest(token, keys)}'?)")


def parse_cli(argv: list[str], keys=None) -> dict[str, Any]:
    """`--key value` or `--key=value` pairs (prefixes allowed); a bare `--flag` means True for
    booleans. Dead options of the original are dropped with a notice."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {token!r}: options look like --key value")
        name, eq, value = token[2:].partition("=")
        key = resolve_key(name.replace("-", "_"), keys)
        dead = key in DEAD_OPTIONS
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is None or nxt.startswith("--"):
                if not dead and not isinstance(default_of(key), bool):
                    raise ConfigError(f"option '--{key}' needs a value")
                value = "True"
            else:
                value = nxt
                i += 1
        if dead:
            notice_dead(key, "--")
        else:
            out[key] = value
        i += 1
    return out


class ParsedOptions(NamedTuple):
    opt: Options
    cli_keys: frozenset          # the options the command line gave (they win over a checkpoint's too)


def build_options(argv: list[str] | None = None, default_cfg: str | None = None) -> Options:
    """defaults < YAML (--path_opt, else `default_cfg`) < command line; every value checked."""
    return parse_options(argv, default_cfg).opt


def parse_options(argv: list[str] | None = None, default_cfg: str | None = None) -> ParsedOptions:
    """build_options, and which options the command line gave."""
    cli = parse_cli(list(sys.argv[1:] if argv is None else argv))
    path_opt = cli.get("path_opt", default_cfg or "")
    values: dict[str, Any] = {}
    if path_opt:
        values.update(load_yaml(path_opt))
        if "start_from" in {**values, **cli} and "id" not in cli:
            values.pop("id", None)    # a resumed or evaluated run keeps its folder's name (not the config's id)
    from_file = set(values) - set(cli)
    values.update(cli)
    values["path_opt"] = path_opt
    values.update(original_run_folder(values))
    opt = options_from_dict(values)
    check_options(opt)
    if path_opt:
        check_foreign_paths(opt, path_opt, from_file, set(cli))
    return ParsedOptions(opt, frozenset(cli))


def options_from_dict(values: dict[str, Any]) -> Options:
    """Options from a mapping (a checkpoint's saved config included: dead keys are ignored); the
    data options it lacks default to the data set's places under data_path (`data_defaults`)."""
    values = {k: v for k, v in values.items() if k not in DEAD_OPTIONS}
    return Options(**{k: coerce(k, v) for k, v in {**data_defaults(values), **values}.items()})


# Where each data set's files are, relative to data_path: the original's places for COCO and
# Flickr30k (its cfgs, opts.py and data README), the generator's for the built-in world.
DATA_LAYOUT: dict[str, dict[str, Any]] = {
    "world": {"input_json": "world/cap_world.json", "input_dic": "world/dic_world.json",
              "image_path": "world/images", "proposal_h5": "world/world_detection.h5",
              "instances_json": ["world/annotations/instances_world.json"],
              "class_name_file": "world/world_class_name.txt", "cached_tokens": "world/world-train-df.json"},
    "coco": {"input_json": "coco/cap_coco.json", "input_dic": "coco/dic_coco.json",
             "image_path": "coco/images", "proposal_h5": "coco/coco_detection.h5",
             "instances_json": ["coco/annotations/instances_train2014.json",
                                "coco/annotations/instances_val2014.json"],
             "class_name_file": "coco/coco_class_name.txt", "cached_tokens": "coco/coco-train-df.json"},
    # Flickr30k's boxes came from the original's flickr30k_cleaned_class.json, which is not read here
    "flickr30k": {"input_json": "flickr30k/cap_flickr30k.json", "input_dic": "flickr30k/dic_flickr30k.json",
                  "image_path": "flickr30k/images", "proposal_h5": "flickr30k/flickr30k_detection.h5",
                  "instances_json": [], "class_name_file": "flickr30k/flickr30k_class_name.txt",
                  "cached_tokens": "flickr30k/flickr30k-train-df.json"},
}


def data_defaults(values: dict[str, Any], read_dic: bool = True) -> dict[str, Any]:
    """The data options `values` does not give: the places of its data set under its data_path;
    instances_json first from the dic (unless not `read_dic`), when prepro recorded there which
    instance files belong to it."""
    dataset = values.get("dataset", default_of("dataset"))
    if dataset not in DATA_LAYOUT:
        return {}                                        # coerce() names the valid data sets
    root = Path(str(values.get("data_path", default_of("data_path")) or "."))
    out: dict[str, Any] = {}
    for key, rel in DATA_LAYOUT[dataset].items():
        if key not in values:
            out[key] = [str(root / r) for r in rel] if isinstance(rel, list) else str(root / rel)
    if "instances_json" in out and read_dic:
        recorded = recorded_instances(str(values.get("input_dic", out.get("input_dic", ""))))
        if recorded is not None:
            out["instances_json"] = recorded
    return out


def recorded_instances(dic_path: str) -> list[str] | None:
    """The instance files prepro_dic_coco.py recorded in a dic (`instances_json`, relative to the
    dic's folder), or None when the dic records none or cannot be read yet (it is read, with its
    errors, when the data is loaded)."""
    path = Path(dic_path)
    if not dic_path or not path.is_file():
        return None
    try:
        files = json.loads(path.read_text()).get("instances_json")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(files, list) or not files:
        return None
    return [str(path.parent / f) for f in files]


def original_run_folder(values: dict[str, Any]) -> dict[str, Any]:
    """The original wrote a run's files straight into checkpoint_path (its cfgs set
    `checkpoint_path: save/normal_coco_1024_adam` and no id). A checkpoint_path given without an
    id (other than the default folder of runs, and not when resuming) is therefore the run folder:
    checkpoint_path = its parent, id = its name."""
    given = str(values.get("checkpoint_path", "") or "")
    if values.get("id") or values.get("start_from") or not given:
        return {}
    path = Path(given)
    if path == Path(default_of("checkpoint_path")) or not path.name:
        return {}
    return {"checkpoint_path": str(path.parent), "id": path.name}


# Options naming files or folders to read, checked for a config file's absolute paths.
INPUT_PATHS = ("input_json", "input_dic", "image_path", "proposal_h5", "instances_json", "class_name_file",
               "cached_tokens", "cached_features", "cnn_weights", "glove_path", "start_from", "detector_weights")


def check_foreign_paths(opt: Options, path_opt: str, from_file: set[str], from_cli: set[str]) -> None:
    """A config file's absolute paths of another machine (the original's NOC cfgs name
    /srv/share/jiasenlu/...) are a one-line error naming the file and the option, before anything
    is read or written; so are those derived from its absolute data_path."""
    def problem(key: str, value: str) -> str | None:
        p = Path(value)
        if not p.is_absolute():
            return None
        if key == "checkpoint_path":                       # written: its nearest existing folder must be writable
            existing = next(a for a in (p, *p.parents) if a.exists())
            return None if os.access(existing, os.W_OK) else f"cannot be created ({existing} is not writable)"
        return None if p.exists() else "does not exist on this machine"

    derived = not ({"data_path"} & from_cli) and "data_path" in from_file
    for key in (*INPUT_PATHS, "checkpoint_path"):
        if key in from_cli or not (key in from_file or derived and key in DATA_LAYOUT.get(opt.dataset, {})):
            continue
        value = getattr(opt, key)
        for v in value if isinstance(value, list) else [value]:
            why = problem(key, v) if v else None
            if why:
                via = "" if key in from_file else f" (under its data_path '{opt.data_path}')"
                flags = f"--{key}" + (" or --data_path" if via else "")
                raise ConfigError(f"{path_opt}: {key} '{v}'{via} {why}: an absolute path of the machine the file "
                                  f"was written on? give {flags} on the command line, or edit the file")


def check_options(opt: Options) -> None:
    """Checks that involve several options."""
    if opt.image_crop_size > opt.image_size:
        raise ConfigError(f"option 'image_crop_size': {opt.image_crop_size} is larger than "
                          f"image_size {opt.image_size} (training crops inside the resized image)")
    if opt.resume_epoch >= 0 and not opt.id:
        raise ConfigError("option 'resume_epoch' needs --id (the run to resume: save/<id>/epoch_<n>.pth)")
    if opt.scst_baseline == "mean" and opt.train_sample_n < 2 and (opt.self_critical or opt.self_critical_after >= 0):
        raise ConfigError("option 'scst_baseline': 'mean' needs train_sample_n >= 2")


def format_help(prog: str, description: str, values: dict[str, Any], keys=None) -> str:
    """Every option (or those in `keys`) with its one-line help and the value a run would use."""
    where = "; the command line overrides the config file" if keys is None else ""
    lines = [f"usage: {prog} [--option value ...]", "", description, "",
             f"Options (a unique prefix is enough{where}):"]
    for name, f in Options.fields().items():
        if keys is not None and name not in keys:
            continue
        meta = f.metadata
        extra = ""
        if meta.get("choices"):
            extra = " {" + "|".join(c if c else "''" for c in meta["choices"]) + "}"
        elif meta.get("lo") is not None or meta.get("hi") is not None:
            extra = f" [{_range_text(meta)}]"
        value = values.get(name, default_of(name))
        shown = json.dumps(value) if isinstance(value, (list, dict)) else repr(value)
        text = f"{meta['help']}{extra} (default: {shown})"
        lines.append(f"  --{name}")
        lines.extend(textwrap.wrap(text, width=100, initial_indent="      ", subsequent_indent="      "))
    if keys is None:
        lines += ["", "Accepted for the original's scripts, with no effect: "
                  + ", ".join(f"--{k}" for k in DEAD_OPTIONS)]
    return "\n".join(lines)


def help_defaults(argv: list[str], default_cfg: str | None) -> dict[str, Any]:
    """The values `--help` shows: those of the config file the run would read."""
    try:
        cli = parse_cli([a for a in argv if a not in ("-h", "--help")])
    except ConfigError:
        cli = {}
    path_opt = cli.get("path_opt", default_cfg or "")
    values = {k: coerce(k, v) for k, v in (load_yaml(path_opt) if path_opt else {}).items()}
    values.update(data_defaults(values, read_dic=False))
    values["path_opt"] = path_opt
    return values
