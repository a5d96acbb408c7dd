"""Flickr30k with its grounding -> the project's dic / cap / instances files.

From Flickr30k Entities (its Sentences/ and Annotations/ from annotations.zip, and its train.txt /
val.txt / test.txt as the split), or from the original NBT's own Flickr files (the
dic_flickr30k.json / cap_flickr30k.json its prepro wrote). prepro/flickr30k.py reads them; this
script writes what every other part of the project reads, as for COCO:

  dic_flickr30k.json        vocabulary, visual words, images {split, file_path "<id>.jpg", id: the
                            Flickr image id}: the keys prepro_dic_coco.py writes
  cap_flickr30k.json        per image its captions, each {"tokens": [...], "refs": [[pos, entity], ...]}:
                            the visual word starting at token pos names the entity (misc/captions.py)
  instances_flickr30k.json  COCO-style instances of the named entities' boxes: one annotation per
                            box and class it is named by, with attributes {entity, kind}: the chain
                            id and the class-file word its captions use most (misc/annotations.py)
  flickr30k-train-df.json   CIDEr-D document frequencies of the training captions (SCST)

A visual word's pointer positives are then the proposals on its own entity's boxes, and the
grounding report scores generated words against the named entities' boxes (plural: the entity
has more than one box of the class).

    python prepro/prepro_dic_flickr.py            # data/flickr30k/flickr30k_entities -> data/flickr30k/
    python prepro/prepro_dic_flickr.py --input_json data/flickr30k/dataset_flickr30k.json   # Karpathy's split
    python prepro/prepro_dic_flickr.py --original_dic old/dic_flickr30k.json --original_cap old/cap_flickr30k.json
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _checkout  # noqa: F401  (`nbt` = this checkout)

from tqdm import tqdm

from nbt.misc.io import DataError, atomic_write_json
from nbt.misc.vocab import ClassNames, VisualWordMatcher
from nbt.prepro.flickr30k import (GroundedImage, read_entities, read_karpathy_split, read_original,
                                  require_release, split_lists)
from nbt.prepro.prepro_dic_coco import shipped_if_default, write_outputs

ROOT = "data/flickr30k"
DEFAULT_CLASS_FILE = f"{ROOT}/flickr30k_class_name.txt"          # the original's, shipped with the project
DEFAULT_ENTITIES = f"{ROOT}/flickr30k_entities"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entities_dir", default=DEFAULT_ENTITIES,
                   help="Flickr30k Entities: the folder holding Sentences/ and Annotations/")
    p.add_argument("--split_dir", default="",
                   help="the folder of Entities' train.txt / val.txt / test.txt (default: --entities_dir)")
    p.add_argument("--input_json", default="",
                   help="Karpathy's dataset_flickr30k.json: take the split from it (the original's) instead "
                        "of Entities' lists; its other images are split 'rest'")
    p.add_argument("--original_dic", default="", help="the original's dic_flickr30k.json (with --original_cap)")
    p.add_argument("--original_cap", default="",
                   help="the original's cap_flickr30k.json: convert these instead of reading Entities")
    p.add_argument("--image_path", default=f"{ROOT}/images",
                   help="with the original's files: the images, whose sizes the instances record")
    p.add_argument("--class_name_file", "--input_class_name", dest="class_name_file", default=DEFAULT_CLASS_FILE,
                   help="class-name file (default: the original's 480 classes, shipped in the project)")
    p.add_argument("--word_count_threshold", type=int, default=3,
                   help="keep words seen MORE than this many times in the training captions (3: the "
                        "original's Flickr30k value); the others read as UNK")
    p.add_argument("--output_dic_json", "--output_dic", dest="output_dic", default=f"{ROOT}/dic_flickr30k.json",
                   help="the dic file to write")
    p.add_argument("--output_cap_json", "--output_cap", dest="output_cap", default=f"{ROOT}/cap_flickr30k.json",
                   help="the caption file to write (grounded captions)")
    p.add_argument("--output_instances", default=f"{ROOT}/instances_flickr30k.json",
                   help="the COCO-style instances file of the entities' boxes to write")
    p.add_argument("--output_df", default=f"{ROOT}/flickr30k-train-df.json",
                   help="CIDEr-D document frequencies of the training captions ('' = not written)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (shown on a terminal only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.class_name_file = shipped_if_default(args.class_name_file, DEFAULT_CLASS_FILE)
    try:
        run(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run(args) -> dict:
    classes = ClassNames.read(args.class_name_file)
    matcher = VisualWordMatcher(classes)
    if bool(args.original_dic) != bool(args.original_cap):
        raise DataError("give both --original_dic and --original_cap (the original's two Flickr30k files)")
    if args.original_cap:
        _check_outputs(args)
        images = read_original(args.original_dic, args.original_cap, classes, args.image_path)
        print(_agreement(images, matcher, args.original_cap))
    else:
        require_release(args.entities_dir)
        order = read_karpathy_split(args.input_json, args.entities_dir) if args.input_json else \
            split_lists(args.split_dir or args.entities_dir)
        images = read_entities(args.entities_dir, order, matcher, progress=_progress(args))
    records = [{"id": im.id, "file_path": im.file_path, "split": im.split, "captions": im.captions} for im in images]
    cap = [[{"tokens": toks, "refs": [[m.pos, m.entity] for m in mentions]}
            for toks, mentions in zip(im.captions, im.mentions)] for im in images]
    instances = instances_record(images, classes)
    dic = write_outputs(args, records, classes, matcher, held_out=[], split_scheme="normal", cap_records=cap)
    atomic_write_json(args.output_instances, instances)
    n_words = sum(len(m) for im in images for m in im.mentions)
    unsized = sum(im.size is None for im in images)
    print(f"{args.output_instances}: {len(instances['annotations'])} boxes of the entities {n_words} visual "
          f"words name, in {len(images)} images"
          + (f" ({unsized} without their size: --image_path has no such files)" if unsized else ""))
    return dic


def instances_record(images: list[GroundedImage], classes: ClassNames) -> dict:
    """COCO-style instances: per image, each box of each named entity once per class its visual
    words name it by, with attributes {entity: the chain id, kind: the class's word its captions
    use most often (ties: the first used)}. Category ids are the class indices 1..C."""
    cls_of = classes.word_to_class()
    out = {"images": [], "annotations": [],
           "categories": [{"id": c, "name": n} for c, n in enumerate(classes.names, 1)]}
    for im in images:
        if im.size is not None:
            out["images"].append({"id": im.id, "file_name": im.file_path, "width": im.size[0], "height": im.size[1]})
        named: dict[tuple[str, int], Counter] = {}
        for m in (m for mentions in im.mentions for m in mentions):
            named.setdefault((m.entity, cls_of[m.word]), Counter())[m.word] += 1
        for (entity, cls), words in named.items():
            kind = max(words, key=words.get)
            for x1, y1, x2, y2 in im.boxes[entity]:
                out["annotations"].append({
                    "id": len(out["annotations"]) + 1, "image_id": im.id, "category_id": cls,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                    "attributes": {"entity": entity, "kind": kind}})
    return out


def _agreement(images: list[GroundedImage], matcher: VisualWordMatcher, cap_path: str) -> str:
    """How many of the original's visual words are visual words of the same class here (the others
    - lemmas the original's CoreNLP matched, such as "skiing" for ski - are read as text)."""
    cls_of = matcher.classes.word_to_class()
    total, kept, lost = 0, 0, Counter()
    for im in images:
        for toks, mentions in zip(im.captions, im.mentions):
            found = {v.pos: v.cls for v in matcher.match(toks)}
            for m in mentions:
                total += 1
                if found.get(m.pos) == cls_of[m.word]:
                    kept += 1
                else:
                    lost[f"{toks[m.pos]} as {m.word}"] += 1
    examples = ", ".join(w for w, _ in lost.most_common(3))
    return (f"{cap_path}: {kept} of {total} visual words are visual words here too"
            + (f"; the others are read as text (e.g. {examples})" if lost else ""))


def _check_outputs(args) -> None:
    inputs = {Path(args.original_dic).resolve(), Path(args.original_cap).resolve()}
    for flag, path in (("--output_dic", args.output_dic), ("--output_cap", args.output_cap)):
        if Path(path).resolve() in inputs:
            raise DataError(f"{flag} {path} is one of the original's files being converted: move them (e.g. to "
                            f"{ROOT}/original/) or write elsewhere")


def _progress(args):
    quiet = args.quiet
    return lambda xs, **kw: tqdm(xs, disable=quiet or None, mininterval=1, **kw)


if __name__ == "__main__":
    sys.exit(main())
