"""`sanet plots`: DVC's plots as one HTML page that renders without internet.

`dvc plots show` writes a page whose <script> tags load vega, vega-lite and vega-embed from a CDN, so it is blank on
an offline machine (a cluster node, a laptop on a train). `render_offline_plots` asks DVC for the filled plot specs
instead (`dvc plots show --json`, in the current directory's DVC repository) and writes `index.html` itself, with the
three libraries inlined from `tools/plots/node_modules` (installed by `npm ci --prefix tools/plots`, pinned in
`tools/plots/package-lock.json` to the Vega-Lite v5 line that dvc-render's templates declare). The page makes no
outside request: every script is inline, the data is in the specs, image plots are files beside the page
(`static/`), and a Content-Security-Policy forbids network loads, so a browser would refuse one rather than try.

Building the page from DVC's JSON rather than filling a `--html-template` keeps the escaping in our hands (spec JSON
and inlined code cannot close their <script> early), gives every plot a valid element id, and reports DVC's per-file
errors (a plot whose CSV is missing) by name instead of leaving a silently shorter page.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sanet.infra.atomic import atomic_write
from sanet.infra.errors import PlotsError

__all__ = ["CONTENT_SECURITY_POLICY", "VENDOR_FILES", "render_offline_plots"]

# package -> its browser bundle (UMD, defines a global), relative to node_modules.
VENDOR_FILES: dict[str, str] = {
    "vega": "vega/build/vega.min.js",
    "vega-lite": "vega-lite/build/vega-lite.min.js",
    "vega-embed": "vega-embed/build/vega-embed.min.js",
}
# Scripts may only be inline (vega compiles its expressions with `Function`, hence 'unsafe-eval'); images only from
# the page's own folder or data URLs; nothing else (no fetch, no fonts, no remote anything).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src 'self' file: data: blob:"
)
# vega-embed's menu keeps export (SVG/PNG, made in the browser) and the spec views; the online editor link is left out.
EMBED_OPTIONS: dict[str, Any] = {"actions": {"export": True, "source": True, "compiled": True, "editor": False}}
INSTALL_HINT = "run `make plots`, which installs them with `npm ci --prefix tools/plots`"
STATIC_DIR = "static"
_STDERR_TAIL = 2000
_SOURCE_MAP = re.compile(r"^[ \t]*//[#@] sourceMappingURL=.*$", re.MULTILINE)
_CLOSE_SCRIPT = re.compile(r"</(script)", re.IGNORECASE)


def render_offline_plots(
    out_dir: Path = Path("reports/plots"), vendor_dir: Path = Path("tools/plots/node_modules")
) -> Path:
    """Render the DVC plots of the current directory's repository into `out_dir/index.html` and return its path.

    The page inlines vega, vega-lite and vega-embed from `vendor_dir` (a node_modules folder) and embeds one vega-lite
    view per plot; image plots are copied to `out_dir/static/`. Raises PlotsError when the vendored JavaScript is
    missing, when DVC fails, or when DVC cannot load a declared plot (its data file does not exist yet).
    """
    out_dir = Path(out_dir)
    scripts, versions = _vendor_scripts(Path(vendor_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{STATIC_DIR}-{os.getpid()}-{secrets.token_hex(4)}"  # mkdir, unlike mkdtemp, honours umask
    staging.mkdir()
    try:
        plots = _dvc_plots(staging)
        images = _stage_images(plots, staging)
        page = _page(plots, scripts, versions, images)
        _replace_dir(staging, out_dir / STATIC_DIR)
        return atomic_write(out_dir / "index.html", lambda handle: handle.write(page.encode("utf-8")))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _vendor_scripts(vendor_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Read the three browser bundles (and their versions) from node_modules, ready to inline."""
    missing = [vendor_dir / rel for rel in VENDOR_FILES.values() if not (vendor_dir / rel).is_file()]
    if missing:
        raise PlotsError(
            f"The JavaScript that `sanet plots` inlines into the page is missing: {', '.join(map(str, missing))} "
            f"not found (vendor folder {vendor_dir}). To install vega, vega-lite and vega-embed, {INSTALL_HINT} "
            "from the repository root (node and npm needed; a few seconds, versions pinned in package-lock.json)."
        )
    scripts, versions = {}, {}
    for package, rel in VENDOR_FILES.items():
        code = (vendor_dir / rel).read_text(encoding="utf-8")
        # A source-map comment would make an open devtools panel request the .map file; a literal "</script" in the
        # code would end the inline <script> early ("<\/script" means the same inside JS strings and regexes).
        scripts[package] = _CLOSE_SCRIPT.sub(r"<\\/\1", _SOURCE_MAP.sub("", code))
        versions[package] = _version(vendor_dir / package / "package.json")
    return scripts, versions


def _version(package_json: Path) -> str:
    """The version a package.json declares ("unknown" if unreadable): shown in the page's generator tag."""
    try:
        return str(json.loads(package_json.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def _dvc_plots(images_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Run `dvc plots show --json` here; return its `data` (plot name -> entries). Image files land in images_dir."""
    command = [sys.executable, "-m", "dvc", "plots", "show", "--json", "-o", str(images_dir.resolve())]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    except OSError as error:
        raise PlotsError(
            f"Could not run DVC ({' '.join(command[:3])}): {error}. Is the environment installed?"
        ) from error
    stderr_tail = done.stderr.strip()[-_STDERR_TAIL:]
    if done.returncode != 0:
        raise PlotsError(
            f"`dvc plots show` failed (exit status {done.returncode}) in {Path.cwd()}; run `sanet plots` from the "
            f"repository root and check the top-level `plots:` of dvc.yaml. DVC said:\n{stderr_tail or '(nothing)'}"
        )
    try:
        result = json.loads(done.stdout)
        data = result.get("data") or {}
        errors = result.get("errors") or []
    except (ValueError, AttributeError) as error:
        raise PlotsError(
            f"`dvc plots show --json` printed no valid JSON in {Path.cwd()} ({error}); DVC said:\n{stderr_tail}"
        ) from error
    if errors:
        lines = "\n".join(f"  - {_describe_error(error)}" for error in errors)
        raise PlotsError(
            f"DVC could not load {len(errors)} of the plots declared in dvc.yaml (in {Path.cwd()}):\n{lines}\n"
            "Run the stages that write them first (`dvc repro`), or fix dvc.yaml's top-level `plots:`."
        )
    if not data:
        raise PlotsError(
            f"DVC found no plots in {Path.cwd()}: declare them under the top-level `plots:` of dvc.yaml and run "
            f"`dvc repro` so their files exist.{' DVC said: ' + stderr_tail if stderr_tail else ''}"
        )
    return data


def _describe_error(error: Any) -> str:
    """One line for one entry of DVC's `errors`: a plot's file (name and source), or the whole revision."""
    if not isinstance(error, Mapping):
        return str(error)
    where = ": ".join(str(error[key]) for key in ("name", "source") if error.get(key)) or f"revision {error.get('rev')}"
    return f"{where} ({error.get('type', 'error')}: {error.get('msg', '')})"


def _stage_images(plots: Mapping[str, list[dict[str, Any]]], staging: Path) -> dict[str, str]:
    """Map every image entry's DVC url to its src on the page (`static/<file>`), copying strays into staging."""
    staging = staging.resolve()
    srcs: dict[str, str] = {}
    for entries in plots.values():
        for entry in entries:
            if entry.get("type") != "image":
                continue
            url = str(entry.get("url", ""))
            path = Path(url).resolve()
            if not path.is_relative_to(staging):
                if not path.is_file():
                    raise PlotsError(f"DVC reported the image plot {url}, but the file does not exist.")
                target = staging / path.name
                shutil.copy2(path, target)
                path = target
            srcs[url] = quote(f"{STATIC_DIR}/{path.relative_to(staging).as_posix()}")
    return srcs


def _replace_dir(new: Path, target: Path) -> None:
    """Put folder `new` in place of `target` (an old folder is moved aside, then removed)."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-old-"))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _script_json(value: Any) -> str:
    """JSON that is safe inside an inline <script>: no '<', '>' or '&' that could end it or open a comment."""
    text = json.dumps(value, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _page(
    plots: Mapping[str, list[dict[str, Any]]],
    scripts: Mapping[str, str],
    versions: Mapping[str, str],
    images: Mapping[str, str],
) -> str:
    """The whole HTML page: inlined libraries, then one section per plot."""
    generator = ", ".join(f"{name} {versions[name]}" for name in VENDOR_FILES)
    vendor = "\n".join(f'<script data-vendor="{name}">\n{scripts[name]}\n</script>' for name in VENDOR_FILES)
    options = _script_json(EMBED_OPTIONS)
    sections, index = [], 0
    for name, entries in plots.items():
        for entry in entries:
            revisions = ", ".join(map(str, entry.get("revisions") or []))
            caption = f"<h2>{html.escape(name)} <small>{html.escape(revisions)}</small></h2>"
            if entry.get("type") == "vega":
                index += 1
                plot_id = f"plot-{index}"
                sections.append(
                    f'<section>\n{caption}\n<div id="{plot_id}" class="plot"></div>\n'
                    f'<script data-plot="{plot_id}">\n'
                    f'vegaEmbed("#{plot_id}", {_script_json(entry["content"])}, {options}).catch(function (error) {{\n'
                    f'  document.getElementById("{plot_id}").textContent = "This plot could not be drawn: " + error;\n'
                    "});\n</script>\n</section>"
                )
            elif entry.get("type") == "image":
                src = html.escape(images[str(entry.get("url", ""))])
                sections.append(f'<section>\n{caption}\n<img src="{src}" alt="{html.escape(name)}">\n</section>')
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<meta name="generator" content="sanet plots ({html.escape(generator)})">
<title>DVC plots</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
section {{ display: inline-block; vertical-align: top; margin: 0 2em 2em 0; }}
h2 {{ font-size: 1.1em; }}
h2 small {{ color: #777; font-weight: normal; }}
img {{ max-width: 900px; border: 1px solid #ccc; }}
</style>
{vendor}
</head>
<body>
<h1>DVC plots</h1>
<noscript>These plots are drawn by JavaScript that is inlined in this page: allow scripts to see them.</noscript>
{chr(10).join(sections)}
</body>
</html>
"""
