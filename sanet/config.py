"""Parameters: the schema of `params.yaml`, profiles, `--set` overrides and start-up validation.

Every stage reads its settings through `load_params`, so a wrong key, type or range stops the run before any work,
with a message that names the key and what is allowed. The top-level sections of `params.yaml` hold the paper's
settings (SANet, BMVC 2023, section 4.2); `profile` names a set of overrides from `profiles` that is applied on top
(`paper` applies none), and `--set key.sub=value` overrides are applied last. Every profile is validated at start-up,
not only the active one, so a broken profile cannot hide until somebody switches to it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sanet.contracts.variants import Variant
from sanet.data.benchmarks import BENCHMARKS
from sanet.infra.errors import SanetError

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

PAPER_PROFILE = "paper"
DEFAULT_PARAMS_FILE = Path("params.yaml")


class ConfigError(SanetError, ValueError):
    """Invalid parameters: the message names every offending key and what it allows."""


class _YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but `5e-4` is a float (YAML 1.2) rather than the string YAML 1.1 makes of it."""


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YAMLLoader)  # a SafeLoader subclass: no arbitrary objects


class _Section(BaseModel):
    # strict: a string where a number belongs is an error, not a silent conversion; unknown keys are errors.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_benchmark(name: str) -> str:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; allowed: {', '.join(BENCHMARKS)}")
    return name


class DataParams(_Section):
    """Where the benchmarks live and which are used; the paper trains on Market-1501 only."""

    root: str = "data"
    train: str = "market1501"
    evaluate: list[str] = Field(default_factory=lambda: list(BENCHMARKS), min_length=1)
    workers: int = Field(4, ge=0, le=64)

    @field_validator("train")
    @classmethod
    def _train_known(cls, value: str) -> str:
        return _check_benchmark(value)

    @field_validator("evaluate")
    @classmethod
    def _evaluate_known(cls, value: list[str]) -> list[str]:
        for name in value:
            _check_benchmark(name)
        if len(set(value)) != len(value):
            raise ValueError("lists a benchmark twice")
        return value


class SynthMarketParams(_Section):
    """Market-1501-style split sizes of the synthetic benchmark."""

    train_ids: int = Field(64, ge=2, le=750)
    test_ids: int = Field(64, ge=2, le=750)
    distractors: int = Field(40, ge=0)
    junk: int = Field(30, ge=0)


class SynthDukeParams(_Section):
    """DukeMTMC-reID-style split sizes; gallery-only identities play Duke's distractor identities."""

    train_ids: int = Field(48, ge=2, le=702)
    test_ids: int = Field(48, ge=2, le=702)
    gallery_only_ids: int = Field(12, ge=0, le=400)


class SynthPartialParams(_Section):
    """Partial-REID and Partial-iLIDS sizes."""

    partial_reid_ids: int = Field(30, ge=2, le=999)
    partial_reid_images: int = Field(3, ge=1, le=20, description="whole, partial and occluded images per identity")
    partial_ilids_ids: int = Field(40, ge=2, le=999)


class SynthParams(_Section):
    """The synthetic benchmark (DESIGN section 3); `sanet synth --out data` with these values reproduces data.dvc."""

    seed: int = Field(0, ge=0)
    image_height: int = Field(128, ge=64, le=512)
    image_width: int = Field(64, ge=32, le=256)
    jpeg_quality: int = Field(92, ge=50, le=100)
    market: SynthMarketParams = SynthMarketParams()
    duke: SynthDukeParams = SynthDukeParams()
    partial: SynthPartialParams = SynthPartialParams()


class PifPafParams(_Section):
    """OpenPifPaf, the keypoint detector behind the paper's part masks (used when masks.source is openpifpaf)."""

    checkpoint: str = Field(
        "weights/openpifpaf/shufflenetv2k16-210820-232500-cocokp-slurm726069-edge513-o10s-7189450a.pkl",
        min_length=1,
        description="a COCO-17 (cocokp) checkpoint file you provide; nothing is downloaded",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available")
    batch_size: int = Field(1, ge=1, le=256, description="1: no square padding (fastest on a CPU); more on a GPU")
    long_edge: int = Field(321, ge=65, le=2049, description="images are rescaled to this long edge before detection")


class MasksParams(_Section):
    """Part masks from COCO-17 keypoints (DESIGN section 4, sanet/masks/part_masks.py for the geometry)."""

    source: Literal["openpifpaf", "coco_json", "synthetic"] = "openpifpaf"
    coco_json: str = Field("", description="COCO keypoints file for source coco_json; file names relative to data.root")
    min_confidence: float = Field(0.3, ge=0, le=1, description="keypoints below this confidence count as missing")
    min_area: float = Field(0.005, ge=0, lt=1, description="a part covering less of the image counts as not visible")
    # Stored size: 4x the mask head (24 x 8 at the paper's 384 x 128 input), so that flips and crops applied to the
    # masks together with the image still leave enough detail to downsample to the head's size afterwards.
    height: int = Field(96, ge=8, le=1024)
    width: int = Field(32, ge=8, le=1024)
    out_dir: str = Field("masks", min_length=1, description="mask store folder (a DVC output)")
    coverage_file: str = Field(
        "reports/masks_coverage.json", min_length=1, description="coverage per benchmark split and part (JSON)"
    )
    metrics_file: str = Field(
        "reports/masks_metrics.json", min_length=1, description="coverage summary, the stage's DVC metric (JSON)"
    )
    openpifpaf: PifPafParams = PifPafParams()

    @model_validator(mode="after")
    def _coco_json_named(self) -> MasksParams:
        if self.source == "coco_json" and not self.coco_json:
            raise ValueError("source coco_json needs coco_json: the path of a COCO keypoints file")
        return self


class InputParams(_Section):
    """Network input size; the paper resizes every image to 384 x 128."""

    height: int = Field(384, ge=32, le=1024)
    width: int = Field(128, ge=16, le=512)

    @model_validator(mode="after")
    def _multiple_of_32(self) -> InputParams:
        for key in ("height", "width"):
            if getattr(self, key) % 32:
                raise ValueError(f"{key} must be a multiple of 32 (the backbone's largest stride)")
        return self


class AFEParams(_Section):
    """Adaptive Feature Enhancement: `layers` x 3 scale cells; paper 5 layers, 3x3 refinement (Table 4: 3/7, 1/5)."""

    layers: int = Field(5, ge=1, le=16)
    kernel: int = Field(3, ge=1, le=9)
    # Not in the paper (see sanet/model/afe.py): Dynamic Routing's widths, its Gumbel-softmax settings, a residual.
    width: int = Field(128, ge=4, le=1024, description="channels of the stride-8 cells; x2 at stride 16, x4 at 32")
    temperature: float = Field(1.0, gt=0, le=100, description="Gumbel-softmax temperature during training")
    hard: bool = Field(False, description="straight-through one-hot Gumbel samples in training (soft if false)")
    residual: bool = Field(True, description="add the AFE output to its layer3 input (zero-initialised)")

    @field_validator("kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd (1, 3, 5, ...) so that the refinement keeps the feature size")
        return value


class MFEParams(_Section):
    """Multi-branch Feature Extension: per-branch segmentation head and the feature used at test time."""

    seg_channels: int = Field(256, ge=1, le=4096, description="hidden channels of the two-conv segmentation head")
    test_feature: Literal["pre_bn", "post_bn"] = Field("pre_bn", description="pre_bn is F of paper Eq. 4")
    pool_mask: Literal["binary", "soft"] = Field(
        "binary", description="Eq. 4's m: binarised at 0.5 as HPNet does (no ID/triplet gradient into the mask) or soft"
    )
    width: int = Field(
        0,
        ge=0,
        le=4096,
        description="0: every branch is a copy of the backbone's layer4 (the paper); N: a freshly initialised stage of "
        "layer4's blocks with N output channels (from-scratch training only: a CPU demo's branches 3x cheaper)",
    )


class ModelParams(_Section):
    """Architecture; `variant` selects the Table 3 ablation (hpnet, global, fixed_fe, sanet)."""

    variant: Variant = "sanet"
    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet50"
    pretrained: str = Field("imagenet", min_length=1, description="imagenet, none, or a path to a weight file")
    afe: AFEParams = AFEParams()
    mfe: MFEParams = MFEParams()
    imagenet_weights: Literal["IMAGENET1K_V1", "IMAGENET1K_V2"] = Field(
        "IMAGENET1K_V1", description="which torchvision ImageNet file `pretrained: imagenet` reads (V2: resnet50 only)"
    )

    @model_validator(mode="after")
    def _weights_exist(self) -> ModelParams:
        if self.imagenet_weights == "IMAGENET1K_V2" and self.backbone != "resnet50":
            raise ValueError(f"imagenet_weights IMAGENET1K_V2 exists for resnet50 only (backbone is {self.backbone})")
        if self.mfe.width and self.pretrained != "none":
            raise ValueError(
                f"mfe.width {self.mfe.width} builds branches that no weight file initialises: it needs pretrained: "
                f"none (pretrained is {self.pretrained!r}; mfe.width 0 copies the pretrained layer4 into every branch)"
            )
        return self


class LossParams(_Section):
    """Loss weights (paper: triplet 0.1, the others 1)."""

    id_weight: float = Field(1.0, ge=0)
    triplet_weight: float = Field(0.1, ge=0)
    triplet_margin: float = Field(0.3, gt=0)
    focal_weight: float = Field(1.0, ge=0)
    focal_gamma: float = Field(2.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # Not in the paper (see sanet/train/losses.py).
    focal_alpha: float = Field(0.25, ge=0, le=1, description="weight of mask pixels (RetinaNet's 0.25; 0.5: equal)")
    mask_target: Literal["any", "soft", "binary"] = Field(
        "any", description="mask label per stride-16 cell: any label pixel (any), area average (soft) or binary"
    )
    focal_normalize: Literal["positive", "mean"] = Field(
        "positive", description="focal loss over the positive cells (RetinaNet, HPNet) or the mean over all cells"
    )


class LRFactors(_Section):
    """Learning-rate multipliers: layers initialised from the backbone's weights versus layers new to SANet."""

    pretrained: float = Field(1.0, ge=0, description="stem..layer3 and every branch's layer4 copy")
    new: float = Field(1.0, ge=0, description="AFE, segmentation heads, BNNecks, classifiers")


class TemperatureSchedule(_Section):
    """Gumbel-softmax temperature over training, from `model.afe.temperature` to `final` (adaptive AFE only)."""

    schedule: Literal["constant", "linear", "exponential"] = "constant"
    final: float = Field(1.0, gt=0, le=100, description="temperature at the last epoch (linear, exponential)")


class TrainParams(_Section):
    """Optimisation (paper: SGD, lr 0.01, batch 64 = 16 identities x 4 images, 150 epochs).

    `batch_size` is the global batch: under `torchrun --nproc_per_node=N` every process takes batch_size / N images
    (whole identities: the identities of one step are split between the processes).
    """

    epochs: int = Field(150, ge=1)
    batch_size: int = Field(64, ge=2, description="global batch (all processes together)")
    instances_per_id: int = Field(4, ge=1)
    optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="sgd (the paper) | adam (BoT's choice; with momentum as beta1, for short runs from scratch)"
    )
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = False
    lr_factors: LRFactors = LRFactors()
    scheduler: Literal["step", "cosine"] = Field("step", description="decay after the warm-up")
    milestones: list[int] = Field(default_factory=lambda: [60, 120], description="step: epochs where lr x= gamma")
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr_factor: float = Field(0.01, ge=0, le=1, description="cosine: final lr as a fraction of lr")
    warmup_epochs: float = Field(10, ge=0, description="linear warm-up from warmup_factor x lr (may be fractional)")
    warmup_factor: float = Field(0.1, gt=0, le=1)
    temperature: TemperatureSchedule = TemperatureSchedule()
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="CUDA only; auto: bf16 where supported")
    channels_last: bool = Field(True, description="CUDA only")
    compile: bool = Field(False, description="torch.compile the model")
    sync_bn: bool = Field(False, description="SyncBatchNorm across processes (CUDA with several processes only)")
    deterministic: bool = Field(False, description="deterministic algorithms (bit-identical reruns; slower)")
    threads: int = Field(
        0,
        ge=0,
        le=512,
        description="torch intra-op CPU threads; CPU results depend on the count, so a fixed one makes reruns on "
        "other machines bit-identical (sanet.engine.determinism); 0: torch's default (the machine's cores)",
    )
    cpu_kernels: Literal["native", "avx2"] = Field(
        "native",
        description="CPU kernels of torch, oneDNN and MKL: native (the processor's best) | avx2 (the same kernels on "
        "every x86-64 processor with AVX2, so CPU results reproduce across processors; sanet.engine.cpu_kernels)",
    )
    out_dir: str = Field("outputs/train", min_length=1, description="checkpoints and the trained model")
    log_every: int = Field(10, ge=1, description="steps between logged training metrics")
    eval_every: int = Field(0, ge=0, description="epochs between validations on data.train's query set; 0: at the end")
    eval_untrained: bool = Field(True, description="also evaluate the network before training (the learning baseline)")
    val_ids: int = Field(
        0,
        ge=0,
        description="identities of data.train held out of training as the validation split (query/gallery by the "
        "camera rule); 0: validate on data.train's own query/gallery",
    )

    @model_validator(mode="after")
    def _batch_divisible(self) -> TrainParams:
        if self.batch_size % self.instances_per_id:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of instances_per_id ({self.instances_per_id})"
            )
        if self.milestones != sorted(set(self.milestones)) or any(m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be increasing positive epochs, got {self.milestones}")
        return self


class ColorJitterParams(_Section):
    """Colour jitter (the paper's "colour improvement"): random factors in [1 - x, 1 + x], hue in [-hue, hue]."""

    p: float = Field(0.5, ge=0, le=1, description="probability of jittering an image")
    brightness: float = Field(0.2, ge=0, le=1)
    contrast: float = Field(0.15, ge=0, le=1)
    saturation: float = Field(0.1, ge=0, le=1)
    hue: float = Field(0.0, ge=0, le=0.5)


class RandomErasingParams(_Section):
    """Random erasing (Zhong et al. 2020); not in the paper, off by default. Erased pixels leave the part masks."""

    p: float = Field(0.0, ge=0, le=1)
    min_area: float = Field(0.02, gt=0, le=1)
    max_area: float = Field(0.4, gt=0, le=1)
    min_aspect: float = Field(0.3, gt=0, le=1, description="aspect ratios in [min_aspect, 1 / min_aspect]")

    @model_validator(mode="after")
    def _area_order(self) -> RandomErasingParams:
        if self.min_area > self.max_area:
            raise ValueError(f"min_area ({self.min_area}) must not exceed max_area ({self.max_area})")
        return self


class PartialViewParams(_Section):
    """Partial-aware augmentation, our reading of the paper's "random cropping" (docs/model.md, Choices the paper
    leaves open): VPM's random vertical crop resized to the input, and HPNet's part occlusion; the part-mask labels
    are cropped or cleared with the image, so a part the view does not show is absent in its labels too."""

    crop: float = Field(0.5, ge=0, le=1, description="probability of a random vertical extent, resized to the input")
    min_extent: float = Field(0.35, gt=0, le=1, description="smallest extent kept (fraction of the image height)")
    max_extent: float = Field(0.9, gt=0, le=1, description="largest extent kept (fraction of the image height)")
    from_top: float = Field(0.8, ge=0, le=1, description="probability that the extent starts at the top row")
    occlude: float = Field(0.2, ge=0, le=1, description="probability of painting the rows below a random row")
    occlude_top: list[float] = Field(
        [0.45, 0.8],
        min_length=2,
        max_length=2,
        description="[low, high] range of the occluder's top row (fraction of the height); it reaches the bottom",
    )
    labels: Literal["rows", "keypoints"] = Field(
        "rows",
        description="keypoints: a view's parts are visible as the mask stage would label the view (its rule on the "
        "keypoints the view shows); rows: the cut or painted rows only leave the masks",
    )

    @model_validator(mode="after")
    def _ranges(self) -> PartialViewParams:
        if self.min_extent > self.max_extent:
            raise ValueError(f"min_extent ({self.min_extent}) must not exceed max_extent ({self.max_extent})")
        low, high = self.occlude_top
        if not 0 < low <= high < 1:
            raise ValueError(f"occlude_top must satisfy 0 < low <= high < 1, got {self.occlude_top}")
        return self


class AugmentParams(_Section):
    """Training augmentations (paper section 4.2: flipping, colour, random cropping); masks move with the image."""

    flip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    pad: int = Field(10, ge=0, le=64, description="pixels of zero padding on each side before the random crop")
    color_jitter: ColorJitterParams = ColorJitterParams()
    random_erasing: RandomErasingParams = RandomErasingParams()
    partial: PartialViewParams = PartialViewParams()


class TrackingParams(_Section):
    """MLflow. The environment variable MLFLOW_TRACKING_URI, when set, overrides `uri`."""

    uri: str = Field("sqlite:///mlflow.db", min_length=1)
    experiment: str = Field("sanet", min_length=1, description="experiment of the benchmark pipeline's runs")
    system_metrics: bool = Field(True, description="CPU, memory (and GPU) usage every system_metrics_interval s")
    system_metrics_interval: float = Field(10.0, gt=0)
    log_model: bool = Field(True, description="log the trained model (pyfunc: images -> features, visibility)")
    artifact_location: str = Field(
        "",
        description="where experiments this project creates keep their artifacts: '' for MLflow's default "
        "(./mlruns beside a database store, the server's store for a tracking server), or s3://bucket/prefix",
    )

    @field_validator("artifact_location")
    @classmethod
    def _artifact_scheme(cls, value: str) -> str:
        if value and not re.match(r"^(s3|gs|wasbs|hdfs|file)://", value) and not value.startswith("/"):
            raise ValueError("must be empty, an absolute path, or a URI such as s3://bucket/prefix")
        return value


class GateTolerance(_Section):
    """How much a candidate may lose against the champion on any benchmark (fractions: 0.01 = 1 point)."""

    mAP: float = Field(0.01, ge=0, le=1)
    rank1: float = Field(0.01, ge=0, le=1)


class RegistryParams(_Section):
    """The MLflow model registry: which registered model `sanet register` adds to, and the promotion gate."""

    model_name: str = Field("sanet", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)
    tolerance: GateTolerance = GateTolerance()


class IntRange(_Section):
    """An integer search range, both ends included."""

    low: int
    high: int
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must not be below low ({self.low})")
        return self


class FloatRange(_Section):
    """A float search range; `log` samples uniformly in log space (then low must be positive)."""

    low: float = Field(ge=0)
    high: float = Field(gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be above low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class SearchRanges(_Section):
    """What the Optuna spaces search: `afe_layers`, `afe_kernel`, `triplet_weight`, and all three in `joint`."""

    afe_layers: IntRange = IntRange(low=1, high=8)
    afe_kernel: list[int] = Field(default_factory=lambda: [1, 3, 5, 7], min_length=1)
    triplet_weight: FloatRange = FloatRange(low=0.01, high=1.0, log=True)

    @model_validator(mode="after")
    def _valid(self) -> SearchRanges:
        if self.afe_layers.low < 1 or self.afe_layers.high > 16:
            raise ValueError("afe_layers must lie within 1..16 (model.afe.layers)")
        bad = [k for k in self.afe_kernel if k < 1 or k > 9 or k % 2 == 0]
        if bad or len(set(self.afe_kernel)) != len(self.afe_kernel):
            raise ValueError(f"afe_kernel must list distinct odd kernels within 1..9, got {self.afe_kernel}")
        return self


class PruningParams(_Section):
    """Optuna's median pruner on the intermediate validation score (one value per epoch)."""

    enabled: bool = True
    startup_trials: int = Field(2, ge=0, description="trials that are never pruned (the median needs some)")
    warmup_epochs: int = Field(1, ge=0, description="epochs of a trial that are never pruned")


class HPOParams(_Section):
    """Optuna studies (`sanet hpo --space NAME`): one study per space, trials scored on held-out training identities."""

    study: str = Field("sanet", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    storage: str = Field("sqlite:///optuna.db", min_length=1)
    experiment: str = Field("sanet-hpo", min_length=1)
    trials: int = Field(20, ge=1, description="trials of a study, all workers together")
    timeout: float = Field(0, ge=0, description="seconds after which a worker starts no new trial; 0: no limit")
    seed: int = Field(0, ge=0)
    epochs: int = Field(10, ge=1, description="a trial's short schedule (train.* compressed to this many epochs)")
    val_ids: int = Field(100, ge=2, description="identities of data.train held out of training to score trials")
    score_epochs: int = Field(1, ge=1, description="a trial's value: the mean score of its last N validations")
    out_dir: str = Field("outputs/hpo", min_length=1, description="trial checkpoints (deleted after each trial)")
    reports_dir: str = Field("reports/hpo", min_length=1, description="<space>.json and plots per study")
    pruning: PruningParams = PruningParams()
    ranges: SearchRanges = SearchRanges()


class RerankParams(_Section):
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017); off in the paper's protocol."""

    enabled: bool = False
    k1: int = Field(20, ge=1)
    k2: int = Field(6, ge=1)
    lambda_value: float = Field(0.3, ge=0, le=1)


class EvaluationParams(_Section):
    """How query-gallery distances are computed and ranked (paper Eq. 7 is `distance: part`)."""

    distance: Literal["part", "euclidean", "cosine"] = "part"
    max_rank: int = Field(50, ge=10)
    chunk_mib: int = Field(256, ge=1, description="memory budget of one distance or ranking chunk, in MiB")
    batch_size: int = Field(128, ge=1, le=4096, description="images per feature-extraction batch")
    rerank: RerankParams = RerankParams()


class Params(_Section):
    """The resolved parameters every stage receives (profile and overrides applied)."""

    profile: str = PAPER_PROFILE
    seed: int = Field(0, ge=0)
    data: DataParams = DataParams()
    synth: SynthParams = SynthParams()
    masks: MasksParams = MasksParams()
    input: InputParams = InputParams()
    model: ModelParams = ModelParams()
    loss: LossParams = LossParams()
    train: TrainParams = TrainParams()
    augment: AugmentParams = AugmentParams()
    evaluation: EvaluationParams = EvaluationParams()
    tracking: TrackingParams = TrackingParams()
    registry: RegistryParams = RegistryParams()
    hpo: HPOParams = HPOParams()
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` with `override` merged in: nested mappings merge, everything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `key.sub=value` into its key path and its YAML-parsed value (`3` is an int, `[a, b]` a list)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set {text!r}: expected key.sub=value, for example --set model.afe.layers=3")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc.problem})") from None
    return parts, value


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `--set` overrides to a raw parameter tree; unknown keys are left for validation to name."""
    result = copy.deepcopy(dict(raw))
    for text in overrides:
        parts, value = parse_override(text)
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {text!r}: {prefix} is a value ({child!r}), not a section with keys")
            node = child
        node[parts[-1]] = value
    return result


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Params
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return model
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


def _describe(error: ErrorDetails, overridden: set[str]) -> str:
    loc = tuple(p for p in error["loc"] if p not in ("function-after",))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        parent = _section_at(loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "none"
        message = f"unknown key; allowed keys here: {allowed}"
    else:
        message = error["msg"].removeprefix("Value error, ")
        if "input" in error and error["type"] not in ("missing",) and not isinstance(error["input"], dict):
            message += f" (got {error['input']!r})"
    source = " [from --set]" if key in overridden else ""
    return f"  {key}: {message}{source}"


def _validate(tree: Mapping[str, Any], origin: str, overridden: set[str]) -> Params:
    try:
        return Params.model_validate(tree)
    except ValidationError as exc:
        lines = [_describe(e, overridden) for e in exc.errors()]
        raise ConfigError(f"{origin} is invalid:\n" + "\n".join(lines)) from None


def resolve(raw: Mapping[str, Any], overrides: Iterable[str] = (), origin: str = "params.yaml") -> Params:
    """Validate a raw parameter tree: every profile, then the active profile with `overrides` applied."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{origin} is invalid: expected a mapping of sections, got {type(raw).__name__}")
    overrides = list(overrides)
    overridden = {".".join(parse_override(text)[0]) for text in overrides}
    tree = apply_overrides(raw, overrides)
    profiles = tree.get("profiles") or {}
    if not isinstance(profiles, Mapping):
        raise ConfigError(f"{origin} is invalid:\n  profiles: must map profile names to overrides")
    _validate(raw, origin, set())  # the paper settings themselves, before any profile
    for name, override in profiles.items():
        if not isinstance(override, Mapping):
            raise ConfigError(f"{origin} is invalid:\n  profiles.{name}: must be a mapping of overrides")
        if "profile" in override or "profiles" in override:
            raise ConfigError(f"{origin} is invalid:\n  profiles.{name}: a profile cannot set profile or profiles")
        _validate(deep_merge(raw, override), f"{origin} (profile {name!r})", set())
    active = tree.get("profile", PAPER_PROFILE)
    if active != PAPER_PROFILE and active not in profiles:
        allowed = ", ".join([PAPER_PROFILE, *profiles])
        source = " [from --set]" if "profile" in overridden else ""
        raise ConfigError(f"{origin} is invalid:\n  profile: unknown profile {active!r}; allowed: {allowed}{source}")
    if active != PAPER_PROFILE:
        # Overrides win over the profile: re-apply them after merging it in.
        tree = apply_overrides(deep_merge(tree, profiles[active]), overrides)
    return _validate(tree, origin, overridden)


def load_params(path: str | Path = DEFAULT_PARAMS_FILE, overrides: Iterable[str] = ()) -> Params:
    """Read, merge and validate `params.yaml`; raises ConfigError naming every offending key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} not found (run from the repository root or pass --params)")
    try:
        raw = _load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return resolve(raw, overrides, origin=str(path))


def to_yaml(params: Params) -> str:
    """The resolved parameters as YAML (what a run actually used), without the profile definitions."""
    return yaml.safe_dump(params.model_dump(exclude={"profiles"}), sort_keys=False)
