"""sanet.serving: the tiny untrained SANet of tests/conftest.py, logged as an MLflow pyfunc, answers like the torch
model it came from."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException

import sanet.serving as serving
from sanet.config import Params
from sanet.data.transforms import normalize
from sanet.engine.checkpoint import save_model_file
from sanet.infra.tracking import TrackingError, start_run
from sanet.serving import log_feature_model, pinned_requirements


@pytest.fixture(scope="module")
def params(tiny_network_params: Callable[..., Params]) -> Params:
    return tiny_network_params()


@pytest.fixture(scope="module")
def network(tiny_network: torch.nn.Module) -> torch.nn.Module:
    """The untrained tiny network of tests/conftest.py (seed 0, 7 classes, eval mode)."""
    return tiny_network


@pytest.fixture(scope="module")
def logged(
    params: Params, network: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory, template_db: Path
) -> Iterator[tuple[str, Path]]:
    """The network saved as model.pt and logged to a fresh sqlite store (artifacts beside it): (model URI, root)."""
    root = tmp_path_factory.mktemp("serving")
    shutil.copy(template_db, root / "mlflow.db")
    model_file = save_model_file(root / "model.pt", network, params, num_classes=7)
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    patch.chdir(root)  # MLflow's default artifact root with a sqlite store is ./mlruns
    try:
        with start_run(params, stage="train", run_name="serving test", tags={}):
            uri = log_feature_model(model_file, params)
        yield uri, root
    finally:
        patch.undo()
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def loaded(logged: tuple[str, Path]) -> mlflow.pyfunc.PyFuncModel:
    return mlflow.pyfunc.load_model(logged[0])


def _normalised(images: np.ndarray) -> torch.Tensor:
    """As evaluation prepares images: one (3, H, W) uint8 image at a time through sanet.data.transforms.normalize."""
    return torch.stack([normalize(torch.from_numpy(image).permute(2, 0, 1)) for image in images])


@pytest.fixture(scope="module")
def reference(params: Params, network: torch.nn.Module) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """Three random images and the torch model's own eval output on them."""
    size = (3, params.input.height, params.input.width, 3)
    images = np.random.default_rng(0).integers(0, 256, size=size, dtype=np.uint8)
    with torch.no_grad():
        return images, network(_normalised(images))


def _assert_same(out: dict[str, np.ndarray], expected: dict[str, torch.Tensor]) -> None:
    assert out["features"].dtype == np.float32 and out["features"].shape == tuple(expected["features"].shape)
    assert out["visibility"].dtype == np.bool_ and out["visibility"].shape == tuple(expected["visibility"].shape)
    torch.testing.assert_close(torch.from_numpy(out["features"]), expected["features"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["visibility"], expected["visibility"].numpy())


def test_pyfunc_predicts_what_the_torch_model_computes(
    loaded: mlflow.pyfunc.PyFuncModel, reference: tuple[np.ndarray, dict[str, torch.Tensor]]
) -> None:
    images, expected = reference
    out = loaded.predict(images)
    assert out["features"].shape[:2] == (3, 5) and out["visibility"].shape == (3, 5)
    _assert_same(out, expected)


def test_normalised_floats_and_split_batches_give_the_same_answer(
    loaded: mlflow.pyfunc.PyFuncModel,
    reference: tuple[np.ndarray, dict[str, torch.Tensor]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images, expected = reference
    inner = loaded.unwrap_python_model()  # float batches are for Python callers: the signature declares uint8
    _assert_same(inner.predict(None, _normalised(images).numpy()), expected)
    monkeypatch.setattr(serving, "MAX_BATCH", 2)  # 3 images: two forward passes
    _assert_same(inner.predict(None, images), expected)


@pytest.mark.parametrize(
    "batch",
    [
        lambda height, width: np.zeros((2, width, height, 3), np.uint8),  # transposed size
        lambda height, width: np.zeros((2, height, width, 3), np.float32),  # floats must be (B, 3, H, W)
        lambda height, width: np.zeros((height, width, 3), np.uint8),  # no batch axis
        lambda height, width: np.zeros((0, height, width, 3), np.uint8),
    ],
    ids=["transposed", "floats", "no-batch-axis", "empty"],
)
def test_wrong_input_says_what_is_expected(
    params: Params, loaded: mlflow.pyfunc.PyFuncModel, batch: Callable[[int, int], np.ndarray]
) -> None:
    height, width = params.input.height, params.input.width
    with pytest.raises(MlflowException, match=rf"expected uint8 RGB images \(B, {height}, {width}, 3\)"):
        loaded.unwrap_python_model().predict(None, batch(height, width))


def test_logged_model_declares_its_input_and_pins_its_requirements(
    params: Params, loaded: mlflow.pyfunc.PyFuncModel, logged: tuple[str, Path]
) -> None:
    signature = loaded.metadata.signature
    (image_spec,) = signature.inputs.inputs
    shape = (-1, params.input.height, params.input.width, 3)
    assert image_spec.type == np.dtype(np.uint8) and image_spec.shape == shape
    assert {spec.name for spec in signature.outputs.inputs} == {"features", "visibility"}
    assert loaded.metadata.saved_input_example_info is not None
    (pickled,) = logged[1].rglob("python_model.pkl")
    assert pickled.stat().st_size < 100_000  # the weights live in the checkpoint artifact only, not pickled twice
    requirements = Path(mlflow.pyfunc.get_model_dependencies(logged[0])).read_text().split()
    assert f"torch=={version('torch').split('+')[0]}" in requirements
    assert requirements == pinned_requirements()


def test_logging_needs_an_active_run(params: Params, tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(TrackingError, match="active MLflow run"):
        log_feature_model(tmp_path / "model.pt", params)
