"""OpenPifPaf as a keypoint source: lazy import, a safe checkpoint loader, and batched prediction.

The paper takes its part-mask annotations from OpenPifPaf (SANet section 3.2, reference [12]). Three details make it
usable in this environment, each handled here rather than by pinning the environment backwards:

* **Package.** The PyPI release ``openpifpaf`` 0.13.11 pins torch 1.13. The maintained fork ``openpifpaf-vita``
  0.14.2 is built from its sdist against the locked torch by ``make pifpaf`` (``tools/build_pifpaf.sh``). It is
  imported only when ``masks.source`` is ``openpifpaf``; without it, :class:`PifPafMissingError` says how to build it.
* **matplotlib.** OpenPifPaf calls ``matplotlib.cm.get_cmap`` at import time; matplotlib 3.9 removed it in favour of
  ``matplotlib.colormaps``. :func:`ensure_get_cmap` adds an equivalent function, only when it is missing.
* **Checkpoints.** OpenPifPaf checkpoints pickle the whole network (``{"model": Shell, "epoch": ...}``), and
  unrestricted unpickling runs arbitrary code. :func:`load_checkpoint` lists the globals the file needs, refuses
  any outside OpenPifPaf's own classes, the torch / torchvision layers they are built from and numpy's array
  reconstruction, and then loads with ``torch.load(weights_only=True)`` with exactly those allowed.

The checkpoint is a file the user provides (``masks.openpifpaf.checkpoint``); nothing is downloaded at run time.
The paper does not say which OpenPifPaf model it used; the default is the COCO keypoint ShuffleNetV2-K16 of the
OpenPifPaf 0.13 model release (the fork's own model list is empty).
"""

from __future__ import annotations

import importlib
import types
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sanet.contracts.keypoints import COCO_KEYPOINTS
from sanet.masks.errors import MasksError, PifPafCheckpointError, PifPafMissingError
from sanet.masks.keypoints import ImageItem, KeypointSource, People

__all__ = [
    "CHECKPOINT_RELEASE",
    "DEFAULT_CHECKPOINT",
    "PIFPAF_PACKAGE",
    "PIFPAF_VERSION",
    "OpenPifPafSource",
    "ensure_get_cmap",
    "import_openpifpaf",
    "load_checkpoint",
    "select_device",
]

PIFPAF_PACKAGE = "openpifpaf-vita"
PIFPAF_VERSION = "0.14.2"
#: The OpenPifPaf model release the default checkpoint comes from.
CHECKPOINT_RELEASE = "https://github.com/openpifpaf/torchhub/releases/tag/v0.13"
DEFAULT_CHECKPOINT = "shufflenetv2k16-210820-232500-cocokp-slurm726069-edge513-o10s-7189450a.pkl"

# Globals a checkpoint may need: OpenPifPaf's classes, the layers they are made of, and numpy arrays (head metadata).
_ALLOWED_PREFIXES = ("openpifpaf.", "torch.nn.modules.", "torchvision.models.", "torchvision.ops.misc.")
_ALLOWED_NUMPY = (
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
)


def ensure_get_cmap() -> bool:
    """Give matplotlib >= 3.9 back ``matplotlib.cm.get_cmap`` (OpenPifPaf needs it); True if it was added.

    The replacement has the removed function's signature and returns the same colormaps (``lut`` resamples them).
    Nothing is changed when the function exists.
    """
    import matplotlib
    import matplotlib.cm

    if hasattr(matplotlib.cm, "get_cmap"):
        return False

    def get_cmap(name: Any = None, lut: int | None = None) -> Any:
        cmap = matplotlib.colormaps.get_cmap(name)  # name None: the default colormap, as before
        return cmap.resampled(lut) if lut is not None else cmap

    matplotlib.cm.get_cmap = get_cmap  # type: ignore[attr-defined]
    return True


def import_openpifpaf() -> types.ModuleType:
    """Import OpenPifPaf (after the matplotlib shim); a clear error when the package is not installed."""
    ensure_get_cmap()
    try:
        with warnings.catch_warnings():  # its visualiser calls Colormap.set_bad at import time (noise, not ours)
            warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module="openpifpaf")
            return importlib.import_module("openpifpaf")
    except ImportError as exc:
        raise PifPafMissingError(
            f"masks.source is openpifpaf, but OpenPifPaf is not installed ({exc}); `make pifpaf` builds "
            f"{PIFPAF_PACKAGE} {PIFPAF_VERSION} from source against the locked torch and installs it "
            "(docs/masks.md)"
        ) from None


def select_device(name: str = "auto") -> Any:
    """ "auto": CUDA when available, else the CPU; "cuda" fails clearly when there is no GPU."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise MasksError("masks.openpifpaf.device is cuda, but torch sees no CUDA device")
    return torch.device(name)


def _resolve_global(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    if module.startswith("numpy.core"):  # numpy 2 moved numpy.core to numpy._core; old checkpoints name the former
        return (getattr(importlib.import_module(module.replace("numpy.core", "numpy._core", 1)), attr), name)
    return getattr(importlib.import_module(module), attr)


def _allowed(name: str) -> bool:
    return name.startswith(_ALLOWED_PREFIXES) or name in _ALLOWED_NUMPY or name.startswith("numpy.dtypes.")


def load_checkpoint(path: str | Path) -> Any:
    """Load an OpenPifPaf checkpoint without unrestricted pickle; returns the network in eval mode on the CPU.

    Raises :class:`PifPafCheckpointError` when the file is missing (naming the file and the release it comes from), when
    it needs a class outside OpenPifPaf's own and the torch / numpy pieces they are built from, or when it is not a
    COCO-17 keypoint model.
    """
    path = Path(path)
    if not path.is_file():
        raise PifPafCheckpointError(
            f"the OpenPifPaf checkpoint does not exist:\n  {path}\n"
            f"It is a file you provide (masks.openpifpaf.checkpoint); nothing is downloaded at run time. The default "
            f"is {DEFAULT_CHECKPOINT} from the OpenPifPaf 0.13 model release, {CHECKPOINT_RELEASE}: download it "
            f"there and save it as {path}, or set masks.source to synthetic or coco_json."
        )
    openpifpaf = import_openpifpaf()
    import numpy.dtypes
    import torch

    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:  # not a torch zip file, truncated, ...
        raise PifPafCheckpointError(f"cannot read the OpenPifPaf checkpoint\n  {path}\nreason: {exc}") from None
    refused = sorted(name for name in needed if not _allowed(name))
    if refused:
        raise PifPafCheckpointError(
            f"refusing to load the OpenPifPaf checkpoint\n  {path}\nit needs classes outside OpenPifPaf's own "
            f"and the torch layers they are built from: {', '.join(refused)}"
        )
    try:
        allowed = [_resolve_global(name) for name in needed]
    except (ImportError, AttributeError) as exc:
        raise PifPafCheckpointError(
            f"the OpenPifPaf checkpoint {path} needs a class this version lacks ({exc})"
        ) from None
    allowed += [getattr(numpy.dtypes, name) for name in numpy.dtypes.__all__]  # passed by reference, not by name
    try:
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        net = checkpoint["model"]
    except Exception as exc:
        raise PifPafCheckpointError(f"cannot load the OpenPifPaf checkpoint\n  {path}\nreason: {exc}") from None
    shell = isinstance(net, openpifpaf.network.nets.Shell)
    cif = [m for m in (net.head_metas if shell else []) if isinstance(m, openpifpaf.headmeta.Cif)]
    if not cif or list(cif[0].keypoints) != list(COCO_KEYPOINTS):
        raise PifPafCheckpointError(f"{path} is not an OpenPifPaf COCO-17 keypoint model (cocokp); the masks need one")
    openpifpaf.network.model_migration.model_migration(net)  # what OpenPifPaf's own loader does for old files
    return net.eval()


def _predictor(openpifpaf: types.ModuleType, net: Any, device: Any, batch_size: int, long_edge: int) -> Any:
    """An ``openpifpaf.Predictor`` around an already (safely) loaded network instead of one it loads itself."""
    base: Any = openpifpaf.Predictor  # a base class from a module imported at run time: untyped

    class LoadedPredictor(base):
        def __init__(self) -> None:  # the parent's __init__ would load the checkpoint again, unrestricted
            self.json_data = False
            self.visualize_image = False
            self.visualize_processed_image = False
            self.device = device
            self.batch_size = batch_size
            self.long_edge = long_edge
            self.loader_workers = 0  # images arrive decoded; worker processes would only add start-up time
            self.fast_rescaling = True
            self.model_cpu = net
            self.model = net.to(device)
            self.processor = openpifpaf.decoder.factory(net.head_metas)
            self.last_decoder_time = self.last_nn_time = 0.0
            self.total_nn_time = self.total_decoder_time = 0.0
            self.total_images = 0

    return LoadedPredictor()


class OpenPifPafSource(KeypointSource):
    """Runs OpenPifPaf over batches of images; every person it finds, with per-keypoint confidences.

    Images are rescaled so that their long edge is ``long_edge`` pixels (re-ID crops are small; OpenPifPaf was
    trained on people tens to hundreds of pixels tall). With ``batch_size`` 1 an image is padded only to a multiple of
    16; larger batches pad every image to a ``long_edge`` square, which pays off on a GPU but not on a CPU.
    """

    name = "openpifpaf"

    def __init__(self, checkpoint: str | Path, device: str = "auto", batch_size: int = 1, long_edge: int = 321):
        self.checkpoint = Path(checkpoint)
        net = load_checkpoint(self.checkpoint)
        openpifpaf = import_openpifpaf()
        torch_device = select_device(device)
        self.device = str(torch_device)
        self.batch_size = batch_size
        self.predictor = _predictor(openpifpaf, net, torch_device, batch_size, long_edge)

    def people(self, items: Sequence[ImageItem], images: Sequence[Image.Image]) -> list[People | None]:
        out: list[People | None] = []
        for pred, _, _ in self.predictor.pil_images(list(images)):
            out.append([np.asarray(ann.data, dtype=np.float32) for ann in pred])
        return out
