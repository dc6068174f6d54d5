"""`sanet plots`: DVC's plots as an HTML page that needs no outside request.

A small DVC repository (two CSV plots, one image folder) is rendered once per module. The page is checked twice:
statically (every script inline, nothing with a remote src/href, the vendored vega code present, one vega-embed call
per plot) and dynamically, in node, by `tools/plots/check_render.mjs`, which runs the page's own inlined scripts with
the network switched off and renders every plot to SVG. The vendored JavaScript comes from `make plots`
(`npm ci --prefix tools/plots`); without it these tests fail with that hint rather than skip.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from paths import REPO_ROOT

from sanet.infra.errors import PlotsError
from sanet.report.plots_page import VENDOR_FILES, render_offline_plots

PLOTS_TOOL = REPO_ROOT / "tools" / "plots"
VENDOR = PLOTS_TOOL / "node_modules"
CHECK_RENDER = PLOTS_TOOL / "check_render.mjs"
REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)

DVC_YAML = """\
plots:
  - Training loss:
      x: epoch
      y:
        outputs/train/history.csv: [loss, id, triplet, focal]
  - CMC:
      template: linear
      x: rank
      y:
        reports/eval/market1501/cmc.csv: cmc
        reports/eval/partial_reid/cmc.csv: cmc
      x_label: rank
      y_label: matching rate
  - reports/figures
"""


def _png(width: int = 2, height: int = 2) -> bytes:
    """A tiny valid grey PNG (no image library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _make_repo(root: Path, dvc_yaml: str = DVC_YAML) -> Path:
    """git + DVC repository with a training history, two CMC curves, one figure and only top-level plots."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    history = "epoch,loss,id,triplet,focal\n" + "".join(
        f"{e},{3.0 - 0.4 * e:.2f},{2.0 - 0.3 * e:.2f},{0.5 - 0.05 * e:.2f},{0.5 - 0.05 * e:.2f}\n" for e in range(6)
    )
    files = {
        "outputs/train/history.csv": history,
        "reports/eval/market1501/cmc.csv": "rank,cmc\n1,0.61\n2,0.72\n3,0.80\n4,0.85\n",
        "reports/eval/partial_reid/cmc.csv": "rank,cmc\n1,0.42\n2,0.55\n3,0.63\n4,0.70\n",
        "dvc.yaml": dvc_yaml,
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "reports/figures").mkdir(parents=True, exist_ok=True)
    (root / "reports/figures/cmc.png").write_bytes(_png())
    return root


def _require_vendor() -> None:
    if not all((VENDOR / rel).is_file() for rel in VENDOR_FILES.values()):
        pytest.fail(f"{VENDOR} lacks vega/vega-lite/vega-embed: run `make plots` (npm ci --prefix tools/plots) first")
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: install Node.js (>= 18) to check the plots page")


def _check_render(page: Path) -> tuple[int, dict]:
    done = subprocess.run(["node", str(CHECK_RENDER), str(page)], capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert lines, f"check_render.mjs printed nothing; stderr: {done.stderr[-2000:]}"
    return done.returncode, json.loads(lines[-1])


class _Page(HTMLParser):
    """Every start tag with its attributes, and the text of every <script> and <style>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.styles: list[str] = []
        self._open: tuple[str, dict[str, str | None]] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._open = (tag, dict(attrs))
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag == self._open[0]:
            if tag == "script":
                self.scripts.append((self._open[1], "".join(self._text)))
            else:
                self.styles.append("".join(self._text))
            self._open = None


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page of the example repository, rendered once (DVC takes about a second)."""
    _require_vendor()
    repo = _make_repo(tmp_path_factory.mktemp("plots") / "repo")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(repo)
        page = render_offline_plots(out_dir=Path("reports/plots"), vendor_dir=VENDOR)
    assert page == Path("reports/plots/index.html")
    return repo / page


def test_page_makes_no_outside_request(rendered: Path) -> None:
    parsed = _Page()
    parsed.feed(rendered.read_text(encoding="utf-8"))

    for tag, attrs in parsed.tags:
        assert tag not in ("link", "iframe", "object", "embed", "base"), f"<{tag}> could load something"
        for name in ("src", "href", "srcset", "data", "action", "poster"):
            value = attrs.get(name)
            if value and REMOTE.match(value) and not (tag == "a" and name == "href"):
                pytest.fail(f"<{tag} {name}={value!r}> loads from the network")
    assert all("src" not in attrs and code.strip() for attrs, code in parsed.scripts), "every <script> is inline"
    assert not any("url(" in css or "@import" in css for css in parsed.styles)
    assert "sourceMappingURL" not in rendered.read_text(encoding="utf-8")
    csp = [a.get("content") or "" for t, a in parsed.tags if t == "meta" and a.get("http-equiv")]
    assert any("default-src 'none'" in c for c in csp), "the page forbids network loads with a CSP"

    # The vendored bundles are inlined whole (their opening bytes match node_modules).
    vendor = {attrs["data-vendor"]: code for attrs, code in parsed.scripts if attrs.get("data-vendor")}
    assert set(vendor) == set(VENDOR_FILES)
    for package, rel in VENDOR_FILES.items():
        original = (VENDOR / rel).read_text(encoding="utf-8")
        assert original[:2000] in vendor[package] and len(vendor[package]) > 0.95 * len(original)

    # One vega-embed call per vega plot, each into a div of the page; the image plot is a local file.
    ids = {attrs["id"] for _, attrs in parsed.tags if attrs.get("id")}
    plot_code = [code for attrs, code in parsed.scripts if not attrs.get("data-vendor")]
    targets = [m for code in plot_code for m in re.findall(r'vegaEmbed\("#([\w-]+)"', code)]
    assert len(targets) == 2 and len(set(targets)) == 2 and set(targets) <= ids
    assert all(code.count("vegaEmbed(") == 1 for code in plot_code)
    images = [attrs["src"] for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == 1 and images[0].startswith("static/")
    assert (rendered.parent / images[0]).read_bytes() == _png()


def test_every_plot_renders_offline_in_node(rendered: Path) -> None:
    code, result = _check_render(rendered)
    assert code == 0 and result["ok"], result["errors"]
    assert [p["id"] for p in result["plots"]] == ["plot-1", "plot-2"]
    assert all(p["marks"] > 0 and p["svgBytes"] > 1000 for p in result["plots"])


def test_render_check_fails_on_network_loads_and_empty_plots(rendered: Path, tmp_path: Path) -> None:
    """The node check is not vacuous: a spec with remote data, an empty plot or a CDN script make it fail."""
    html = rendered.read_text(encoding="utf-8")
    values = re.compile(r'"data": \{"values": \[[^\]]*\]\}')
    assert len(values.findall(html)) == 2
    cases = {
        "remote_data": (values.sub('"data": {"url": "https://example.org/cmc.csv"}', html, count=1), "network"),
        "empty": (values.sub('"data": {"values": []}', html, count=1), "rendered no marks"),
        "cdn_script": (html.replace("<body>", '<body><script src="https://cdn.example/vega.js"></script>'), "src"),
    }
    for name, (text, expected) in cases.items():
        page = tmp_path / f"{name}.html"
        page.write_text(text, encoding="utf-8")
        code, result = _check_render(page)
        assert code == 1 and not result["ok"], name
        assert any(expected in error for error in result["errors"]), (name, result["errors"])


def test_missing_vendor_dir_raises_with_make_plots_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PlotsError, match=r"make plots") as raised:
        render_offline_plots(out_dir=tmp_path / "out", vendor_dir=tmp_path / "node_modules")
    assert "npm ci --prefix tools/plots" in str(raised.value) and "vega" in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_missing_plot_file_and_dvc_failure_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _require_vendor()
    repo = _make_repo(tmp_path / "repo", DVC_YAML.replace("partial_reid/cmc.csv", "partial_ilids/cmc.csv"))
    monkeypatch.chdir(repo)
    with pytest.raises(PlotsError, match=r"reports/eval/partial_ilids/cmc\.csv") as raised:
        render_offline_plots(out_dir=Path("reports/plots"), vendor_dir=VENDOR)
    assert "dvc repro" in str(raised.value)
    assert not (repo / "reports/plots/index.html").exists()
    assert list((repo / "reports/plots").iterdir()) == [], "no staging folder is left behind"

    (repo / "dvc.yaml").write_text("plots:\n  - CMC: [\n")  # broken YAML: DVC reports it as a load error
    with pytest.raises(PlotsError, match=r"revision workspace \(YAMLSyntaxError: .*dvc\.yaml"):
        render_offline_plots(out_dir=Path("reports/plots"), vendor_dir=VENDOR)

    (repo / ".dvc/config").write_text("[core\nbroken")  # DVC exits non-zero: its own message is passed on
    with pytest.raises(PlotsError, match=r"`dvc plots show` failed \(exit status \d+\)[\s\S]*config file error"):
        render_offline_plots(out_dir=Path("reports/plots"), vendor_dir=VENDOR)


def test_no_plots_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _require_vendor()
    monkeypatch.chdir(_make_repo(tmp_path / "repo", "stages: {}\n"))
    with pytest.raises(PlotsError, match=r"DVC found no plots .*top-level `plots:` of dvc\.yaml"):
        render_offline_plots(out_dir=Path("reports/plots"), vendor_dir=VENDOR)


def test_rerender_replaces_the_page_and_its_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _require_vendor()
    repo = _make_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    out = repo / "reports/plots"
    render_offline_plots(out_dir=Path("reports/plots"), vendor_dir=VENDOR)
    assert [p.name for p in (out / "static").iterdir()] == ["workspace_reports_figures_cmc.png"]

    (repo / "reports/figures/cmc.png").rename(repo / "reports/figures/routing.png")
    page = render_offline_plots(out_dir=Path("reports/plots"), vendor_dir=VENDOR)
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "static"], "no staging folder is left behind"
    assert [p.name for p in (out / "static").iterdir()] == ["workspace_reports_figures_routing.png"]
    text = page.read_text(encoding="utf-8")
    assert "static/workspace_reports_figures_routing.png" in text and "figures_cmc.png" not in text


def test_pinned_vega_versions_match_dvc_render_templates() -> None:
    """package.json pins exact versions; vega-lite's major is the one dvc-render's templates declare in $schema."""
    import dvc_render.vega_templates as templates

    majors = set(re.findall(r"schema/vega-lite/v(\d+)\.json", Path(templates.__file__).read_text(encoding="utf-8")))
    pins = json.loads((PLOTS_TOOL / "package.json").read_text(encoding="utf-8"))["dependencies"]
    lock = json.loads((PLOTS_TOOL / "package-lock.json").read_text(encoding="utf-8"))["packages"]
    assert set(pins) == set(VENDOR_FILES)
    for package, version in pins.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{package} is pinned exactly"
        assert lock[f"node_modules/{package}"]["version"] == version
    assert majors == {pins["vega-lite"].split(".")[0]}
    assert pins["vega"].split(".")[0] == "5", "vega-lite 5 and vega-embed 6 run on vega 5"
