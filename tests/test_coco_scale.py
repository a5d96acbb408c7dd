"""The COCO-scale benchmark's code path (benchmarks/coco_scale.py) on 500 images: synthetic data
of COCO's shape, prepro, two start-ups (the second from the caches), a pass over every training
image through 2 forked workers, and the loader at COCO's image size. No timing is asserted."""
import json
import sys

import h5py
import numpy as np

from conftest import COCO_MINI, ROOT, needs_coco_mini

sys.path.insert(0, str(ROOT / "benchmarks"))
import coco_scale  # noqa: E402

pytestmark = needs_coco_mini


def test_coco_scale_code_path_on_500_images(tmp_path):
    from nbt.prepro import prepro_dic_coco
    data = coco_scale.generate(tmp_path / "coco_scale", n_images=500, coco_mini=COCO_MINI, quiet=True)
    karpathy = json.loads((data / "dataset_coco.json").read_text())["images"]
    assert len(karpathy) == 500 and all(len(im["sentences"]) == 5 for im in karpathy)
    splits = [im["split"] for im in karpathy]
    assert [splits.count(s) for s in ("train", "restval", "val", "test")] == [336, 124, 20, 20]     # COCO's proportions
    boxes = json.loads((data / "dataset_info.json").read_text())["boxes"]
    assert 6 * 500 < boxes < 9 * 500                      # COCO: ~7.3 boxes per image
    with h5py.File(data / "coco_detection.h5") as f:
        dets = f["dets_labels"][:]
        assert dets.shape == (500, 100, 6) and (np.diff(dets[..., 5], axis=1) <= 0).all()

    assert prepro_dic_coco.main(coco_scale.prepro_args(data)) == 0
    first = coco_scale.child_startup(data, ROOT)
    assert (data / "dic_coco.boxes.npz").is_file() and (data / "dic_coco.captions.npz").is_file()
    second = coco_scale.child_startup(data, ROOT)
    assert first["train_images"] == second["train_images"] == 336 + 124
    print(f"\nstart-up: {first['seconds']:.2f}s, then {second['seconds']:.2f}s from the caches")

    coco_scale.ensure_images(data)
    w = coco_scale.child_workers(data, ROOT, workers=2, batch_size=50)
    assert w["images"] == 460 and len(w["workers"]) == 2
    assert sum(v["images"] for v in w["workers"].values()) == 460
    assert all(v["uss_last"] > 0 for v in w["workers"].values())
    assert w["grounded"] > 0.9 * w["visual_words"] > 0.9 * 460     # the detections hold the GT boxes
    print("workers:", {pid: (v["uss_first"] >> 20, v["uss_last"] >> 20) for pid, v in w["workers"].items()}, "MiB")

    loader = coco_scale.child_loader(data, ROOT, workers=0, images=40, batch_size=20)
    assert loader["images"] == 20 and loader["batch_shape"] == [20, 3, 512, 512]
    assert loader["proposals"] == [20, 100, 6]
