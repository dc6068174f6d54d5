"""Adaptive Feature Enhancement (AFE, paper section 3.1, Eqs. 1-3): dynamic routing over three scales.

The module sits between layer3 and the MFE branches. It has `layers` layers of up to three cells, one per scale
(stride 8, 16, 32 of the input image; scale index 0, 1, 2). Each cell

1. sums what reaches it from the previous layer, f = sum_i h_i (Eq. 1's input),
2. scores its paths (up = to the finer scale, keep, down = to the coarser scale; the stride-8 cell has no up path
   and the stride-32 cell no down path) with alpha = GumbelSoftmax(MaxPool(Conv1x1(f))) (Eq. 1),
3. refines f with a `kernel` x `kernel` conv, BN, ReLU (Eq. 2),
4. sends alpha_p * T_p(refined) along every path p to the next layer (Eq. 3).

Training draws alpha with Gumbel-softmax (`temperature`). With soft weights (`hard: false`) every cell the topology
reaches is computed for the whole batch, so every gate receives a gradient. With `hard: true` each image follows
the one path of its straight-through one-hot sample, as at eval: a cell computes (and its BatchNorm normalises) only
the images that reach it, and the sample's soft gradient trains the gates. In eval the adaptive variant takes
the argmax path of every cell, without noise (section 3.3), so each image follows exactly one chain of cells; a cell
is computed only for the images that reach it, and not at all when no image of the batch does. The `fixed_fe`
ablation (Table 3) has no gates: every path is always taken with weight 1, in training and eval alike.

Choices the paper leaves open, all parameters (`model.afe.*`):
- Entry: layer3's output (stride 16) enters the stride-16 cell of the first layer through a 1x1 conv, as the stem
  of Dynamic Routing (Li et al., CVPR 2020) enters its first cell; the first layer therefore has that single cell,
  and the later layers all three.
- Widths (`width`): Dynamic Routing's, doubling per downsampling: width, 2 x width, 4 x width channels at stride 8,
  16, 32 (width 128 gives its 128/256/512). With these widths a refinement conv costs the same at every scale.
- Transforms: up = 1x1 conv, BN, ReLU, then bilinear upsampling; keep = identity; down = 3x3 conv with stride 2,
  BN, ReLU. The gate's MaxPool is a global max pool, so alpha is one score per path and image.
- Output: the last layer's cells route into three output slots; each is projected to layer3's width by a 1x1 conv
  and BN, resampled to stride 16 (average pooling from stride 8, bilinear from stride 32), and the three are summed.
- `residual`: the sum is added to the layer3 features, relu(x + afe(x)), with the output BNs' scale initialised to
  zero, so that at initialisation the pretrained layer4 copies see exactly the layer3 features they were trained on
  (the zero-init of Goyal et al.); without it the output is relu(afe(x)) and the BNs are initialised as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from collections.abc import Mapping

SCALES: tuple[int, ...] = (8, 16, 32)
"""Strides of the three cells of a layer; a cell's scale index is its position here."""

PATHS: tuple[str, ...] = ("up", "keep", "down")
"""Path names; a path's index is its value in routing read-outs. Path p goes from scale s to scale s + p - 1."""

UP, KEEP, DOWN = 0, 1, 2
NOT_REACHED = -1
"""Routing value of a cell that an image does not reach."""

_ENTRY_SCALE = SCALES.index(16)


class AFEOutput(NamedTuple):
    """What the AFE returns.

    Attributes:
        features: (B, C3, H/16, W/16), the scale-adaptive features, same shape as the layer3 input.
        path_weights: (B, layers, 3 cells, 3 paths) float: the alpha each cell applied to each path for each image
            (training: the Gumbel sample; eval: one-hot for the adaptive variant; ones for `fixed_fe`); 0 for paths a
            cell does not have and for cells an image does not reach.
        reached: (B, layers, 3) bool: which cells were computed for each image.
    """

    features: Tensor
    path_weights: Tensor
    reached: Tensor


def routing_from(path_weights: Tensor, reached: Tensor) -> Tensor:
    """(B, layers, 3) int64: the path each cell chose per image (UP, KEEP or DOWN), NOT_REACHED where not reached.

    For the adaptive variant in eval this is the route taken (the paper's Figure 4a); in training it is the path
    with the largest sampled weight.
    """
    chosen = path_weights.argmax(dim=-1)
    return torch.where(reached, chosen, torch.full_like(chosen, NOT_REACHED))


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Cell(nn.Module):
    """One scale cell: gate (Eq. 1), refinement (Eq. 2) and the scale transforms of its paths (Eq. 3).

    Args:
        scale: scale index (0, 1, 2 for stride 8, 16, 32).
        channels: channels at each of the three scales.
        kernel: refinement kernel size (odd).
        gated: whether the cell scores its paths (the adaptive variant) or takes them all (`fixed_fe`).
    """

    def __init__(self, scale: int, channels: tuple[int, int, int], kernel: int, gated: bool) -> None:
        super().__init__()
        self.scale = scale
        self.paths: tuple[int, ...] = tuple(p for p in (UP, KEEP, DOWN) if 0 <= scale + p - 1 < len(SCALES))
        c = channels[scale]
        self.gate = nn.Conv2d(c, len(self.paths), 1) if gated else None
        self.refine = _conv_bn_relu(c, c, kernel)
        transforms: dict[str, nn.Module] = {}
        for p in self.paths:
            target = channels[scale + p - 1]
            if p == UP:
                transforms[PATHS[p]] = _conv_bn_relu(c, target, 1)  # then bilinear upsampling in `transform`
            elif p == DOWN:
                transforms[PATHS[p]] = _conv_bn_relu(c, target, 3, stride=2)
            else:
                transforms[PATHS[p]] = nn.Identity()
        self.transforms = nn.ModuleDict(transforms)

    def gate_logits(self, f: Tensor) -> Tensor:
        """(n, paths) path scores before the Gumbel-softmax: MaxPool(Conv1x1(f)) with a global max pool."""
        assert self.gate is not None, "a fixed cell has no gate"
        return self.gate(f).amax(dim=(2, 3))

    def transform(self, path: int, refined: Tensor, size: tuple[int, int]) -> Tensor:
        """T_path(refined), resampled to `size`, the feature size of the target scale."""
        out = self.transforms[PATHS[path]](refined)
        if path == UP:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out


class AFE(nn.Module):
    """The AFE module: `layers` layers of scale cells on the layer3 output (see the module docstring).

    Args:
        in_channels: layer3's channels (1024 for ResNet-50); the output has the same.
        layers: number of layers (paper 5; Table 4: 3, 7).
        kernel: refinement kernel (paper 3; Table 4: 1, 5).
        width: channels of the stride-8 cells; 2x at stride 16, 4x at stride 32.
        adaptive: Gumbel-softmax routing (`sanet`) if True, all paths always on (`fixed_fe`) if False.
        temperature: Gumbel-softmax temperature in training; `temperature` may be changed later (a schedule).
        hard: straight-through one-hot samples in training instead of soft weights.
        residual: relu(x + afe(x)) with zero-initialised output BNs instead of relu(afe(x)).
    """

    def __init__(
        self,
        in_channels: int,
        layers: int = 5,
        kernel: int = 3,
        width: int = 128,
        adaptive: bool = True,
        temperature: float = 1.0,
        hard: bool = False,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if layers < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"need layers >= 1 and an odd kernel, got layers={layers}, kernel={kernel}")
        self.channels: tuple[int, int, int] = (width, 2 * width, 4 * width)
        self.num_layers = layers
        self.adaptive = adaptive
        self.temperature = float(temperature)
        self.hard = hard
        self.residual = residual
        self.entry = _conv_bn_relu(in_channels, self.channels[_ENTRY_SCALE], 1)
        self.cells = nn.ModuleList()
        for layer in range(layers):
            scales = (_ENTRY_SCALE,) if layer == 0 else tuple(range(len(SCALES)))
            self.cells.append(nn.ModuleDict({str(s): Cell(s, self.channels, kernel, adaptive) for s in scales}))
        self.heads = nn.ModuleList(_conv_bn_relu(c, in_channels, 1, relu=False) for c in self.channels)
        if residual:
            for head in self.heads:
                nn.init.zeros_(cast(nn.BatchNorm2d, cast(nn.Sequential, head)[1]).weight)

    @staticmethod
    def _sizes(x: Tensor) -> tuple[tuple[int, int], ...]:
        h, w = x.shape[-2:]
        return (2 * h, 2 * w), (h, w), ((h - 1) // 2 + 1, (w - 1) // 2 + 1)  # what the stride-2 convs produce

    def _output(self, slot: int, f: Tensor, size: tuple[int, ...]) -> Tensor:
        """Project an output slot to layer3's width and resample it to stride 16."""
        if f.shape[-2:] != size and slot < _ENTRY_SCALE:
            # pool first: the 1x1 conv then runs at the smaller size; `size` is an (h, w) torch.Size
            f = F.adaptive_avg_pool2d(f, cast("tuple[int, int]", size))
        f = self.heads[slot](f)
        if f.shape[-2:] != size:
            f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
        return f

    def forward(self, x: Tensor) -> AFEOutput:
        """Route `x` (B, C3, h, w) through the cells; see `AFEOutput`."""
        batch = x.shape[0]
        path_weights = x.new_zeros(batch, self.num_layers, len(SCALES), len(PATHS))
        reached = torch.zeros(batch, self.num_layers, len(SCALES), dtype=torch.bool, device=x.device)
        inputs: list[Tensor | None] = [None, None, None]
        inputs[_ENTRY_SCALE] = self.entry(x)
        if self.adaptive and (self.hard or not self.training):
            slots, reach = self._route_sparse(inputs, path_weights, reached)
            out = x.new_zeros(x.shape)
            for s, f in enumerate(slots):
                idx = reach[:, s].nonzero().squeeze(1)
                # A slot that some image reaches holds a tensor.
                if idx.numel() == batch:
                    out = out + self._output(s, cast(Tensor, f), x.shape[-2:])
                elif idx.numel():
                    out.index_add_(0, idx, self._output(s, cast(Tensor, f).index_select(0, idx), x.shape[-2:]))
        else:
            slots = self._route_dense(inputs, path_weights, reached)
            out = sum((self._output(s, f, x.shape[-2:]) for s, f in enumerate(slots) if f is not None), x.new_zeros(()))
        out = F.relu(x + out) if self.residual else F.relu(out)
        return AFEOutput(out, path_weights, reached)

    def _weights(self, cell: Cell, f: Tensor) -> Tensor | None:
        if not self.adaptive:
            return None
        return F.gumbel_softmax(cell.gate_logits(f), tau=self.temperature, hard=False, dim=1)

    def _route_dense(self, inputs: list[Tensor | None], path_weights: Tensor, reached: Tensor) -> list[Tensor | None]:
        """Every reachable cell for the whole batch: training (Gumbel weights) and `fixed_fe` (weight 1)."""
        sizes = self._sizes(cast(Tensor, inputs[_ENTRY_SCALE]))  # forward fills the entry slot
        for layer, cells in enumerate(self.cells):
            nxt: list[Tensor | None] = [None, None, None]
            for key, cell in cast("Mapping[str, Cell]", cells).items():  # a layer's ModuleDict of cells
                s = int(key)
                f = inputs[s]
                if f is None:
                    continue
                weights = self._weights(cell, f)
                refined = cell.refine(f)
                for j, p in enumerate(cell.paths):
                    target = s + p - 1
                    h = cell.transform(p, refined, sizes[target])
                    if weights is not None:
                        h = h * weights[:, j].view(-1, 1, 1, 1)
                    nxt[target] = h if nxt[target] is None else cast(Tensor, nxt[target]) + h
                reached[:, layer, s] = True
                if weights is None:
                    path_weights[:, layer, s, list(cell.paths)] = 1.0
                else:
                    path_weights[:, layer, s, list(cell.paths)] = weights.detach()
            inputs = nxt
        return inputs

    def _route_sparse(
        self, inputs: list[Tensor | None], path_weights: Tensor, reached: Tensor
    ) -> tuple[list[Tensor | None], Tensor]:
        """Routing on one path per image: a cell runs only on the images that reach it.

        Eval (adaptive variant): the argmax path. Training with `hard`: a straight-through one-hot Gumbel sample, so a
        cell off an image's path neither computes on it nor updates its BatchNorm statistics with it.
        """
        entry = cast(Tensor, inputs[_ENTRY_SCALE])  # forward fills the entry slot
        batch, sizes = entry.shape[0], self._sizes(entry)
        reach = torch.zeros(batch, len(SCALES), dtype=torch.bool, device=entry.device)
        reach[:, _ENTRY_SCALE] = True
        for layer, cells in enumerate(self.cells):
            nxt: list[Tensor | None] = [None, None, None]
            nxt_reach = torch.zeros_like(reach)
            for key, cell in cast("Mapping[str, Cell]", cells).items():  # a layer's ModuleDict of cells
                s = int(key)
                idx = reach[:, s].nonzero().squeeze(1)
                if idx.numel() == 0:
                    continue  # no image of the batch reaches this cell: it is not computed
                # some image reaches the cell, so the previous layer filled slot s
                f = cast(Tensor, inputs[s]) if idx.numel() == batch else cast(Tensor, inputs[s]).index_select(0, idx)
                logits = cell.gate_logits(f)
                if self.training:  # straight-through one-hot Gumbel sample: value 1 on the path, soft gradients
                    onehot = F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=1)
                    choice = onehot.argmax(dim=1)
                else:
                    onehot, choice = None, logits.argmax(dim=1)
                refined = cell.refine(f)
                for j, p in enumerate(cell.paths):
                    take = choice == j
                    sel = idx[take]
                    if sel.numel() == 0:
                        continue
                    target = s + p - 1
                    h = cell.transform(p, refined if sel.numel() == idx.numel() else refined[take], sizes[target])
                    if onehot is not None:
                        h = h * onehot[take, j].view(-1, 1, 1, 1)
                    if nxt[target] is None:
                        nxt[target] = h.new_zeros((batch, *h.shape[1:]))
                    cast(Tensor, nxt[target]).index_add_(0, sel, h)
                    nxt_reach[sel, target] = True
                    path_weights[sel, layer, s, p] = 1.0
                reached[idx, layer, s] = True
            inputs, reach = nxt, nxt_reach
        return inputs, reach
