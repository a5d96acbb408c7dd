"""Options: YAML files in cfgs/ plus command-line flags.

Every option of the original `opts.py` keeps its name and default (nbt-reference §5) unless noted
as changed; the dead ones (`rnn_type`, `optim_epsilon`, `cnn_optim`, `cider_df`, `val_images_use`,
`language_eval`, `losses_log_every`) are dropped (see README).  Precedence, unlike the original:

    defaults  <  --path_opt YAML  <  command line

An unknown key (in a file or on the command line) is an error naming the closest valid key, and
booleans parse `True/False/1/0/yes/no`, so `--cuda False` really means False.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """Bad configuration; its message is one line naming the key or file."""


@dataclass
class Options:
    # --- data and I/O -----------------------------------------------------------------
    path_opt: str = ""                      # YAML config file (read before the command line)
    dataset: str = "world"                  # world | coco | flickr30k
    input_json: str = "data/world/cap_world.json"
    input_dic: str = "data/world/dic_world.json"
    image_path: str = "data/world/images"
    proposal_h5: str = "data/world/world_detection.h5"
    instances_json: list = field(default_factory=lambda: ["data/world/annotations/instances_world.json"])
    class_name_file: str = "data/world/world_class_name.txt"
    cnn_backend: str = "res101"             # res101 | res50 | res18 | vgg16 | tiny
    cnn_weights: str = ""                   # local .pth; "" = torchvision enum (online) or random for tiny
    pretrained_cnn: bool = True             # False: random init (for tests / the world's tiny CNN)
    data_path: str = "data"
    decode_noc: bool = False                # original default True; only NOC configs turn it on
    noc_word_map: dict = field(default_factory=dict)   # novel class -> seen class (embedding copy)
    att_model: str = "topdown"              # topdown (NBT) | showtell | aoanet | updown_plain
    num_workers: int = 2
    cuda: bool = True                       # use the GPU when one exists
    mGPUs: bool = False                     # multi-GPU: maps to torch.distributed DDP (torchrun)
    cached_tokens: str = "data/world/world-train-df.json"   # CIDEr-D document frequencies (SCST)
    cached_features: str = ""               # directory of precomputed conv maps ("" = run the CNN)
    seed: int = 123
    # --- model size -------------------------------------------------------------------
    rnn_size: int = 1024
    num_layers: int = 2
    input_encoding_size: int = 512
    att_hid_size: int = 512
    fc_feat_size: int = 2048
    att_feat_size: int = 2048
    image_size: int = 576
    image_crop_size: int = 512
    max_proposal: int = 100
    grid_size: int = 0                      # average-pool the attention grid to this size (0 = as is)
    class_emb_size: int = 300
    loc_emb_size: int = 300
    aoa_heads: int = 8                      # AoANet baseline (published settings)
    aoa_refine_layers: int = 6
    glove_path: str = ""                    # GloVe txt (word v1 ... v300); "" = learned embeddings
    # --- optimisation ------------------------------------------------------------------
    max_epochs: int = 30
    batch_size: int = 10
    grad_accum: int = 1                     # gradient accumulation steps
    grad_clip: float = 0.1
    drop_prob_lm: float = 0.5
    self_critical: bool = False
    self_critical_after: int = -1           # epoch after which SCST replaces XE (-1 = never)
    train_sample_n: int = 5                 # SCST samples per image
    scst_baseline: str = "greedy"           # greedy | mean (of the other samples: "new self-critical")
    scst_learning_rate: float = 2e-5        # AoANet's SCST learning rate
    seq_per_img: int = 5
    seq_length: int = 20
    beam_size: int = 1
    length_penalty: float = 0.0             # final beam score / length ** alpha
    lm_loss_weight: float = 1.0
    bn_loss_weight: float = 1.0
    fg_loss_weight: float = 1.0
    region_grouping: bool = False           # NBT: learned group sizes on region vectors (misc/grouping.py)
    group_loss_weight: float = 1.0          # its pair loss, where instances say which objects form a group
    amp: str = "bf16"                       # none | bf16 | fp16 (GPU only)
    # --- scheduled sampling --------------------------------------------------------------
    scheduled_sampling_start: int = -1
    scheduled_sampling_increase_every: int = 5
    scheduled_sampling_increase_prob: float = 0.05
    scheduled_sampling_max_prob: float = 0.25
    # --- language-model optimiser ------------------------------------------------------
    optim: str = "adam"                     # adam | adamax | sgd
    learning_rate: float = 5e-4
    learning_rate_decay_start: int = 1
    learning_rate_decay_every: int = 3
    learning_rate_decay_rate: float = 0.8
    optim_alpha: float = 0.9
    optim_beta: float = 0.999
    weight_decay: float = 0.0
    # --- CNN fine-tuning ---------------------------------------------------------------
    finetune_cnn: bool = False
    fixed_block: int = 1
    cnn_optim_alpha: float = 0.8
    cnn_optim_beta: float = 0.999
    cnn_learning_rate: float = 1e-5
    cnn_weight_decay: float = 0.0
    # --- session, checkpoints, evaluation ----------------------------------------------
    start_from: str = ""
    resume_epoch: int = -1                  # MCAN style: with --id, resume save/<id>/epoch_<n>.pth
    id: str = ""
    val_split: str = "val"                  # original: 'test' (model selection on test; fixed)
    eval_split: str = "test"
    inference_only: bool = False
    val_every_epoch: int = 1
    checkpoint_path: str = "save"
    load_best_score: bool = True
    disp_interval: int = 100
    keep_epoch_checkpoints: int = 3         # epoch_<n>.pth files kept (-1 = all, 0 = none)
    save_every_iters: int = 0               # also checkpoint mid-epoch every N iterations (0 = off)
    max_iters: int = -1                     # stop after N iterations (tests, benchmarks)
    cbs: bool = False
    cbs_tag_size: int = 3
    cbs_mode: str = "all"                   # all | unique | novel
    cbs_score_thresh: float = 0.8
    det_oracle: bool = False
    eval_max_images: int = -1
    train_max_images: int = -1              # train on the first N training images (tests, overfitting)
    spice: bool = False                     # run SPICE when its CoreNLP jars are present
    # --- grounding targets ---------------------------------------------------------------
    pos_iou_thresh: float = 0.5
    pos_score_thresh: float = 0.5
    # --- demo ------------------------------------------------------------------------------
    demo_path: str = ""
    demo_out: str = "visu"
    demo_detections: str = ""               # detection JSON (coco-mini format) for the demo images
    demo_max_images: int = 8
    demo_min_score: float = 0.5             # demo picture: draw proposals scoring at least this ...
    demo_max_boxes: int = 10                # ... and at most this many (grounded boxes always drawn)
    detector_weights: str = ""

    # -------------------------------------------------------------------------------------
    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        from misc.io import atomic_write_text
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=True))


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
    raise ConfigError(f"option '{key}': expected True or False, got {value!r}")


def _closest(key: str) -> str:
    names = list(Options.fields())
    match = difflib.get_close_matches(key, names, n=1, cutoff=0.0)
    return match[0] if match else names[0]


def coerce(key: str, value: Any) -> Any:
    """Convert a YAML or command-line value to the declared type of `key`."""
    fields = Options.fields()
    if key not in fields:
        raise ConfigError(f"unknown option '{key}' (did you mean '{_closest(key)}'?)")
    default = fields[key].default if fields[key].default is not dataclasses.MISSING \
        else fields[key].default_factory()
    try:
        if isinstance(default, bool):
            return parse_bool(value, key)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                value = json.loads(value) if value.startswith("[") else [v for v in value.split(",") if v]
            if not isinstance(value, list):
                raise ValueError
            return list(value)
        if isinstance(default, dict):
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
        return "" if value is None else str(value)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ConfigError(f"option '{key}': cannot read {value!r} as {type(default).__name__}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
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
    for key in data:
        if key not in Options.fields():
            raise ConfigError(f"{path}: unknown option '{key}' (did you mean '{_closest(key)}'?)")
    return data


def parse_cli(argv: list[str]) -> dict[str, Any]:
    """`--key value` or `--key=value` pairs; a bare `--flag` means True for booleans."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}: options look like --key value")
        key, eq, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if key not in Options.fields():
            raise ConfigError(f"unknown option '--{key}' (did you mean '--{_closest(key)}'?)")
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            is_bool = isinstance(Options.fields()[key].default, bool)
            if nxt is None or nxt.startswith("--"):
                if not is_bool:
                    raise ConfigError(f"option '--{key}' needs a value")
                value = "True"
            else:
                value = nxt
                i += 1
        out[key] = value
        i += 1
    return out


def build_options(argv: list[str] | None = None, default_cfg: str | None = None) -> Options:
    """defaults < YAML (--path_opt, else `default_cfg`) < command line."""
    cli = parse_cli(list(sys.argv[1:] if argv is None else argv))
    path_opt = cli.get("path_opt", default_cfg or "")
    values: dict[str, Any] = {}
    if path_opt:
        values.update(load_yaml(path_opt))
    values.update(cli)
    values["path_opt"] = path_opt
    return options_from_dict(values)


def options_from_dict(values: dict[str, Any]) -> Options:
    return Options(**{k: coerce(k, v) for k, v in values.items()})


def main_argparser_help() -> str:
    """A short help text listing every option and its default (for `main.py --help`)."""
    parser = argparse.ArgumentParser(prog="main.py", description="Neural Baby Talk")
    for name, f in Options.fields().items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        parser.add_argument(f"--{name}", default=default, help=f"(default: {default!r})")
    return parser.format_help()
