#!/usr/bin/env bash
# Build openpifpaf-vita (the maintained OpenPifPaf fork) from its sdist against the environment's torch, once per
# machine, and install it with --no-deps into that environment. `make pifpaf` runs this; see docs/masks.md.
#
# Why from source: the PyPI release `openpifpaf` 0.13.11 pins torch 1.13, and openpifpaf-vita 0.14.2 ships only an
# sdist whose C++ extension is compiled with -std=c++17, which torch 2.14's headers no longer accept; -std=c++20 works.
# Its runtime dependencies are in requirements.lock, so nothing else is installed here.
#
# Usage: tools/build_pifpaf.sh [PYTHON]     (default .venv/bin/python)
# The built wheel is cached in ${SANET_CACHE_DIR:-~/.cache/sanet}/pifpaf/, keyed by the torch and Python versions,
# so a second clone on the same machine installs it in seconds. The sdist's sha256 is pinned below.
set -euo pipefail

VERSION=0.14.2
SDIST=openpifpaf-vita-$VERSION.tar.gz
SHA256=7b5e40a7c1973c48797573ada3124b1bec9c77ab219ffdcdd11da410b6315179

PYTHON=${1:-.venv/bin/python}
CACHE=${SANET_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sanet}/pifpaf
tag=$("$PYTHON" -c 'import sys, torch; print(f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}")')
wheels=$CACHE/$tag
mkdir -p "$wheels"
quiet_mirror() { grep -v "is ignored: it is neither a file nor a directory" || true; }

wheel=$(compgen -G "$wheels/openpifpaf_vita-$VERSION-*.whl" | head -n 1 || true)
if [[ -z $wheel ]]; then
    if [[ ! -f $CACHE/$SDIST ]] || ! echo "$SHA256  $CACHE/$SDIST" | sha256sum --check --status; then
        echo "pifpaf: downloading the $SDIST sdist"
        # --no-build-isolation: pip reads the sdist's metadata with this environment's torch instead of resolving
        # the sdist's build requirements (torch>=1.9) into an isolated environment.
        "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
            "openpifpaf-vita==$VERSION" -d "$CACHE" 2>&1 | quiet_mirror
    fi
    echo "$SHA256  $CACHE/$SDIST" | sha256sum --check --status \
        || { echo "pifpaf: $CACHE/$SDIST does not have the pinned sha256 $SHA256" >&2; exit 1; }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    tar -xzf "$CACHE/$SDIST" -C "$work"
    src=$work/openpifpaf-vita-$VERSION
    grep -q "'-std=c++17'" "$src/setup.py" || { echo "pifpaf: setup.py has no -std=c++17 flag to patch" >&2; exit 1; }
    sed -i "s/'-std=c++17'/'-std=c++20'/" "$src/setup.py"
    echo "pifpaf: building the wheel against $tag (a few minutes; once per machine)"
    start=$SECONDS
    # ninja (dev lock) compiles the extension's files in parallel; MAX_JOBS bounds it to the cores there are.
    MAX_JOBS=${MAX_JOBS:-$(nproc)} PATH="$(dirname "$PYTHON"):$PATH" \
        "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/dist" "$src" 2>&1 | quiet_mirror
    built=$(compgen -G "$work/dist/openpifpaf_vita-$VERSION-*.whl" | head -n 1)
    cp "$built" "$wheels/.$(basename "$built").tmp"
    mv "$wheels/.$(basename "$built").tmp" "$wheels/$(basename "$built")"  # appears in the cache only when complete
    wheel=$wheels/$(basename "$built")
    echo "pifpaf: built $(basename "$built") in $((SECONDS - start)) s, cached in $wheels"
fi
"$PYTHON" -m pip install --quiet --no-deps --force-reinstall "$wheel" 2>&1 | quiet_mirror
"$PYTHON" -m pip check
"$PYTHON" -c 'import sanet.masks.pifpaf as p; m = p.import_openpifpaf(); print("pifpaf: openpifpaf", m.__version__, "installed")'
