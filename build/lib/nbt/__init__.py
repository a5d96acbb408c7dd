"""nbt: Neural Baby Talk (Lu et al., CVPR 2018) on current PyTorch.

The checkout's folders are the package's subpackages: nbt.misc (model, data, decoding,
evaluation, training), nbt.pooling (RoIAlign), nbt.prepro (data preparation), nbt.tools (web
page, reports); nbt.main and nbt.demo are the two commands (also `nbt-train`, `nbt-demo`,
`nbt-web` once installed). The captioning API: `from nbt.misc.api import NBTCaptioner`.
"""
__version__ = "0.2.0"
