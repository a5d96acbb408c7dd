"""The GPU figures script runs end to end before it ever meets a GPU: --smoke (tiny dims, CPU)."""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_gpu_check_smoke_runs_every_section_on_the_cpu(tmp_path, capsys):
    import gpu_check
    out = tmp_path / "figures.json"
    assert gpu_check.main(["--smoke", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    rows = figures["rows"]
    assert figures["meta"]["smoke"] and figures["meta"]["device"] == "cpu"
    assert {(r["section"], r["amp"], r["input"]) for r in rows if r["section"] == "train"} == {
        (s, a, i) for s in ["train"] for a in ("fp32", "bf16") for i in ("raw images", "cached features")}
    assert [r["input"] for r in rows if r["section"] == "eval"] == ["raw images, beam 3",
                                                                    "raw images, CBS 2 constraints, beam 3"]
    assert [r["section"] for r in rows][-1] == "detector"
    assert all(r["status"] == "ok" and r["images_per_s"] > 0 for r in rows)
    assert all(r["epoch_h"] > 0 for r in rows if r["section"] in ("train", "detector"))
    table = capsys.readouterr().out
    assert "images/s" in table and "fasterrcnn_resnet50_fpn_v2" in table and str(out) in table


def test_gpu_check_without_cuda_says_so(tmp_path, capsys, monkeypatch):
    import gpu_check
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)       # a machine without a GPU, everywhere
    assert gpu_check.main(["--out", str(tmp_path / "x.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
