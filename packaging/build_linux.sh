#!/usr/bin/env bash
# Build the Linux one-folder bundle and its archive, then run the frozen self-test.
#
#   packaging/build_linux.sh cpu|cuda
#
# Environment:
#   BUILD_DIR          where the build venv, work files and dist go (default: build/bundle-FLAVOUR)
#   TORCH_INDEX_URL    index for the CPU torch wheels (default: PyTorch's CPU wheel index; CPU flavour only)
#   TORCH_REQUIREMENT  override what torch/torchvision to install (e.g. "torch==2.14.1 torchvision==0.29.1")
set -euo pipefail
flavour=${1:-cpu}
case "$flavour" in cpu|cuda) ;; *) echo "usage: $0 cpu|cuda" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${BUILD_DIR:-$root/build/bundle-$flavour}
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$root/fssgui/__init__.py")
mkdir -p "$build"
python3 -m venv "$build/venv"
py="$build/venv/bin/python"
"$py" -m pip install --upgrade pip
torch_req=${TORCH_REQUIREMENT:-"torch==2.14.1 torchvision==0.29.1"}
if [ "$flavour" = cpu ] && [ -z "${TORCH_REQUIREMENT:-}" ]; then
  "$py" -m pip install --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" $torch_req
else
  "$py" -m pip install $torch_req
fi
"$py" -m pip install -r "$here/requirements-build.txt" "$root"
FSSGUI_FLAVOUR=$flavour "$py" -m PyInstaller --clean --noconfirm \
  --distpath "$build/dist" --workpath "$build/work" "$here/fssgui.spec"
bundle="$build/dist/fssgui-$flavour"
install -m 644 "$here/linux/fssgui.desktop" "$bundle/fssgui.desktop"
install -m 644 "$root/fssgui/resources/icons/fssgui.png" "$bundle/fssgui.png"
install -m 644 "$here/README.md" "$bundle/PACKAGING.md"
QT_QPA_PLATFORM=offscreen "$bundle/fssgui" self-test
archive="$build/fssgui-$version-linux-x86_64-$flavour.tar.gz"
tar -C "$build/dist" -czf "$archive.tmp" "fssgui-$flavour"
mv "$archive.tmp" "$archive"
du -sh "$bundle" "$archive"
echo "built $archive"
