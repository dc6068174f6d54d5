"""The `sanet` command line: commands, overrides and the clear-error contract (exit 2, one message, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sanet.cli import main
from sanet.config import SynthParams
from sanet.data.benchmarks import BENCHMARKS
from sanet.hpo.spaces import SPACES


@pytest.fixture(autouse=True)
def _in_repo(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo_root)  # params.yaml is found relative to the working directory, as for users


@pytest.fixture(scope="module")
def tiny_root(repo_root: Path, tiny_synth_sets: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny benchmark of tests/conftest.py, written by `sanet synth --set ...`."""
    out = tmp_path_factory.mktemp("cli") / "data"
    os.chdir(repo_root)
    assert main(["synth", "--out", str(out), "--quiet", *tiny_synth_sets]) == 0
    return out


def test_synth_then_stats_prints_every_benchmark(
    tiny_root: Path, tiny_synth: SynthParams, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "stats", "--root", str(tiny_root)]) == 0
    out = capsys.readouterr().out
    printed = {line.split()[0] for line in out.splitlines()[2:]}
    assert printed == set(BENCHMARKS)
    market_query = next(line for line in out.splitlines() if line.startswith("market1501") and "query" in line)
    test_ids = tiny_synth.market.test_ids
    assert market_query.split()[2:4] == [str(test_ids), str(2 * test_ids)]  # the --set identities, 2 queries each


def test_synth_seed_flag_changes_the_data(tiny_synth_sets: list[str], tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["synth", "--out", str(a), "--quiet", "--seed", "1", *tiny_synth_sets]) == 0
    assert main(["synth", "--out", str(b), "--quiet", "--seed", "2", *tiny_synth_sets]) == 0
    name = "Partial-REID_Dataset/whole_body_images/001_01.jpg"
    assert (a / name).read_bytes() != (b / name).read_bytes()
    assert '"seed": 1' in (a / "SYNTHETIC.json").read_text()


def test_preview_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "sheet.png"
    assert main(["synth", "--preview", str(target)]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "contact sheet" in capsys.readouterr().out


def test_config_show_applies_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", "model.afe.layers=7", "--set", "profile=paper"]) == 0
    out = capsys.readouterr().out
    assert "# profile: paper" in out and "layers: 7" in out and "backbone: resnet50" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["config", "show", "--set", "model.afe.kernel=2"], "model.afe.kernel: must be odd"),
        (["synth", "--preview", "x.png", "--set", "model.afe.layer=2"], "model.afe.layer: unknown key"),
        (["data", "stats", "--root", "/nonexistent/root"], "/nonexistent/root"),
        (["config", "show", "--params", "/nonexistent/params.yaml"], "not found"),
        (["promote", "--version", "1", "--reason", "x", "--set", "registry.tolerance.mAP=2"], "registry.tolerance.mAP"),
    ],
)
def test_bad_input_exits_2_with_one_message(argv: list[str], fragment: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not Path("x.png").exists()  # validation happens before any work


def test_an_unknown_search_space_is_refused_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["hpo", "--space", "depth"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'depth'" in err and all(f"'{space}'" in err for space in SPACES)


def test_corrupt_image_is_named(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    victim = root / "Partial_iLIDS" / "Gallery" / "002.jpg"
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    assert main(["data", "stats", "--root", str(root)]) == 2
    assert str(victim) in capsys.readouterr().err
    assert main(["data", "stats", "--root", str(root), "--no-verify"]) == 0


def test_empty_root_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Market-1501-v15.09.15" in err and "PartialILIDS" in err


def test_console_script_runs_and_disables_telemetry(repo_root: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("sanet")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "DVC_NO_ANALYTICS")}
    probe = "import os, sanet.cli; print(os.environ['MLFLOW_DISABLE_TELEMETRY'], os.environ['DVC_NO_ANALYTICS'])"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["true", "1"]
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=repo_root)
    assert result.returncode == 0 and "synth" in result.stdout and "data" in result.stdout
