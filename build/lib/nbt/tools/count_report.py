"""How well a run counts: for every grounded visual word of an evaluation file, the size of the
pointed object's group (same category and attributes, from the instances file) against the
plural head's choice and the number word said before the phrase.

    python tools/count_report.py eval_results/world_test.json data/world/annotations/instances_world.json
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "several": "several"}


def iou(a: list[float], b: list[float]) -> float:
    """a: COCO [x, y, w, h]; b: [x1, y1, x2, y2]."""
    ix = max(0.0, min(a[0] + a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def report(results: dict, instances: dict) -> dict:
    cats = {c["id"]: c["name"] for c in instances["categories"]}
    objects: dict[int, list[dict]] = {}
    for a in instances["annotations"]:
        objects.setdefault(a["image_id"], []).append(a)

    def group_key(o):
        return o["category_id"], tuple(sorted(o.get("attributes", {}).items()))

    plural = Counter()        # (group has > 1 member, plural head said plural)
    number = Counter()        # (group size, number said before the phrase or None)
    for p in results["imgToEval"]:
        objs = objects.get(p["image_id"], [])
        words = p["caption"].split()
        for g in p["grounding"]:
            same = [o for o in objs if cats[o["category_id"]] == g["class"]]
            if not same:
                continue
            best = max(same, key=lambda o: iou(o["bbox"], g["box"]))
            if iou(best["bbox"], g["box"]) < 0.5:
                continue
            size = sum(group_key(o) == group_key(best) for o in objs)
            plural[(size > 1, bool(g["plural"]))] += 1
            # the phrase is [number] [colour] noun: the number is one or two words before the noun
            said = next((NUMBER_WORDS[w] for w in reversed(words[max(0, g["position"] - 2):g["position"]])
                         if w in NUMBER_WORDS), None)
            number[(size, said)] += 1
    n = sum(plural.values())
    matched = sum(c for (size, said), c in number.items() if said == size or (said == "several" and size > 1))
    return {"grounded_words": n,
            "plural_accuracy": (plural[(False, False)] + plural[(True, True)]) / n if n else None,
            "number_matches_group": matched / n if n else None,
            "by_group_size": {size: {str(said): c for (s, said), c in sorted(number.items(), key=str) if s == size}
                              for size in sorted({s for s, _ in number})}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="eval_results/<id>_<split>.json")
    p.add_argument("instances", help="COCO-style instances json with per-object attributes")
    args = p.parse_args(argv)
    try:
        with open(args.results) as f:
            results = json.load(f)
        with open(args.instances) as f:
            instances = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report(results, instances), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
