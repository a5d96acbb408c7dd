"""CNN backbones: image (B, 3, H, W) -> conv map (B, D, H/stride, W/stride).

- res101 (the paper's), res50, res18: torchvision ResNets up to layer4 (stride 32).
- vgg16: torchvision VGG16 features minus the last max-pool (stride 16, 512 channels).
- inception_v3: up to Mixed_7c (2048 channels). Its convolutions are unpadded, so the map is
  (H - 75) / 32 + 1 cells, not H / 32: a box maps to the cells at stride 32 up to that offset of
  about a cell. Needs inputs of at least 75 pixels. Its torchvision weights expect pixels in
  [-1, 1], so the ImageNet-normalised input is mapped to that first (as torchvision's own
  `transform_input` does).
- densenet121 (1024 channels) / densenet161 (2208): the dense blocks and the final BatchNorm +
  ReLU (stride 32).
- tiny: a small trainable CNN (stride 8) for the built-in world on a CPU; not in the original.

Every BatchNorm of a pretrained backbone is frozen (FrozenBatchNorm2d). The network is a stem and
blocks (ResNet: layer1-4; DenseNet: dense block + transition 1-4; Inception: Mixed_5, 6, 7);
`fixed_block` k freezes the stem and the first k blocks; without --finetune_cnn everything is
frozen (the original forced fixed_block = 4).

Weights (misc/weights.py): a local file (`cnn_weights`, a torchvision state dict) or, when empty
and `pretrained_cnn` is True, the torchvision weight enum (downloaded once into the torch hub
cache); `pretrained_cnn False` starts from random weights.
"""
from __future__ import annotations

import re

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from nbt.misc.io import DataError
from nbt.misc.weights import download_state_dict, read_state_dict

SPECS = {  # name: (constructor, weight enum, channels, stride)
    "res101": ("resnet101", "ResNet101_Weights", 2048, 32),
    "res50": ("resnet50", "ResNet50_Weights", 2048, 32),
    "res18": ("resnet18", "ResNet18_Weights", 512, 32),
    "vgg16": ("vgg16", "VGG16_Weights", 512, 16),
    "inception_v3": ("inception_v3", "Inception_V3_Weights", 2048, 32),
    "densenet121": ("densenet121", "DenseNet121_Weights", 1024, 32),
    "densenet161": ("densenet161", "DenseNet161_Weights", 2208, 32),
}
# torchvision's DenseNet files name a layer's parts `norm.1`, where the module has `norm1`
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class TinyCNN(nn.Module):
    """Six 3x3 conv layers with BatchNorm, trained from scratch (GroupNorm learned the
    fine-grained kinds much more slowly on the world). Under DDP on GPUs it becomes
    SyncBatchNorm, so the statistics are those of the global batch.

    Output: the last layer's map plus the first block's map averaged down to the same grid
    (channels + channels // 4). Trained from scratch, the deep layers specialise to shape and drop
    colour, which the captions need ("two red rings"): a linear probe reads an object's colour
    far less often from RoI-pooled last-layer features after training than from the first block.
    ImageNet-pretrained backbones keep colour; this skip does the same for the tiny one."""

    def __init__(self, channels: int = 128):
        super().__init__()
        c = channels

        def block(i, o, s):
            return [nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*block(3, c // 4, 2))
        self.body = nn.Sequential(*block(c // 4, c // 2, 1), *block(c // 2, c // 2, 2),
                                  *block(c // 2, c, 1), *block(c, c, 2), *block(c, c, 1))
        self.out_channels = c + c // 4

    def forward(self, x):
        low = self.stem(x)                                                 # (B, c/4, H/2, W/2)
        deep = self.body(low)                                              # (B, c, H/8, W/8)
        low = nn.functional.adaptive_avg_pool2d(low, deep.shape[-2:])      # (B, c/4, H/8, W/8)
        return torch.cat([deep, low], 1)


class InceptionInput(nn.Module):
    """ImageNet-normalised RGB -> the [-1, 1] pixels torchvision's Inception v3 weights expect."""

    def __init__(self):
        super().__init__()
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        self.register_buffer("scale", (std / 0.5).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean - 0.5) / 0.5).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return x * self.scale + self.shift                                 # (B, 3, H, W)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d replaced by a FrozenBatchNorm2d with its statistics and affine weights."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def _blocks(name: str, net: nn.Module) -> list[nn.Module]:
    """A stem followed by the blocks that `fixed_block` counts."""
    if name.startswith("res"):
        return [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), net.layer1, net.layer2,
                net.layer3, net.layer4]
    if name == "inception_v3":
        return [nn.Sequential(InceptionInput(), net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3,
                              net.maxpool1, net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, net.maxpool2),
                nn.Sequential(net.Mixed_5b, net.Mixed_5c, net.Mixed_5d),
                nn.Sequential(net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e),
                nn.Sequential(net.Mixed_7a, net.Mixed_7b, net.Mixed_7c)]
    if name.startswith("densenet"):
        f = net.features
        return [nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0),
                nn.Sequential(f.denseblock1, f.transition1), nn.Sequential(f.denseblock2, f.transition2),
                nn.Sequential(f.denseblock3, f.transition3), nn.Sequential(f.denseblock4, f.norm5, nn.ReLU())]
    return list(net.features.children())[:-1]                                   # vgg16


def _load_weights(name: str, net: nn.Module, *, weights: str, pretrained: bool) -> None:
    ctor, enum, _, _ = SPECS[name]
    if weights:
        state = read_state_dict(weights, what=f"{ctor} CNN", flag="--cnn_weights")
    elif pretrained:
        state = download_state_dict(getattr(torchvision.models, enum).DEFAULT, what=f"{ctor} CNN",
                                    remedy=f"pass --cnn_weights PATH (a torchvision {ctor} state dict) "
                                           "or --pretrained_cnn False (random weights)")
    else:
        return
    if name.startswith("densenet"):
        state = {"".join(m.groups()) if (m := _DENSENET_OLD_KEY.match(k)) else k: v for k, v in state.items()}
    try:
        missing, _ = net.load_state_dict(state, strict=False)
    except RuntimeError as err:                                                 # shape mismatches
        raise DataError(f"{weights or enum}: not {ctor} weights ({str(err).splitlines()[-1].strip()})") from None
    missing = [m for m in missing if not m.startswith(("fc.", "classifier.", "AuxLogits."))]
    if missing:
        raise DataError(f"{weights or enum}: not {ctor} weights (missing {missing[0]})")


class Backbone(nn.Module):
    def __init__(self, name: str, *, weights: str = "", pretrained: bool = True, finetune: bool = False,
                 fixed_block: int = 1, tiny_channels: int = 128):
        super().__init__()
        self.name = name
        if name == "tiny":
            self.body, self.stride = TinyCNN(tiny_channels), 8
            self.out_channels = self.body.out_channels
            self.trainable = True
            return
        if name not in SPECS:
            raise ValueError(f"unknown cnn_backend '{name}' (choose from tiny, {', '.join(SPECS)})")
        ctor, _, self.out_channels, self.stride = SPECS[name]
        kwargs = {"aux_logits": False, "init_weights": False} if name == "inception_v3" else {}
        net = getattr(torchvision.models, ctor)(weights=None, **kwargs)
        _load_weights(name, net, weights=weights, pretrained=pretrained)
        self.body = nn.Sequential(*_blocks(name, freeze_batchnorm(net)))
        if name == "vgg16":
            n_frozen = 0 if finetune else len(self.body)
        else:
            n_frozen = 1 + (fixed_block if finetune else len(self.body) - 1)
        for i, block in enumerate(self.body):
            for p in block.parameters():
                p.requires_grad_(i >= n_frozen)
        self.trainable = any(p.requires_grad for p in self.parameters())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.trainable:
            with torch.no_grad():
                return self.body(images)
        return self.body(images)


def build_backbone(opt) -> Backbone:
    return Backbone(opt.cnn_backend, weights=opt.cnn_weights, pretrained=opt.pretrained_cnn,
                    finetune=opt.finetune_cnn, fixed_block=opt.fixed_block,
                    tiny_channels=opt.att_feat_size)
