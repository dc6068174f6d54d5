"""The SANet model: every variant and AFE setting (timm style, tiny inputs, CPU), routing, weights and costs."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from torch import nn
from torchvision.models import resnet18, resnet34

from sanet.cli import main
from sanet.config import ConfigError, Params, resolve
from sanet.contracts.parts import GLOBAL_INDEX, NUM_PARTS
from sanet.contracts.variants import VARIANTS
from sanet.model.afe import AFE, NOT_REACHED, Cell
from sanet.model.backbone import BACKBONES, build_backbone, imagenet_weights_file
from sanet.model.cost import count_macs, count_parameters, format_costs, model_costs
from sanet.model.errors import WeightsError
from sanet.model.sanet import SANet, build_model
from sanet.report.paper_results import PAPER_AFE, TABLE4_KERNELS, TABLE4_LAYERS
from sanet.train.losses import build_criterion

HEIGHT, WIDTH, NUM_CLASSES = 64, 32, 4
SMALL = [
    "model.backbone=resnet18",
    "model.pretrained=none",
    "model.afe.width=8",
    "model.mfe.seg_channels=8",
    "model.mfe.width=0",  # the paper's branches: layer4 copies (the demo profile's narrow ones have their own test)
]

# Every variant of the registry: those with an AFE over Table 4's grid (layers x kernel), the others (no AFE) once,
# at the paper's setting. The forward test checks that the AFE variants are the ones the model gives an AFE.
AFE_VARIANTS = ("fixed_fe", "sanet")
CASES = [
    (variant, layers, kernel)
    for variant in VARIANTS
    for layers, kernel in (itertools.product(TABLE4_LAYERS, TABLE4_KERNELS) if variant in AFE_VARIANTS else [PAPER_AFE])
]


@pytest.fixture(scope="module")
def raw(params_file: Path) -> dict:
    return yaml.safe_load(params_file.read_text())


def small_params(raw: dict, *overrides: str) -> Params:
    return resolve(raw, [*SMALL, *overrides])


def small_model(raw: dict, variant: str, layers: int = 5, kernel: int = 3, overrides: tuple[str, ...] = ()) -> SANet:
    torch.manual_seed(0)
    settings = [f"model.variant={variant}", f"model.afe.layers={layers}", f"model.afe.kernel={kernel}", *overrides]
    return build_model(small_params(raw, *settings), NUM_CLASSES)


def batch(size: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, pids (two images per identity) and band-shaped part labels (every part present)."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(size, 3, HEIGHT, WIDTH, generator=generator)
    pids = torch.arange(size) // 2 % NUM_CLASSES
    labels = torch.zeros(size, NUM_PARTS, HEIGHT, WIDTH)
    for part, (top, bottom) in enumerate([(0, 12), (12, 32), (32, 52), (52, 64)]):
        labels[:, part, top:bottom] = 1.0
    labels[:, GLOBAL_INDEX] = 1.0
    return images, pids, labels


def wake_zero_init(model: SANet) -> None:
    """The residual AFE's output BNs start at scale 0, which blocks its gradients at the very first step only; and a
    branch whose mask is nowhere above 0.5 pools nothing (binary Eq. 4), so open every mask for the gradient check."""
    if model.afe is not None:
        for head in model.afe.heads:
            nn.init.ones_(head[1].weight)
    for branch in model.branches:
        nn.init.constant_(branch.seg_head[3].bias, 2.0)


@pytest.mark.parametrize(("variant", "layers", "kernel"), CASES)
def test_training_forward_shapes_finite_and_every_parameter_gets_a_gradient(
    raw: dict, variant: str, layers: int, kernel: int
) -> None:
    model = small_model(raw, variant, layers, kernel)
    wake_zero_init(model)
    images, pids, labels = batch()
    out = model.train()(images)
    branches = 4 if variant == "hpnet" else 5
    assert out["parts"] == tuple(range(branches))
    assert out["logits"].shape == (4, branches, NUM_CLASSES)
    assert out["features"].shape == (4, branches, 512)  # resnet18's layer4 width
    assert out["masks"].shape == (4, branches, HEIGHT // 16, WIDTH // 16)
    assert out["visibility"].shape == (4, branches) and out["visibility"].dtype == torch.bool
    for key in ("logits", "features", "masks"):
        assert torch.isfinite(out[key]).all(), key
    assert (model.afe is not None) == (variant in AFE_VARIANTS)
    if variant in AFE_VARIANTS:
        assert out["path_weights"].shape == (4, layers, 3, 3)
    assert ("routing" in out) == (variant == "sanet")

    loss, terms = build_criterion(small_params(raw))(out, pids, labels)
    assert torch.isfinite(loss) and terms["total"] == pytest.approx(loss.item())
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not no_grad, f"parameters without a gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize(("variant", "layers", "kernel"), CASES)
def test_eval_forward_returns_five_part_features_and_visibility(
    raw: dict, variant: str, layers: int, kernel: int
) -> None:
    model = small_model(raw, variant, layers, kernel).eval()
    images, _, _ = batch()
    with torch.no_grad():
        out = model(images)
    assert out["features"].shape == (4, NUM_PARTS, 512) and out["features"].dtype == torch.float32
    assert out["visibility"].shape == (4, NUM_PARTS) and out["visibility"].dtype == torch.bool
    assert out["masks"].shape == (4, NUM_PARTS, HEIGHT // 16, WIDTH // 16)
    assert torch.isfinite(out["features"]).all()
    if variant == "hpnet":
        assert not out["features"][:, GLOBAL_INDEX].any() and not out["visibility"][:, GLOBAL_INDEX].any()
        assert (out["masks"][:, GLOBAL_INDEX].sigmoid() == 0).all()


def sharp_gates(model: SANet, scale: float = 50.0) -> None:
    """Make the gates depend on the image more than on their bias, so that images take different routes."""
    assert model.afe is not None
    for cells in model.afe.cells:
        for cell in cells.values():
            cell.gate.weight.data.mul_(scale)


def test_eval_routing_is_one_hot_deterministic_and_a_chain(raw: dict) -> None:
    model = small_model(raw, "sanet", 5, 3).eval()
    sharp_gates(model)
    images = torch.randn(8, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        first, second = model(images), model(images)
    assert torch.equal(first["routing"], second["routing"])
    assert torch.equal(first["features"], second["features"])
    weights, routing = first["path_weights"], first["routing"]
    reached = routing != NOT_REACHED
    assert set(weights.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(weights.sum(-1), reached.float())  # one path per reached cell, none elsewhere
    assert (reached.sum(-1) == 1).all()  # one cell per layer and image: a single chain
    assert (routing[:, 0, 1] != NOT_REACHED).all() and (routing[:, 0, [0, 2]] == NOT_REACHED).all()  # entry cell
    scale = reached.float().argmax(-1)  # (B, layers): the scale index of each image's cell
    path = routing.gather(2, scale.unsqueeze(-1)).squeeze(-1)
    assert torch.equal(scale[:, 1:], scale[:, :-1] + path[:, :-1] - 1)  # each path leads to the next cell
    assert len({tuple(r.flatten().tolist()) for r in routing}) > 1, "the test needs images on different routes"


def test_eval_computes_only_the_cells_images_reach(raw: dict) -> None:
    model = small_model(raw, "sanet", 7, 3).eval()
    sharp_gates(model)
    calls: dict[tuple[int, int], int] = {}
    assert model.afe is not None
    for layer, cells in enumerate(model.afe.cells):
        for key, cell in cells.items():

            def count(_module: nn.Module, inputs: tuple[torch.Tensor], _out: object, at=(layer, int(key))) -> None:
                calls[at] = calls.get(at, 0) + inputs[0].shape[0]

            cell.refine.register_forward_hook(count)
    images = torch.randn(8, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        routing = model(images)["routing"]
    reached = (routing != NOT_REACHED).sum(0)  # (layers, 3): images per cell
    expected = {(layer, s): int(reached[layer, s]) for layer, s in reached.nonzero().tolist()}
    assert calls == expected  # every computed cell saw exactly its images; unreached cells never ran
    assert sum(calls.values()) == 8 * 7
    assert len(calls) < 1 + 3 * 6  # some reachable cells were skipped


def test_an_images_result_does_not_depend_on_its_batch(raw: dict) -> None:
    model = small_model(raw, "sanet", 5, 3).eval()
    sharp_gates(model)
    images = torch.randn(6, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        together = model(images)
        alone = [model(images[i : i + 1]) for i in range(6)]
    assert torch.equal(together["routing"], torch.cat([a["routing"] for a in alone]))
    torch.testing.assert_close(together["features"], torch.cat([a["features"] for a in alone]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("training", [True, False])
def test_fixed_fe_uses_every_path(raw: dict, training: bool) -> None:
    model = small_model(raw, "fixed_fe", 3, 3).train(training)
    assert model.afe is not None
    called: set[str] = set()
    for name, module in model.afe.named_modules():
        if isinstance(module, Cell):
            for path, transform in module.transforms.items():
                transform.register_forward_hook(lambda *_, n=f"{name}.{path}": called.add(n))
    expected = {f"{n}.{p}" for n, m in model.afe.named_modules() if isinstance(m, Cell) for p in m.transforms}
    with torch.set_grad_enabled(training):
        out = model(batch()[0])
    assert called == expected
    weights = out["path_weights"]
    assert (weights[:, 0, 1] == 1).all() and not weights[:, 0, [0, 2]].any()  # the entry cell only
    assert weights[:, 1:].sum().item() == 4 * 2 * 7  # 2 + 3 + 2 paths in each later layer
    assert "routing" not in out and model.temperature is None


def test_training_routing_samples_and_the_temperature_is_settable(raw: dict) -> None:
    model = small_model(raw, "sanet", 3, 3, overrides=("model.afe.temperature=1.5",)).train()
    assert model.temperature == 1.5  # the configured starting temperature
    model.set_temperature(0.5)
    assert model.temperature == 0.5 and model.afe is not None and model.afe.temperature == 0.5
    with pytest.raises(ValueError, match="positive"):
        model.temperature = 0.0
    weights = model(batch()[0])["path_weights"]
    torch.testing.assert_close(weights[:, 1:].sum(-1), torch.ones(4, 2, 3))  # Gumbel weights of every cell sum to 1
    assert ((weights > 0) & (weights < 1)).any()  # soft samples by default


def test_hard_sampling_is_one_hot_in_training(raw: dict) -> None:
    model = small_model(raw, "sanet", overrides=("model.afe.hard=true",))
    weights = model.train()(batch()[0])["path_weights"]
    assert set(weights.unique().tolist()) <= {0.0, 1.0}


def test_hard_training_computes_only_the_cells_on_each_images_path(raw: dict) -> None:
    """`hard: true` trains like it evaluates: a cell off an image's sampled path neither runs on it nor lets it into
    its BatchNorm statistics (the old dense training fed such cells zeros, which train-mode BN turned non-zero)."""
    model = small_model(raw, "sanet", 5, 3, overrides=("model.afe.hard=true",)).train()
    sharp_gates(model, scale=5.0)
    wake_zero_init(model)
    assert model.afe is not None
    calls: dict[tuple[int, int], int] = {}
    for layer, cells in enumerate(model.afe.cells):
        for key, cell in cells.items():

            def count(_module: nn.Module, inputs: tuple[torch.Tensor], _out: object, at=(layer, int(key))) -> None:
                calls[at] = calls.get(at, 0) + inputs[0].shape[0]

            cell.refine.register_forward_hook(count)
    before = {name: buf.clone() for name, buf in model.afe.named_buffers() if "running_mean" in name}
    images = torch.randn(8, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(5))
    out = model(images)
    reached = (out["routing"] != NOT_REACHED).sum(0)
    assert calls == {(layer, s): int(reached[layer, s]) for layer, s in reached.nonzero().tolist()}
    assert sum(calls.values()) == 8 * 5  # one cell per layer and image
    unreached = [(layer, s) for layer in range(1, 5) for s in range(3) if (layer, s) not in calls]
    assert unreached, "the test needs a cell that no image reached"
    for layer, s in unreached:
        name = f"cells.{layer}.{s}.refine.1.running_mean"
        assert torch.equal(dict(model.afe.named_buffers())[name], before[name])
    out["features"].sum().backward()  # the straight-through samples train the gates
    gates = [cell.gate.weight.grad for cells in model.afe.cells for cell in cells.values() if cell.gate is not None]
    assert any(g is not None and g.abs().sum() > 0 for g in gates)


@pytest.mark.parametrize("pool_mask", ["binary", "soft"])
def test_binary_pooling_leaves_the_mask_to_the_focal_loss(raw: dict, pool_mask: str) -> None:
    """HPNet pools with the binarised mask: ID and triplet gradients do not reach the segmentation head; soft
    pooling (our earlier default, `pool_mask: soft`) lets them shape it."""
    model = small_model(raw, "global", overrides=(f"model.mfe.pool_mask={pool_mask}",))
    wake_zero_init(model)
    images, pids, labels = batch()
    out = model.train()(images)
    params = small_params(raw, "loss.focal_weight=0", f"model.mfe.pool_mask={pool_mask}")
    loss, _ = build_criterion(params)(out, pids, labels)
    loss.backward()
    head_grad = sum(float(b.seg_head[0].weight.grad.abs().sum()) for b in model.branches)
    assert (head_grad == 0) == (pool_mask == "binary")
    binary = (out["masks"].sigmoid() > 0.5).float()
    pooled = (binary[:, 0, None] * model.branches[0].layer4(model.trunk(images))).amax(dim=(2, 3))
    if pool_mask == "binary":
        torch.testing.assert_close(out["features"][:, 0], pooled)


def test_residual_afe_starts_as_the_identity(raw: dict) -> None:
    model = small_model(raw, "sanet", 5, 3).eval()
    x = torch.relu(torch.randn(2, 256, 4, 2))
    assert model.afe is not None
    torch.testing.assert_close(model.afe(x).features, x)


def test_branches_are_unshared_copies_of_layer4_with_last_stride_one(raw: dict) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", "none")
    params = small_params(raw)
    model = SANet(backbone, "global", NUM_CLASSES, params.model.afe, params.model.mfe)
    reference = backbone.layer4.state_dict()
    for branch in model.branches:
        for key, value in branch.layer4.state_dict().items():
            assert torch.equal(value, reference[key])
    first, second = model.branches[0].layer4[0].conv1.weight, model.branches[1].layer4[0].conv1.weight
    assert first.data_ptr() != second.data_ptr()
    assert model.branches[0].layer4(torch.randn(1, 256, 4, 2)).shape == (1, 512, 4, 2)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_narrow_branches_are_fresh_independent_stages_of_layer4s_blocks(raw: dict, backbone: str) -> None:
    params = small_params(raw, f"model.backbone={backbone}", "model.mfe.width=64")
    torch.manual_seed(0)
    model = build_model(params, NUM_CLASSES)
    reference = build_backbone(backbone, "none").layer4
    trunk_channels = getattr(torchvision.models, backbone)().layer4[0].conv1.in_channels  # torchvision's layer3 width
    for branch in model.branches:
        assert [type(block) for block in branch.layer4] == [type(block) for block in reference]
        assert branch.layer4(torch.randn(1, trunk_channels, 4, 2)).shape == (1, 64, 4, 2)  # stride 1, 64 channels
        assert branch.classifier.in_features == branch.bnneck.num_features == 64
    first, second = (branch.layer4[0].conv1.weight for branch in model.branches[:2])
    assert not torch.equal(first, second)  # each branch draws its own initialisation
    out = model.eval()(torch.randn(2, 3, HEIGHT, WIDTH))
    assert out["features"].shape == (2, NUM_PARTS, 64) and model.feature_dim == 64
    wide = build_model(small_params(raw, f"model.backbone={backbone}"), NUM_CLASSES)
    assert count_parameters(model.branches) < count_parameters(wide.branches) / 8


def test_the_loss_halves_within_30_steps_on_a_fixed_batch(raw: dict) -> None:
    model = small_model(raw, "sanet", 3, 3).train()
    images, pids, labels = batch(8)
    criterion = build_criterion(small_params(raw))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)  # the paper's optimiser
    losses: list[float] = []
    for _ in range(30):
        loss, _ = criterion(model(images), pids, labels)
        losses.append(loss.item())
        if losses[-1] <= 0.5 * losses[0]:
            break
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert losses[-1] <= 0.5 * losses[0], losses


# --- weights -------------------------------------------------------------------------------------------------------


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path


def test_torchvision_file_names() -> None:
    assert imagenet_weights_file("resnet50").name == "resnet50-0676ba61.pth"
    assert imagenet_weights_file("resnet50", "IMAGENET1K_V2").name == "resnet50-11ad3fa6.pth"
    assert imagenet_weights_file("resnet18").name == "resnet18-f37072fd.pth"


def test_missing_imagenet_weights_name_the_file_and_do_not_download(raw: dict, torch_home: Path) -> None:
    params = small_params(raw, "model.pretrained=imagenet")
    expected = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsError) as info:
        build_model(params, NUM_CLASSES)
    message = str(info.value)
    assert str(expected) in message and "not found" in message and "\n" not in message


def test_missing_weights_through_the_cli_exit_2_without_traceback(
    repo_root: Path, torch_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(repo_root)
    # the demo's narrow branches have no pretrained weights: the paper's layer4 copies go with ImageNet weights
    assert main(["model", "check", "--set", "model.pretrained=imagenet", "--set", "model.mfe.width=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sanet model: error: ImageNet weights for resnet18") and "Traceback" not in err
    assert str(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in err


def test_imagenet_weights_are_read_from_the_hub_cache(torch_home: Path) -> None:
    reference = resnet18()
    path = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18", "imagenet")
    assert torch.equal(backbone.trunk[0].weight, reference.conv1.weight)
    assert torch.equal(backbone.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)


def test_a_weight_file_path_loads_without_the_classifier(tmp_path: Path) -> None:
    reference = resnet18()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    backbone = build_backbone("resnet18", str(tmp_path / "w.pth"))
    assert torch.equal(backbone.trunk[6][0].conv1.weight, reference.layer3[0].conv1.weight)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("resnet34", "unexpected"),
        ("truncated", "missing"),
        ("garbage", "not a readable state dict"),
        ("absent", "not found"),
    ],
)
def test_unusable_weight_files_are_clear_errors(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "w.pth"
    if content == "resnet34":
        torch.save(resnet34().state_dict(), path)
    elif content == "truncated":
        torch.save(dict(list(resnet18().state_dict().items())[:10]), path)
    elif content == "garbage":
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=fragment) as info:
        build_backbone("resnet18", str(path))
    assert str(path) in str(info.value)


def test_model_parameters_are_validated(raw: dict) -> None:
    with pytest.raises(ConfigError, match=r"model: .*IMAGENET1K_V2 exists for resnet50 only"):
        resolve(raw, ["model.imagenet_weights=IMAGENET1K_V2"])  # demo profile: resnet18
    with pytest.raises(ConfigError, match=r"model\.afe\.temperature: "):
        resolve(raw, ["model.afe.temperature=0"])
    with pytest.raises(ConfigError, match=r"model\.mfe\.test_feature: "):
        resolve(raw, ["model.mfe.test_feature=mean"])
    with pytest.raises(ConfigError, match=r"model: .*mfe\.width 64 .* needs pretrained: none"):
        resolve(raw, ["profile=paper", "model.mfe.width=64"])
    with pytest.raises(ConfigError, match=r"model\.mfe\.width: "):
        resolve(raw, ["model.mfe.width=-1"])
    paper = resolve(raw, ["profile=paper"])
    assert paper.model.mfe.width == 0  # the paper: every branch a copy of the pretrained layer4
    assert (paper.model.afe.width, paper.model.afe.hard, paper.model.mfe.test_feature) == (128, False, "pre_bn")


# --- cost ----------------------------------------------------------------------------------------------------------


def test_costs_grow_with_the_afe_and_sanet_is_cheaper_than_fixed_fe(raw: dict) -> None:
    params = small_params(raw)
    rows = model_costs(params.model, (HEIGHT, WIDTH), layers=(3, 5), kernels=(1, 3), batch=2)
    cost = {(r.variant, r.layers, r.kernel): r for r in rows}
    assert cost[("hpnet", None, None)].macs < cost[("global", None, None)].macs < cost[("fixed_fe", 3, 1)].macs
    assert cost[("fixed_fe", 3, 1)].params < cost[("fixed_fe", 5, 3)].params
    for layers, kernel in [(3, 1), (5, 3)]:
        assert cost[("sanet", layers, kernel)].macs < cost[("fixed_fe", layers, kernel)].macs
        assert cost[("sanet", layers, kernel)].afe_params > 0
    assert "fixed_fe" in format_costs(rows)


def test_counters_match_a_hand_count() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten())
    assert count_macs(conv, torch.randn(2, 3, 4, 4)) == 8 * 3 * 9 * 16
    assert count_parameters(conv) == 8 * 3 * 9
    afe = AFE(16, layers=1, kernel=1, width=4, adaptive=False)
    assert count_parameters(afe) == sum(p.numel() for p in afe.parameters())


def test_model_summary_command(
    repo_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo_root)
    overrides = [arg for override in SMALL for arg in ("--set", override)]
    argv = ["model", "summary", "--layers", "3", "--kernels", "1", "--variants", "global", "sanet", *overrides]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "resnet18, input 128x64" in out  # the demo profile's input
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["global", "sanet"]
