"""CNN backbones: image (B, 3, H, W) -> conv map (B, D, H/stride, W/stride).

- res101 (the paper's), res50, res18: torchvision ResNets up to layer4 (stride 32), every
  BatchNorm frozen (FrozenBatchNorm2d). `fixed_block` k freezes the stem and the first k blocks;
  without --finetune_cnn everything is frozen (the original forced fixed_block = 4).
- vgg16: torchvision VGG16 features minus the last max-pool (stride 16, 512 channels).
- tiny: a small trainable CNN (stride 8) for the built-in world on a CPU; not in the original.

Weights: a local file (`cnn_weights`, a torchvision state dict) or, when empty and
`pretrained_cnn` is True, the torchvision weight enum (downloads when online).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from misc.io import DataError

SPECS = {  # name: (constructor, weight enum, channels, stride)
    "res101": ("resnet101", "ResNet101_Weights", 2048, 32),
    "res50": ("resnet50", "ResNet50_Weights", 2048, 32),
    "res18": ("resnet18", "ResNet18_Weights", 512, 32),
    "vgg16": ("vgg16", "VGG16_Weights", 512, 16),
}


class TinyCNN(nn.Module):
    """Six 3x3 conv layers with BatchNorm, trained from scratch (GroupNorm learned the
    fine-grained kinds much more slowly on the world). Under DDP on GPUs it becomes
    SyncBatchNorm, so the statistics are those of the global batch.

    Output: the last layer's map plus the first block's map averaged down to the same grid
    (channels + channels // 4). Trained from scratch, the deep layers specialise to shape and drop
    colour, which the captions need ("two red rings"): a linear probe reads an object's colour
    from RoI-pooled last-layer features 37% of the time after the quick-start training (92% at
    random init, 99% from the first block). ImageNet-pretrained backbones keep colour; this skip
    does the same for the tiny one."""

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
        ctor, enum, self.out_channels, self.stride = SPECS[name]
        kwargs = {"norm_layer": FrozenBatchNorm2d} if name.startswith("res") else {}
        net = getattr(torchvision.models, ctor)(weights=None, **kwargs)
        if weights:
            path = Path(weights)
            if not path.is_file():
                raise DataError(f"CNN weights not found: {path}")
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, _ = net.load_state_dict(state, strict=False)
            if [m for m in missing if not m.startswith(("fc.", "classifier."))]:
                raise DataError(f"{path}: not {ctor} weights (missing {missing[0]})")
        elif pretrained:
            net.load_state_dict(getattr(torchvision.models, enum).DEFAULT.get_state_dict(progress=True),
                                strict=False)
        if name.startswith("res"):
            blocks = [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
                      net.layer1, net.layer2, net.layer3, net.layer4]
            self.body = nn.Sequential(*blocks)
            n_frozen = 1 + (fixed_block if finetune else 4)
        else:
            self.body = nn.Sequential(*list(net.features.children())[:-1])
            n_frozen = 0 if finetune else len(self.body)
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
