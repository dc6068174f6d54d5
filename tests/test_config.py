"""Parameter validation, profiles and `--set` overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanet.config import ConfigError, Params, apply_overrides, load_params, parse_override, resolve


@pytest.fixture(scope="module")
def raw(params_file: Path) -> dict:
    return yaml.safe_load(params_file.read_text())


def test_repository_params_hold_the_papers_settings(raw: dict) -> None:
    paper = resolve(raw, ["profile=paper"])
    assert (paper.input.height, paper.input.width) == (384, 128)
    assert paper.train.optimizer == "sgd" and paper.train.lr == 0.01
    assert paper.train.batch_size == 64 and paper.train.instances_per_id == 4
    assert paper.train.epochs == 150
    assert paper.loss.triplet_weight == 0.1
    assert (paper.model.afe.layers, paper.model.afe.kernel) == (5, 3)
    assert paper.model.backbone == "resnet50" and paper.model.variant == "sanet"
    assert paper.data.train == "market1501" and len(paper.data.evaluate) == 6


def test_demo_profile_applies_on_top_and_keeps_the_methods_hyperparameters(raw: dict) -> None:
    assert raw["profile"] == "demo"
    demo = resolve(raw)
    assert demo.profile == "demo"
    assert demo.model.backbone == "resnet18" and demo.model.pretrained == "none"
    assert (demo.input.height, demo.input.width) == (128, 64) and demo.model.mfe.width == 128
    assert demo.train.epochs < 150 and demo.train.lr == 0.04 and demo.loss.focal_weight == 5.0
    assert (demo.model.afe.layers, demo.model.afe.kernel, demo.loss.triplet_weight) == (5, 3, 0.1)


def test_overrides_win_over_the_profile(raw: dict) -> None:
    params = resolve(raw, ["model.afe.layers=3", "input.height=256", "model.variant=fixed_fe"])
    assert params.model.afe.layers == 3
    assert params.input.height == 256  # demo sets 128; --set is applied last
    assert params.model.variant == "fixed_fe"
    assert params.model.backbone == "resnet18"  # the rest of the profile still applies


def test_load_params_reads_the_file(tmp_path: Path, raw: dict) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert isinstance(load_params(path, ["loss.triplet_weight=0.5"]), Params)
    assert load_params(path, ["loss.triplet_weight=0.5"]).loss.triplet_weight == 0.5


@pytest.mark.parametrize(
    ("override", "key", "fragment"),
    [
        ("model.afe.layers=0", "model.afe.layers", "greater than or equal to 1"),
        ("model.afe.kernel=4", "model.afe.kernel", "must be odd"),
        ("loss.triplet_weight=-0.1", "loss.triplet_weight", "greater than or equal to 0"),
        ("model.afe.layers=three", "model.afe.layers", "valid integer"),
        ("model.afe.layers='5'", "model.afe.layers", "valid integer"),  # strict: no silent str -> int
        ("model.variant=resnet", "model.variant", "'hpnet', 'global', 'fixed_fe' or 'sanet'"),
        ("model.afe.depth=5", "model.afe.depth", "unknown key; allowed keys here: layers, kernel"),
        ("modle.variant=sanet", "modle", "unknown key; allowed keys here: profile, seed, data"),
        ("train.batch_size=30", "train", "multiple of instances_per_id"),
        ("input.width=100", "input", "multiple of 32"),
        ("data.evaluate=[market1501, nope]", "data.evaluate", "unknown benchmark 'nope'"),
        ("evaluation.distance=l1", "evaluation.distance", "'part', 'euclidean' or 'cosine'"),
        ("evaluation.rerank.lambda_value=1.5", "evaluation.rerank.lambda_value", "less than or equal to 1"),
        ("train.val_ids=-1", "train.val_ids", "greater than or equal to 0"),
        ("registry.tolerance.mAP=-0.01", "registry.tolerance.mAP", "greater than or equal to 0"),
        ("registry.model_name='has space'", "registry.model_name", "should match pattern"),
        ("hpo.trials=0", "hpo.trials", "greater than or equal to 1"),
        ("hpo.ranges.afe_kernel=[3, 4]", "hpo.ranges", "distinct odd kernels"),
        ("hpo.ranges.afe_layers={low: 5, high: 3}", "hpo.ranges.afe_layers", "must not be below low"),
        ("hpo.ranges.afe_layers={low: 1, high: 20}", "hpo.ranges", "within 1..16"),
        ("hpo.ranges.triplet_weight={low: 0, high: 1, log: true}", "hpo.ranges.triplet_weight", "needs low > 0"),
        ("hpo.pruning.warmup=3", "hpo.pruning.warmup", "unknown key; allowed keys here: enabled, startup_trials"),
    ],
)
def test_invalid_values_stop_with_the_key_named(raw: dict, override: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(raw, [override])
    message = str(info.value)
    assert f"  {key}: " in message
    assert fragment in message


def test_errors_point_at_the_override_that_caused_them(raw: dict) -> None:
    with pytest.raises(ConfigError, match=r"model\.afe\.kernel: .*\[from --set\]"):
        resolve(raw, ["model.afe.kernel=2"])


def test_every_error_is_reported_at_once(raw: dict) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(raw, ["model.afe.layers=0", "loss.triplet_weight=-1"])
    assert "model.afe.layers" in str(info.value) and "loss.triplet_weight" in str(info.value)


def test_an_invalid_inactive_profile_is_caught_at_start_up(raw: dict) -> None:
    broken = apply_overrides(raw, ["profiles.broken.model.afe.kernel=2"])
    with pytest.raises(ConfigError, match=r"profile 'broken'.*\n  model\.afe\.kernel: must be odd"):
        resolve(broken)


def test_unknown_profile_lists_the_known_ones(raw: dict) -> None:
    with pytest.raises(ConfigError, match="unknown profile 'fast'; allowed: paper, demo"):
        resolve(raw, ["profile=fast"])


def test_invalid_key_in_the_file_names_the_file(tmp_path: Path, raw: dict) -> None:
    raw = apply_overrides(raw, ["train.epochz=3"])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"{path} is invalid:\n  train\.epochz: unknown key"):
        load_params(path)


def test_missing_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize("text", ["model.afe.layers", "=3", "model..layers=3"])
def test_malformed_override_syntax(text: str) -> None:
    with pytest.raises(ConfigError, match=r"expected key\.sub=value"):
        parse_override(text)


def test_override_values_are_yaml_typed() -> None:
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=0.5") == (["a"], 0.5)
    assert parse_override("a=[x, y]") == (["a"], ["x", "y"])
    assert parse_override("a=none") == (["a"], "none")
    assert parse_override("a=5e-4") == (["a"], 0.0005)  # YAML 1.2 floats, not YAML 1.1 strings
    assert parse_override("a=1E+2") == (["a"], 100.0)


def test_override_cannot_descend_into_a_value(raw: dict) -> None:
    with pytest.raises(ConfigError, match=r"model\.variant is a value"):
        resolve(raw, ["model.variant.kind=x"])


def test_resolved_params_are_immutable(raw: dict) -> None:
    params = resolve(raw)
    with pytest.raises(Exception, match="frozen"):
        params.model.afe.layers = 7  # type: ignore[misc]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=st.integers(1, 16), kernel=st.integers(0, 4).map(lambda k: 2 * k + 1), weight=st.floats(0, 10))
def test_any_value_in_range_is_accepted_as_given(raw: dict, layers: int, kernel: int, weight: float) -> None:
    overrides = [f"model.afe.layers={layers}", f"model.afe.kernel={kernel}", f"loss.triplet_weight={weight!r}"]
    params = resolve(raw, overrides)
    assert (params.model.afe.layers, params.model.afe.kernel) == (layers, kernel)
    assert params.loss.triplet_weight == weight


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kernel=st.integers(-10, 10).filter(lambda k: k < 1 or k % 2 == 0), layers=st.integers(-5, 0))
def test_any_value_out_of_range_is_rejected(raw: dict, kernel: int, layers: int) -> None:
    for override, key in (
        (f"model.afe.kernel={kernel}", "model.afe.kernel"),
        (f"model.afe.layers={layers}", "model.afe.layers"),
    ):
        with pytest.raises(ConfigError, match=rf"  {re.escape(key)}: "):
            resolve(raw, [override])
