"""Models trained with the original NeuralBabyTalk (jiasenlu/NeuralBabyTalk, c351ae6) as checkpoints
of this project: a pure mapping of its `model-best.pth` (a bare state dict of its TopDownModel)
and its `infos_<id>-best.pkl` (misc/original_infos.py) onto this project's names, shapes and
options. No model of the original is built; where its computation differs from ours, the options
below select the variant of ours that computes its function:

    roi_align "original"       its RoIAlignAvg(1, 1, 1/32) sampling (pooling/roi_align.py)
    cnn_backend "res101_caffe" its ResNet (stride on each block's first 1x1 conv; res50 / res152 alike)
    sentinel_cell "previous"   its sentinel reads the previous cell state of the language LSTM
    sentinel_key "own"         its sentinel has its own key layer (adaPnt.f_fc2)
    extra_word_logit True      its word layer has vocab_size + 1 outputs (the last is never a word)
    fine_head "glove"          its fine-grained head scores a 300-d output against frozen GloVe rows

Names (original -> ours; everything else of the original is refused, nothing is guessed):

    cnn.resnet.conv1 / bn1 / layerK        backbone.body.0.0 / body.0.1 / body.K
    cnn.resnet.fc, cnn.cnn_net.*           dropped (an unused fc; the same tensors as cnn.resnet.*)
    *.num_batches_tracked                  dropped (BatchNorm is frozen here)
    det_fc.0 / loc_fc.0 / pool_embed.0     decoder.regions.class_emb / loc.0 / region.0
    att_embed.0 / fc_embed.0               decoder.regions.grid.0 / fc.0
    embed.0, logit                         decoder.embed.0, decoder.logit
    ctx2att                                decoder.att_grid.key_proj
    ctx2pool                               decoder.att_region.key_proj and decoder.pointer.key_proj
                                           (one layer in the original: its region attention and
                                           pointer share the projected regions)
    core.att_lstm, core.lang_lstm          decoder.att_lstm, decoder.lang_lstm
    core.attention.h2att / alpha_net       decoder.att_grid.query_proj / score
    core.attention2.h2att / alpha_net      decoder.att_region.query_proj / score
    core.i2h_2, core.h2h_2                 decoder.gate_x, decoder.gate_h
    core.adaPnt.f_fc1 / f_fc2              decoder.sentinel.0 / decoder.sentinel_key
    core.adaPnt.h_fc1 / alpha_net          decoder.pointer.query_proj / score
    ccr_core.bn_fc.0 / 3, fg_fc.0 / 3      decoder.heads.plural.0 / 3, fine.0 / 3
    ccr_core.fg_emb (F + 1, 300)           decoder.heads.fine_vectors (F, 300)
    ccr_core.fg_mask (C + 1, F + 1)        the class of each fine-grained word (the class list)

Shapes: the language LSTM and the sentinel gate read [attended ; h_att] (2H) in the original and
[attended ; h_att ; count] (2H + 1) here: the count column gets zero weights, so it adds nothing.
The slot heads read [h_lang ; region] there and [region ; h_lang] here: the two halves of their
first layer's columns are swapped. The fine-grained words are re-indexed from the original's
order (its dic's `wtod` key order, 1-based, row 0 padding) to ours (class by class, see
`class_list`); the rows of fg_emb follow.

Vocabulary: the infos' ix_to_word (its vocab_size = len + 1 = ours), the class names `itoc`,
the fine-grained words `itod` with their classes from fg_mask, plurals from `ltow`; they travel in
the checkpoint (`vocabulary`), so no data file is needed to caption with it.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from nbt.misc.config import Options, options_from_dict
from nbt.misc.io import DataError
from nbt.misc.original_infos import read_infos
from nbt.misc.vocab import ClassNames, Vocabulary

CAFFE_BACKENDS = {"res50": "res50_caffe", "res101": "res101_caffe", "res152": "res152_caffe"}
# The original's NOC decoding (its misc/utils.py): held-out class indices and the seen class each borrows from.
NOC_INDEX = (6, 40, 58, 69, 54, 39, 29, 23)
NOC_WORD_MAP = {"bus": "car", "bottle": "cup", "couch": "chair", "microwave": "oven", "pizza": "cake",
                "tennis racket": "baseball bat", "suitcase": "handbag", "zebra": "horse"}
RENAMES = [  # (original prefix, our prefix) for tensors copied as they are
    ("det_fc.0.", "decoder.regions.class_emb."), ("loc_fc.0.", "decoder.regions.loc.0."),
    ("pool_embed.0.", "decoder.regions.region.0."), ("att_embed.0.", "decoder.regions.grid.0."),
    ("fc_embed.0.", "decoder.regions.fc.0."), ("embed.0.", "decoder.embed.0."), ("logit.", "decoder.logit."),
    ("ctx2att.", "decoder.att_grid.key_proj."), ("core.att_lstm.", "decoder.att_lstm."),
    ("core.attention.h2att.", "decoder.att_grid.query_proj."), ("core.attention.alpha_net.", "decoder.att_grid.score."),
    ("core.attention2.h2att.", "decoder.att_region.query_proj."),
    ("core.attention2.alpha_net.", "decoder.att_region.score."), ("core.h2h_2.", "decoder.gate_h."),
    ("core.adaPnt.f_fc1.", "decoder.sentinel.0."), ("core.adaPnt.f_fc2.", "decoder.sentinel_key."),
    ("core.adaPnt.h_fc1.", "decoder.pointer.query_proj."), ("core.adaPnt.alpha_net.", "decoder.pointer.score."),
    ("ccr_core.bn_fc.3.", "decoder.heads.plural.3."), ("ccr_core.fg_fc.3.", "decoder.heads.fine.3."),
    ("cnn.resnet.conv1.", "backbone.body.0.0."), ("cnn.resnet.bn1.", "backbone.body.0.1."),
] + [(f"cnn.resnet.layer{k}.", f"backbone.body.{k}.") for k in (1, 2, 3, 4)]


@dataclasses.dataclass(frozen=True)
class OriginalPair:
    """A model of the original: its state dict file and the infos file written with it."""
    state: Path
    infos: Path


def is_original_state_dict(obj) -> bool:
    """A bare state dict with the original TopDownModel's names (not a checkpoint of ours)."""
    return isinstance(obj, dict) and "ccr_core.fg_mask" in obj and "core.att_lstm.weight_ih" in obj


def infos_next_to(state_path: Path) -> Path | None:
    """The infos the original's main.py wrote with `state_path`: infos_<id>-best.pkl next to
    model-best.pth, infos_<id>.pkl next to model.pth. None when there is none; DataError when
    several could be it."""
    best = state_path.name.endswith("-best.pth")
    found = sorted(p for p in state_path.parent.glob("infos_*.pkl") if p.name.endswith("-best.pkl") == best)
    if len(found) > 1:
        raise DataError(f"{state_path.parent}: {len(found)} infos files could belong to {state_path.name} "
                        f"({', '.join(p.name for p in found)}); keep the one written with it")
    return found[0] if found else None


# -- the vocabulary and the class list -------------------------------------------------------
def _clean(word: str) -> str:
    return " ".join(str(word).strip().lower().split())


def class_list(opt, fg_mask: torch.Tensor, where: str) -> tuple[ClassNames, list[int]]:
    """The classes (itoc) and their fine-grained words (itod, each in the class fg_mask allows), in
    our order: class by class, the class's own name first when it is one of its words, then the
    original's order. Returns the ClassNames and, for each of our fine indices, the original's."""
    itoc = {int(k): str(v) for k, v in opt.itoc.items()}
    itod = {int(k): str(v) for k, v in opt.itod.items()}
    C, F = len(itoc), len(itod)
    if sorted(itoc) != list(range(1, C + 1)) or sorted(itod) != list(range(1, F + 1)):
        raise DataError(f"{where}: opt.itoc / opt.itod are not numbered 1..C / 1..F")
    if tuple(fg_mask.shape) != (C + 1, F + 1):
        raise DataError(f"{where}: ccr_core.fg_mask is {tuple(fg_mask.shape)}, the infos have {C} classes and "
                        f"{F} fine-grained words")
    allowed = fg_mask == 0                                                      # (C + 1, F + 1)
    owner = {}
    for j in range(1, F + 1):
        rows = allowed[:, j].nonzero().flatten().tolist()
        if len(rows) != 1 or rows[0] == 0:
            raise DataError(f"{where}: fine-grained word '{itod[j]}' belongs to {len(rows)} classes in fg_mask")
        owner[j] = rows[0]
    names, words, order = [], [], []
    for c in range(1, C + 1):
        mine = [j for j in range(1, F + 1) if owner[j] == c]
        mine.sort(key=lambda j: _clean(itod[j]) != _clean(itoc[c]))            # stable: the name first
        cleaned = [_clean(itod[j]) for j in mine]
        if len(set(cleaned)) != len(cleaned):
            raise DataError(f"{where}: class '{itoc[c]}' has fine-grained words that differ only in case or "
                            f"spaces ({', '.join(repr(itod[j]) for j in mine)})")
        names.append(_clean(itoc[c]))
        words.append(tuple(cleaned))
        order += mine
    return ClassNames(tuple(names), tuple(words)), order


def vocabulary_record(infos: dict, classes: ClassNames, order: list[int]) -> dict:
    """What a checkpoint carries of its vocabulary (misc/checkpoint.checkpoint_vocabulary), and for
    each of our fine-grained indices the original's (`original_fine_index`, 1..F)."""
    opt = infos["opt"]
    ix_to_word = {str(int(k)): str(v) for k, v in (infos.get("vocab") or opt.itow).items()}
    ltow = {_clean(k): _clean(v) for k, v in (getattr(opt, "ltow", None) or {}).items()}
    fine = set(classes.fine_words)
    held_out = []
    if getattr(opt, "decode_noc", False):
        held_out = [classes.names[i - 1] for i in NOC_INDEX if i <= classes.num_classes]
    return {"ix_to_word": ix_to_word, "classes": list(classes.names), "class_words": [list(w) for w in classes.words],
            "plural_of": {w: p for w, p in ltow.items() if w in fine and p != w}, "held_out": held_out,
            "original_fine_index": list(order)}


# -- tensors ------------------------------------------------------------------------------------
def _swap_halves(w: torch.Tensor) -> torch.Tensor:
    """Columns [h ; region] -> [region ; h] of a (H, 2H) weight."""
    h = w.shape[1] // 2
    return torch.cat([w[:, h:], w[:, :h]], 1)


def _zero_count_column(w: torch.Tensor) -> torch.Tensor:
    """(out, 2H) -> (out, 2H + 1): the count channel's column, zero."""
    return torch.cat([w, w.new_zeros(w.shape[0], 1)], 1)


def map_state_dict(state: dict, fine_order: list[int], where: str) -> dict[str, torch.Tensor]:
    """The original's tensors under our names (module docstring); DataError on a name it does not know."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    shared = _check_cnn_copies(state, where)
    out: dict[str, torch.Tensor] = {}
    special = {
        "ctx2pool.weight", "ctx2pool.bias", "core.lang_lstm.weight_ih", "core.i2h_2.weight", "core.i2h_2.bias",
        "ccr_core.bn_fc.0.weight", "ccr_core.bn_fc.0.bias", "ccr_core.fg_fc.0.weight", "ccr_core.fg_fc.0.bias",
        "ccr_core.fg_emb", "ccr_core.fg_mask"}
    for k, v in state.items():
        if k in special or k in shared or k.startswith("cnn.resnet.fc."):
            continue
        if k.startswith("core.lang_lstm."):
            out["decoder.lang_lstm." + k[len("core.lang_lstm."):]] = v
            continue
        target = next((ours + k[len(orig):] for orig, ours in RENAMES if k.startswith(orig)), None)
        if target is None:
            raise DataError(f"{where}: '{k}' is not a tensor of the original's topdown model; not converted")
        out[target] = v
    try:
        for part in ("weight", "bias"):
            out[f"decoder.att_region.key_proj.{part}"] = state[f"ctx2pool.{part}"]
            out[f"decoder.pointer.key_proj.{part}"] = state[f"ctx2pool.{part}"].clone()
        out["decoder.lang_lstm.weight_ih"] = _zero_count_column(state["core.lang_lstm.weight_ih"])
        out["decoder.gate_x.weight"] = _zero_count_column(state["core.i2h_2.weight"])
        out["decoder.gate_x.bias"] = state["core.i2h_2.bias"]
        for orig, ours in (("bn_fc", "plural"), ("fg_fc", "fine")):
            out[f"decoder.heads.{ours}.0.weight"] = _swap_halves(state[f"ccr_core.{orig}.0.weight"])
            out[f"decoder.heads.{ours}.0.bias"] = state[f"ccr_core.{orig}.0.bias"]
        out["decoder.heads.fine_vectors"] = state["ccr_core.fg_emb"][torch.tensor(fine_order)].float()
    except KeyError as err:
        raise DataError(f"{where}: no tensor {err} (not a state dict of the original's topdown model)") from None
    return {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in out.items()}


def _check_cnn_copies(state: dict, where: str) -> set[str]:
    """The original's CNN holds each ResNet tensor twice (cnn.resnet.* and its cnn.cnn_net Sequential
    over the same modules): the cnn_net names, after checking they hold the same values."""
    index = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
    copies = set()
    for k, v in state.items():
        if not k.startswith("cnn.cnn_net."):
            continue
        first, _, rest = k[len("cnn.cnn_net."):].partition(".")
        twin = f"cnn.resnet.{index.get(first, '?')}.{rest}"
        if twin not in state or not torch.equal(state[twin], v):
            raise DataError(f"{where}: '{k}' is not a copy of '{twin}' (not the original's resnet)")
        copies.add(k)
    return copies


# -- options ---------------------------------------------------------------------------------------
def converted_options(opt, state: dict, where: str) -> Options:
    """Our options for the original's model: its sizes and settings, and the variants that compute
    its function (module docstring)."""
    if getattr(opt, "att_model", "topdown") != "topdown":
        raise DataError(f"{where}: att_model '{opt.att_model}': only the original's topdown model converts")
    backend = CAFFE_BACKENDS.get(getattr(opt, "cnn_backend", "res101"))
    if backend is None:
        raise DataError(f"{where}: cnn_backend '{opt.cnn_backend}' does not convert (res50 / res101 / res152 do; "
                        "the vgg16 variant's Caffe BGR input is not implemented here)")
    try:
        conv_channels = state["pool_embed.0.weight"].shape[1] - state["loc_fc.0.weight"].shape[0] \
            - state["det_fc.0.weight"].shape[1]
        values = dict(
            att_model="topdown", cnn_backend=backend, att_feat_size=int(conv_channels),
            rnn_size=int(state["logit.weight"].shape[1]), input_encoding_size=int(state["embed.0.weight"].shape[1]),
            att_hid_size=int(state["ctx2att.weight"].shape[0]), class_emb_size=int(state["det_fc.0.weight"].shape[1]),
            loc_emb_size=int(state["loc_fc.0.weight"].shape[0]))
    except KeyError as err:
        raise DataError(f"{where}: no tensor {err} (not a state dict of the original's topdown model)") from None
    crop = int(getattr(opt, "image_crop_size", 512))
    values.update(
        roi_align="original", sentinel_cell="previous", sentinel_key="own", extra_word_logit=True, fine_head="glove",
        grid_size=0, region_grouping=False, pretrained_cnn=False, cnn_weights="", glove_path="", class_name_file="",
        image_crop_size=crop, image_size=max(crop, int(getattr(opt, "image_size", crop))),
        drop_prob_lm=float(getattr(opt, "drop_prob_lm", 0.5)), seq_length=int(getattr(opt, "seq_length", 20)),
        finetune_cnn=bool(getattr(opt, "finetune_cnn", False)),
        fixed_block=min(4, max(0, int(getattr(opt, "fixed_block", 4)))),
        decode_noc=bool(getattr(opt, "decode_noc", False)), cbs_score_thresh=0.8, pos_score_thresh=0.5,
        amp="none",                                              # it computed in float32
        id=str(getattr(opt, "id", "") or ""))
    if values["decode_noc"]:
        values["noc_word_map"] = dict(NOC_WORD_MAP)
    for key in ("dataset", "input_json", "input_dic", "image_path", "proposal_h5", "beam_size", "cbs_tag_size",
                "cbs_mode", "learning_rate", "optim", "batch_size", "seq_per_img"):
        if getattr(opt, key, None) is not None:
            values[key] = getattr(opt, key)
    if values.get("dataset") not in ("world", "coco", "flickr30k"):
        values.pop("dataset", None)
    try:
        return options_from_dict(values)
    except ValueError as err:                                    # ConfigError: a value out of range
        raise DataError(f"{where}: its options do not fit this project ({err})") from None


# -- the whole conversion ------------------------------------------------------------------------
def convert(state: dict, infos: dict, *, where: str) -> dict:
    """The original's state dict and infos -> a checkpoint dict of this project (misc/checkpoint.py:
    model, config, fingerprint, classes, vocabulary; no optimizer, RNG or epoch position)."""
    if not is_original_state_dict(state):
        raise DataError(f"{where}: not a state dict of the original NeuralBabyTalk")
    opt = infos["opt"]
    for key in ("itoc", "itod", "vocab_size"):
        if not hasattr(opt, key):
            raise DataError(f"{where}: the infos' options have no '{key}' (not written by the original's main.py)")
    classes, order = class_list(opt, state["ccr_core.fg_mask"], where)
    record = vocabulary_record(infos, classes, order)
    vocab = Vocabulary(record["ix_to_word"], classes, record["plural_of"])
    if vocab.size != int(opt.vocab_size) or state["logit.weight"].shape[0] != vocab.size + 1:
        raise DataError(f"{where}: vocabulary of {len(record['ix_to_word'])} words (vocab_size {opt.vocab_size}) "
                        f"does not fit logit.weight {tuple(state['logit.weight'].shape)}")
    options = converted_options(opt, state, where)
    return {"model": map_state_dict(state, order, where), "config": options.to_dict(),
            "fingerprint": vocab.fingerprint(), "classes": list(classes.names), "vocabulary": record,
            "original": {"epoch": infos.get("epoch"), "iter": infos.get("iter"),
                         "best_val_score": _number(infos.get("best_val_score"))}}


def _number(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def load_original(state_path: Path, state: dict) -> dict:
    """Convert on load: the original's state dict read from state_path and the infos next to it ->
    our checkpoint dict, with a one-line notice on stderr."""
    infos_path = infos_next_to(state_path)
    if infos_path is None:
        raise DataError(f"{state_path}: a model of the original NeuralBabyTalk, but no "
                        f"infos_<id>{'-best' if state_path.name.endswith('-best.pth') else ''}.pkl next to it "
                        "(its vocabulary and options are there)")
    ckpt = convert(state, read_infos(infos_path), where=str(state_path))
    print(f"note: {state_path} is a model of the original NeuralBabyTalk: converted on load with "
          f"{infos_path.name} (tools/convert_original.py writes the converted run once)", file=sys.stderr)
    return ckpt


def class_file_text(classes: ClassNames) -> str:
    """The class-name file of a converted run: one line per class, its words (name first), which
    ClassNames.read turns back into the same class list."""
    for name, words in zip(classes.names, classes.words):
        if not words or words[0] != name:
            raise DataError(f"class '{name}' is not its own first fine-grained word: no class-name file "
                            "can hold this class list (the checkpoint still does)")
    return "".join(", ".join(words) + "\n" for words in classes.words)
