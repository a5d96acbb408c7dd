"""CNN backbones: image (B, 3, H, W) -> conv map (B, D, H/stride, W/stride).

- res101 (the paper's), res50, res18: torchvision ResNets up to layer4 (stride 32).
- res50_caffe, res101_caffe, res152_caffe: the original's own ResNet (its misc/resnet.py, "Caffe
  style"): each bottleneck's stride on its first 1x1 conv (torchvision: on the 3x3), and a
  ceil-mode max-pool without padding. Same parameter names and shapes as torchvision's, so
  torchvision's weight files load into it, but they compute another function: it needs the
  weights it was trained with (`cnn_weights`: the original's data/imagenet_weights/resnet101.pth,
  or a converted checkpoint of the original). Its width follows att_feat_size (channels =
  att_feat_size, 2048 for the real network).
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


CAFFE_DEPTHS = {"res50_caffe": (3, 4, 6, 3), "res101_caffe": (3, 4, 23, 3), "res152_caffe": (3, 8, 36, 3)}


class CaffeBottleneck(nn.Module):
    """A ResNet bottleneck with its stride on the first 1x1 conv (the original's misc/resnet.py)."""
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class CaffeResNet(nn.Module):
    """The original's ResNet up to layer4 (stride 32), `width` channels after the stem (64 for the
    real network; the output has 32 * width)."""

    def __init__(self, layers: tuple[int, ...], width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
        inplanes = width
        for i, blocks in enumerate(layers):
            planes, stride = width * 2 ** i, 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != planes * 4:
                down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                     nn.BatchNorm2d(planes * 4))
            mods = [CaffeBottleneck(inplanes, planes, stride, down)]
            inplanes = planes * 4
            mods += [CaffeBottleneck(inplanes, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*mods))


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


class EvalBatchNorm2d(FrozenBatchNorm2d):
    """A FrozenBatchNorm2d that computes as BatchNorm2d in eval mode (F.batch_norm), operation for
    operation: the Caffe ResNets reproduce the original's network, whose BatchNorm ran in eval
    mode (FrozenBatchNorm2d's x * scale + shift rounds differently: 1e-4 relative after 101 layers)."""

    def forward(self, x):
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                        training=False, eps=self.eps)


def freeze_batchnorm(module: nn.Module, kind: type = FrozenBatchNorm2d) -> nn.Module:
    """Every BatchNorm2d replaced by a frozen one (`kind`) with its statistics and affine weights."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = kind(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child, kind)
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
    if name in CAFFE_DEPTHS:
        if weights:
            _load_caffe_weights(name, net, weights)
        elif pretrained:
            raise DataError(f"cnn_backend {name}: no weights to download for the original's ResNet (torchvision's "
                            "are another network); pass --cnn_weights PATH (the original's "
                            "imagenet_weights/resnet*.pth) or --pretrained_cnn False")
        return
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


def _load_caffe_weights(name: str, net: nn.Module, weights: str) -> None:
    state = read_state_dict(weights, what=f"{name} CNN", flag="--cnn_weights")
    try:
        missing, _ = net.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise DataError(f"{weights}: not {name} weights ({str(err).splitlines()[-1].strip()})") from None
    if missing:
        raise DataError(f"{weights}: not {name} weights (missing {missing[0]})")


class Backbone(nn.Module):
    def __init__(self, name: str, *, weights: str = "", pretrained: bool = True, finetune: bool = False,
                 fixed_block: int = 1, tiny_channels: int = 128):
        """tiny_channels (att_feat_size): the tiny CNN's width, and the Caffe ResNets' output channels."""
        super().__init__()
        self.name = name
        if name == "tiny":
            self.body, self.stride = TinyCNN(tiny_channels), 8
            self.out_channels = self.body.out_channels
            self.trainable = True
            return
        if name in CAFFE_DEPTHS:
            if tiny_channels % 32:
                raise ValueError(f"cnn_backend {name}: att_feat_size {tiny_channels} is not a multiple of 32")
            net = CaffeResNet(CAFFE_DEPTHS[name], tiny_channels // 32)
            self.out_channels, self.stride = tiny_channels, 32
        elif name in SPECS:
            ctor, _, self.out_channels, self.stride = SPECS[name]
            kwargs = {"aux_logits": False, "init_weights": False} if name == "inception_v3" else {}
            net = getattr(torchvision.models, ctor)(weights=None, **kwargs)
        else:
            raise ValueError(f"unknown cnn_backend '{name}' (choose from tiny, {', '.join([*SPECS, *CAFFE_DEPTHS])})")
        _load_weights(name, net, weights=weights, pretrained=pretrained)
        frozen = freeze_batchnorm(net, EvalBatchNorm2d if name in CAFFE_DEPTHS else FrozenBatchNorm2d)
        self.body = nn.Sequential(*_blocks(name, frozen))
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
