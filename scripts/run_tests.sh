#!/usr/bin/env bash
# Set up a virtual environment (.venv) and run the whole test suite.
#
#   bash scripts/run_tests.sh [pytest arguments]
#
# Installs the package with its test extras, pinning torch to the CPU build of
# constraints.txt. The napari viewer tests need an X server: Xvfb and the Qt xcb libraries
# are installed with apt-get when missing (as root), otherwise the exact command is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

XVFB_PACKAGES="xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 \
libxcb-render-util0 libxcb-randr0 libxcb-shape0 libxcb-xfixes0 libxcb-cursor0"

missing=""
for pkg in $XVFB_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing the X server for the viewer tests:$missing"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "The napari viewer tests need Xvfb and Qt's xcb libraries. Install them with:" >&2
        echo "  sudo apt-get install -y $XVFB_PACKAGES" >&2
        exit 1
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[testing]"
exec .venv/bin/python -m pytest "$@"
