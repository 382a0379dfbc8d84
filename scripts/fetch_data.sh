#!/usr/bin/env bash
# Fashion-MNIST: Debian's dataset-fashion-mnist package (the original IDX files under
# /usr/share/datasets/fashion-mnist/); where apt is unavailable, download the same files from
# the official mirror into ~/.cache/optsuite/fashion_mnist and verify their md5 sums.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "fashion-mnist: found in /usr/share/datasets/fashion-mnist"; exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
    && { echo "fashion-mnist: installed from Debian's package"; exit 0; }
elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
  (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
    && { echo "fashion-mnist: installed from Debian's package"; exit 0; }
fi
echo "fashion-mnist: no Debian package here; downloading the originals"
"$here/.venv/bin/python" -m suite.tasks.idx fashion_mnist
