"""The torchvision ResNet backbone, split where SANet inserts its AFE module (paper section 3.1).

The trunk (stem to layer3) is shared by every branch and ends at stride 16 (1024 channels and 24 x 8 for ResNet-50
at 384 x 128). `layer4` is returned separately: it is not run as such, but copied, with its last stride set to 1, into
each of the five MFE branches (section 3.2), so every branch starts from the pretrained layer4.

Weights (`model.pretrained`):
- `imagenet`: torchvision's own file, read only from torch's hub cache, `$TORCH_HOME/hub/checkpoints/<file>`
  (default `~/.cache/torch/hub/checkpoints/`), exactly where `torchvision.models.resnet50(weights=...)` would put it.
  Nothing is ever downloaded: a missing file raises `WeightsError` naming the path and the file to place there.
- a path: a state dict saved with `torch.save` (a plain ResNet state dict, or one wrapped under `state_dict` or
  `model`), loaded with `weights_only=True`. The classifier (`fc.*`) may be absent; any other missing, unexpected
  or mis-shaped key is a `WeightsError`.
- `none`: torchvision's random initialisation (training from scratch).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import (
    ResNet,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    resnet18,
    resnet34,
    resnet50,
)
from torchvision.models.resnet import BasicBlock, Bottleneck

from sanet.model.errors import WeightsError

_CONSTRUCTORS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}
_WEIGHTS: dict[str, Any] = {"resnet18": ResNet18_Weights, "resnet34": ResNet34_Weights, "resnet50": ResNet50_Weights}
BACKBONES: tuple[str, ...] = tuple(_CONSTRUCTORS)


@dataclass(eq=False)
class Backbone:
    """A ResNet cut after layer3.

    Attributes:
        trunk: stem, layer1, layer2, layer3 (output stride 16), shared by all branches.
        layer4: the original layer4 (stride 2), the initialisation of every MFE branch.
        trunk_channels: channels of the layer3 output (1024 for ResNet-50, 256 for ResNet-18/34).
        out_channels: channels of the layer4 output (2048 for ResNet-50, 512 for ResNet-18/34).
    """

    trunk: nn.Sequential
    layer4: nn.Sequential
    trunk_channels: int
    out_channels: int


def imagenet_weights_file(backbone: str, version: str = "IMAGENET1K_V1") -> Path:
    """Where torchvision keeps its ImageNet weights for `backbone`: `torch.hub.get_dir()/checkpoints/<file name>`.

    `torch.hub.get_dir()` is `$TORCH_HOME/hub` (default `~/.cache/torch/hub`); the file name is the last part of the
    torchvision weight URL, e.g. `resnet50-0676ba61.pth` (IMAGENET1K_V1) or `resnet50-11ad3fa6.pth` (V2).
    """
    enum = _WEIGHTS[backbone]
    if version not in enum.__members__:
        raise WeightsError(f"{backbone} has no torchvision weights {version}; allowed: {', '.join(enum.__members__)}")
    url = enum[version].url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _weights_url(backbone: str, version: str) -> str:
    return str(_WEIGHTS[backbone][version].url)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict file safely (`weights_only=True`), unwrapping `state_dict`/`model` and a DDP `module.`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} not found")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and unsafe-type errors alike: the file is not a usable state dict
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path} is not a readable state dict file: {reason}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    state = dict(loaded)
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def _short(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_resnet_weights(net: ResNet, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `net`; `fc.*` may be missing, every other key must match by name and shape."""
    expected = net.state_dict()
    required = [k for k in expected if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    missing = [k for k in required if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys ({_short(missing)})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys ({_short(unexpected)})")
    if wrong_shape:
        problems.append(f"shape mismatch in {len(wrong_shape)} keys ({_short(wrong_shape, 2)})")
    if problems:
        raise WeightsError(f"{source} does not fit a torchvision {type(net).__name__}: " + "; ".join(problems))
    net.load_state_dict(state, strict=False)


def last_stride_one(layer: nn.Sequential) -> nn.Sequential:
    """A copy of a ResNet stage whose first block does not downsample (the ReID 'last stride 1' trick)."""
    layer = copy.deepcopy(layer)
    block = layer[0]
    if isinstance(block, Bottleneck):
        block.conv2.stride = (1, 1)  # torchvision's ResNet v1.5 strides in the 3x3 conv
    elif isinstance(block, BasicBlock):
        block.conv1.stride = (1, 1)
    else:
        raise TypeError(f"unsupported block type {type(block).__name__}")
    block.stride = 1
    if block.downsample is not None:
        block.downsample[0].stride = (1, 1)
    return layer


def fresh_stage(like: nn.Sequential, in_channels: int, out_channels: int) -> nn.Sequential:
    """A randomly initialised stage with `like`'s block type and count, stride 1 and `out_channels` output channels.

    `model.mfe.width`: a branch narrower than layer4 for training from scratch, where a copy of layer4 brings no
    weights worth keeping and costs most of the compute (five 512-channel stages against one trunk in ResNet-18).
    Initialised as torchvision initialises a ResNet (He normal convolutions, unit BatchNorm).
    """
    block_type = cast("type[BasicBlock] | type[Bottleneck]", type(like[0]))  # checked just below
    if block_type not in (BasicBlock, Bottleneck):
        raise TypeError(f"unsupported block type {block_type.__name__}")
    expansion = block_type.expansion
    if out_channels % expansion:
        raise ValueError(f"{block_type.__name__} stages need a multiple of {expansion} channels, got {out_channels}")
    planes = out_channels // expansion
    blocks: list[nn.Module] = []
    for index in range(len(like)):
        inputs = in_channels if index == 0 else out_channels
        downsample = None
        if inputs != out_channels:
            downsample = nn.Sequential(nn.Conv2d(inputs, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        blocks.append(block_type(inputs, planes, downsample=downsample))
    stage = nn.Sequential(*blocks)
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return stage


def build_backbone(name: str, pretrained: str = "none", imagenet_weights: str = "IMAGENET1K_V1") -> Backbone:
    """Build a torchvision ResNet, load its weights as `pretrained` says, and cut it after layer3.

    Raises:
        WeightsError: `imagenet` and the torchvision file is absent (the message names the exact path), or a weight
            file that is unreadable or does not match the architecture.
    """
    if name not in _CONSTRUCTORS:
        raise ValueError(f"unknown backbone {name!r}; allowed: {', '.join(BACKBONES)}")
    net: ResNet = _CONSTRUCTORS[name](weights=None)
    if pretrained == "imagenet":
        path = imagenet_weights_file(name, imagenet_weights)
        if not path.is_file():
            raise WeightsError(
                f"ImageNet weights for {name} ({imagenet_weights}) not found at {path}. Nothing is downloaded at run "
                f"time: put torchvision's file {path.name} (from {_weights_url(name, imagenet_weights)}) there "
                f"($TORCH_HOME moves the folder), or set model.pretrained to a weight file or to none"
            )
        load_resnet_weights(net, read_state_dict(path), str(path))
    elif pretrained != "none":
        load_resnet_weights(net, read_state_dict(pretrained), str(pretrained))
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
    trunk_channels = _out_channels(net.layer3)
    return Backbone(trunk, net.layer4, trunk_channels, _out_channels(net.layer4))


def _out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    bn = cast(nn.BatchNorm2d, last.bn3 if isinstance(last, Bottleneck) else last.bn2)
    return int(bn.num_features)
