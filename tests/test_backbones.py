"""CNN backbones: every torchvision one under every captioning model (random weights, small
images), and their weights: a local file, torchvision's enum, or a one-line error offline."""
import urllib.error

import pytest
import torch

from conftest import ROOT, world_options
from nbt.misc.backbone import SPECS, Backbone
from nbt.misc.io import DataError

NEW = ["inception_v3", "densenet121", "densenet161"]
CROP = 80                                          # Inception v3 needs at least 75 pixels


@pytest.fixture
def offline(monkeypatch):
    """torchvision's weight download fails as it does without a network (and is never tried)."""
    from torchvision.models._api import WeightsEnum

    def no_network(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(WeightsEnum, "get_state_dict", no_network)


@pytest.fixture(scope="module")
def backbones():
    """One randomly initialised backbone per name, built once (DenseNet-161 takes seconds)."""
    torch.manual_seed(0)
    return {name: Backbone(name, pretrained=False) for name in NEW}


@pytest.fixture(scope="module")
def world_batch(world_dir):
    from nbt.misc.dataset import CaptionDataset, DataBundle, collate
    opt = world_options(world_dir, image_size=CROP + 8, image_crop_size=CROP)
    bundle = DataBundle.load(opt)
    batches = {}
    for slots in (True, False):     # NBT reads visual words as slots, the plain models as words
        ds = CaptionDataset(bundle, "train", train=False, max_images=2, visual_slots=slots)
        batches[slots] = collate([ds[(i, 0)] for i in range(2)])
    return bundle, batches


@pytest.mark.parametrize("name, channels", [("inception_v3", 2048), ("densenet121", 1024), ("densenet161", 2208)])
def test_new_backbones_give_a_conv_map_and_freeze_like_the_resnets(backbones, name, channels):
    from torchvision.ops import FrozenBatchNorm2d
    net = backbones[name]
    out = net(torch.randn(1, 3, CROP, CROP))
    assert out.shape[:2] == (1, channels) and net.out_channels == channels and net.stride == 32
    assert out.shape[-1] == (CROP - 75) // 32 + 1 if name == "inception_v3" else CROP // 32
    assert not net.trainable and not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())
    tuned = Backbone(name, pretrained=False, finetune=True, fixed_block=2)
    trainable = [i for i, blk in enumerate(tuned.body) if any(p.requires_grad for p in blk.parameters())]
    assert trainable == list(range(3, len(tuned.body)))


UPDOWN_BEAM = pytest.mark.xfail(strict=True, raises=RuntimeError, reason=(
    "beam_search fails on updown_plain for any backbone: its R comes from region_mask, not from the "
    "pointer it does not have (issue 22 fixes it; then this mark must go)"))


@pytest.mark.parametrize("name, att_model", [
    *[("inception_v3", m) for m in ("topdown", "showtell", "aoanet")],                  # its odd map geometry
    pytest.param("inception_v3", "updown_plain", marks=UPDOWN_BEAM),
    ("densenet121", "topdown"), ("densenet161", "aoanet")])
def test_every_captioning_model_runs_on_the_new_backbones(backbones, world_batch, monkeypatch, name, att_model):
    import nbt.misc.captioner
    from nbt.misc.captioner import build_captioner
    from nbt.misc.decoding import beam_search
    bundle, batches = world_batch
    batch = batches[att_model == "topdown"]
    monkeypatch.setattr(nbt.misc.captioner, "build_backbone", lambda o: backbones[o.cnn_backend])
    opt = world_options(ROOT, cnn_backend=name, att_model=att_model, image_crop_size=CROP,
                        finetune_cnn=False, aoa_heads=2, aoa_refine_layers=1)
    torch.manual_seed(0)
    model = build_captioner(opt, vocab_size=bundle.vocab.size, num_classes=bundle.classes.num_classes,
                            fine_class=bundle.classes.fine_class())
    sums = model(batch)
    assert torch.isfinite(sums["words"]) and sums["words"] > 0
    sums["words"].backward()
    model.eval()
    with torch.no_grad():
        decoded = beam_search(model.decoder, model.encode(batch), beam_size=2, max_len=5)
    assert len(decoded) == 2


@pytest.mark.parametrize("name", ["res101", *NEW])
def test_no_cnn_weights_offline_is_one_line_naming_the_flags(offline, name):
    with pytest.raises(DataError) as err:
        Backbone(name, pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and "cannot be downloaded" in msg and SPECS[name][0] in msg
    assert "--cnn_weights PATH" in msg and "--pretrained_cnn False" in msg


def test_the_coco_config_offline_fails_in_one_line_at_the_cnn(offline):
    """cfgs/normal_coco_res101.yml asks for ImageNet ResNet-101 weights from torchvision."""
    from nbt.misc.captioner import build_captioner
    from nbt.misc.config import build_options
    opt = build_options(["--path_opt", str(ROOT / "cfgs" / "normal_coco_res101.yml")])
    assert opt.cnn_backend == "res101" and opt.pretrained_cnn and not opt.cnn_weights
    with pytest.raises(DataError, match=r"no resnet101 CNN weights: resnet101-\w+\.pth is not in .*--cnn_weights PATH"):
        build_captioner(opt, vocab_size=10, num_classes=80, fine_class=[0] * 10)


def test_torchvision_weight_files_load_including_densenet_old_key_names(tmp_path, backbones):
    import re
    import torchvision
    net = torchvision.models.densenet121(weights=None)
    torch.nn.init.constant_(net.features.denseblock1.denselayer1.norm1.weight, 0.25)
    state = net.state_dict()     # torchvision's own files name these 'norm.1' (see misc/backbone.py)
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}
    assert any(".norm.1." in k for k in old)
    torch.save(old, tmp_path / "densenet121.pth")
    loaded = Backbone("densenet121", weights=str(tmp_path / "densenet121.pth"))
    assert float(loaded.body[1][0].denselayer1.norm1.weight[0]) == 0.25
    inception = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(inception.state_dict(), tmp_path / "inception.pth")          # with its AuxLogits head
    Backbone("inception_v3", weights=str(tmp_path / "inception.pth"))
    with pytest.raises(DataError, match="not densenet121 weights"):
        Backbone("densenet121", weights=str(tmp_path / "inception.pth"))
    (tmp_path / "broken.pth").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="broken.pth: not a readable weights file .*--cnn_weights"):
        Backbone("inception_v3", weights=str(tmp_path / "broken.pth"))
