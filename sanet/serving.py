"""The trained model as an MLflow pyfunc: person images in, part features and part visibility out.

    model = mlflow.pyfunc.load_model(uri)
    out = model.predict(images)     # uint8 (B, H, W, 3) RGB at the model's input size (input.height x input.width)
    out["features"]                 # float32 (B, 5, D): per part (sanet.contracts.parts.PARTS), the test feature
    out["visibility"]               # bool (B, 5): which parts the image shows

Two images are compared with the part-aware distance of paper Eq. 7 (`sanet.metrics.part_distance`): the mean
Euclidean distance over the parts visible in both. Images are resized by the caller (as `sanet.data.transforms`
does for evaluation: bilinear, antialiased); normalisation (ImageNet mean and std) happens here.

The logged model is the trained-model file `model.pt` (`sanet.engine.checkpoint`, read with `weights_only=True`)
plus the `sanet` package as code and exact requirements, so a model version serves without this repository.
Its signature, inferred from the input example, declares the uint8 image batch. Already normalised float32
(B, 3, H, W) batches, as the evaluation pipeline holds them, are accepted by the Python model itself
(`loaded.unwrap_python_model().predict(None, batch)`); MLflow's signature check refuses them on `loaded.predict`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException

import sanet
from sanet.config import Params
from sanet.infra.tracking import TrackingError

__all__ = ["MAX_BATCH", "REQUIREMENTS", "SANetFeatureModel", "log_feature_model", "pinned_requirements"]

MAX_BATCH = 64
"""Images per forward pass: bounds the memory a large request takes."""

REQUIREMENTS: tuple[str, ...] = ("torch", "torchvision", "numpy", "pillow", "pydantic", "pyyaml", "tqdm", "mlflow")
"""What the logged model imports (`sanet.config` imports `sanet.data.benchmarks`, which imports tqdm)."""


# mlflow.pyfunc is a LazyLoader in mlflow/__init__ (mypy sees no PythonModel); `import mlflow.pyfunc` would bypass it
class SANetFeatureModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    """MLflow pyfunc around a trained SANet: images -> `{"features", "visibility"}` (see the module docstring).

    The artifact `checkpoint` is the trained-model file; the model runs in eval mode on CUDA when available, else
    on the CPU.
    """

    def load_context(self, context: Any) -> None:
        """Rebuild the network from the `checkpoint` artifact (architecture from the parameters stored in it)."""
        from sanet.engine.checkpoint import load_model_file

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.params, self.meta = load_model_file(context.artifacts["checkpoint"], map_location=self.device)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the loaded network (MLflow pickles this object after signature inference loaded it).

        The weights belong in the `checkpoint` artifact only, read with `weights_only=True`; pickling them too would
        double the logged model's size and tie it to pickle-compatible torch versions.
        """
        return {k: v for k, v in self.__dict__.items() if k not in ("model", "params", "meta", "device")}

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        """Features (B, 5, D) float32 and visibility (B, 5) bool of a batch of images.

        `model_input`: uint8 (B, H, W, 3) RGB images, or float32 (B, 3, H, W) images already normalised with the
        ImageNet mean and std; H x W is the model's input size. Runs under `torch.no_grad` in batches of at most
        `MAX_BATCH` images.
        """
        images = self._to_tensor(model_input)
        self.model.eval()
        features, visibility = [], []
        with torch.no_grad():
            for start in range(0, images.shape[0], MAX_BATCH):
                out = self.model(images[start : start + MAX_BATCH].to(self.device))
                features.append(out["features"].float().cpu())
                visibility.append(out["visibility"].bool().cpu())
        return {
            "features": torch.cat(features).numpy().astype(np.float32, copy=False),
            "visibility": torch.cat(visibility).numpy().astype(bool, copy=False),
        }

    def _to_tensor(self, model_input: Any) -> torch.Tensor:
        """Validate the batch and return normalised float32 (B, 3, H, W) on the CPU."""
        from sanet.data.transforms import normalize

        height, width = self.params.input.height, self.params.input.width
        expected = (
            f"expected uint8 RGB images (B, {height}, {width}, 3) or normalised float32 images (B, 3, {height}, "
            f"{width}) as a numpy array"
        )
        if not isinstance(model_input, np.ndarray):
            raise MlflowException.invalid_parameter_value(f"{expected}, got {type(model_input).__name__}")
        shape = tuple(model_input.shape)
        if model_input.dtype == np.uint8 and shape[1:] == (height, width, 3):
            images = normalize(torch.from_numpy(np.ascontiguousarray(model_input)).permute(0, 3, 1, 2))
        elif np.issubdtype(model_input.dtype, np.floating) and shape[1:] == (3, height, width):
            images = torch.from_numpy(np.ascontiguousarray(model_input, dtype=np.float32))
        else:
            raise MlflowException.invalid_parameter_value(f"{expected}, got {model_input.dtype} {shape}")
        if shape[0] == 0:
            raise MlflowException.invalid_parameter_value(f"{expected}, got an empty batch")
        return images


def pinned_requirements() -> list[str]:
    """`name==version` of the installed packages the logged model needs (`REQUIREMENTS`).

    A local version label (`2.14.1+cu130`) is dropped, as MLflow does: PyPI has no such file, and the public
    release of the same version installs the matching code.
    """
    pins = []
    for name in REQUIREMENTS:
        try:
            installed = version(name)
        except PackageNotFoundError:
            raise TrackingError(f"cannot log the model: {name} is not installed") from None
        pins.append(f"{name}=={installed.split('+')[0]}")
    return pins


def log_feature_model(model_file: str | Path, params: Params, name: str = "model") -> str:
    """Log the trained-model file as a pyfunc feature extractor in the active run; returns its model URI.

    `params` gives the input example's size (`input.height` x `input.width`, which must be the model file's);
    the signature is inferred from that example (uint8 (-1, H, W, 3) -> features, visibility). Requirements are the
    exact installed versions (`pinned_requirements`); the `sanet` package travels as code.
    """
    model_file = Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(f"model file not found: {model_file}")
    if mlflow.active_run() is None:
        raise TrackingError("log_feature_model needs an active MLflow run (sanet.infra.tracking.start_run)")
    example = np.zeros((2, params.input.height, params.input.width, 3), dtype=np.uint8)
    with _quiet_pickle_warning():
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=SANetFeatureModel(),
            artifacts={"checkpoint": str(model_file)},
            code_paths=[str(Path(sanet.__file__).parent)],
            pip_requirements=pinned_requirements(),
            input_example=example,
        )
    return info.model_uri


class _DropPickleWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_PICKLE_WARNING)


_PICKLE_WARNING = "Passing a Python object as `python_model`"


@contextlib.contextmanager
def _quiet_pickle_warning() -> Iterator[None]:
    """Leave out MLflow's CloudPickle warning from every training's output: the project knows the pyfunc wrapper is
    pickled, and docs/mlflow.md says what that means for who may write the registry's artifact store."""
    logger = logging.getLogger("mlflow.pyfunc")
    dropper = _DropPickleWarning()
    logger.addFilter(dropper)
    try:
        yield
    finally:
        logger.removeFilter(dropper)
