"""The AFE's share of the features: how much the AFE changes the layer3 features it receives.

With its residual form, relu(x + afe(x)) and zero-initialised output BNs (`sanet.model.afe`), an AFE that has
learned nothing passes the layer3 features through unchanged, and the model is then the `global` variant with extra
computation. The relative change ||afe_out - x|| / ||x|| per image, averaged over the images, says how much of the
features the AFE contributes: 0 means none. It is measured with forward hooks on `model.afe`, so the model code does
not change; variants without an AFE (`model.afe is None`) report None.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
from torch import nn

__all__ = ["AFEShareMeter"]

_EPS = 1e-12


class AFEShareMeter:
    """A context manager that records the AFE's relative change of its input for every image that passes.

    Usage: ``with AFEShareMeter(model) as meter: extract_features(model, ...)``; then ``meter.share()`` is the mean
    over images (None without an AFE or before any image). The hook is removed on exit.
    """

    def __init__(self, model: nn.Module) -> None:
        self.afe: nn.Module | None = getattr(model, "afe", None)
        self.ratios: list[torch.Tensor] = []
        self._handle: Any = None

    @property
    def available(self) -> bool:
        """Whether the model has an AFE to measure."""
        return self.afe is not None

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0].detach().float().flatten(1)
        y = (output.features if hasattr(output, "features") else output).detach().float().flatten(1)
        ratio = (y - x).norm(dim=1) / x.norm(dim=1).clamp_min(_EPS)
        self.ratios.append(ratio.cpu())

    def __enter__(self) -> AFEShareMeter:
        if self.afe is not None:
            self._handle = self.afe.register_forward_hook(self._hook)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def images(self) -> int:
        """How many images were measured."""
        return int(sum(len(r) for r in self.ratios))

    def share(self) -> float | None:
        """Mean over images of ||afe_out - x|| / ||x|| (float64 sum), rounded to 6 digits; None if nothing measured."""
        if not self.ratios:
            return None
        ratios = torch.cat(self.ratios).double()
        return round(float(ratios.mean()), 6)
