#!/usr/bin/env bash
# Publish a study as a baseline others compare against (suite-study study.baseline=<archive>):
# one archive with what a comparison needs: rows.parquet (every stored row, exported from runs/),
# config.yaml, environment.json and tuned/. Usage: scripts/publish_study.sh <results_dir> [<archive>]
# (default archive: <results_dir>.tar.gz). The study directory itself gets rows.parquet, nothing else.
set -euo pipefail
dir=${1:?usage: scripts/publish_study.sh <results_dir> [<archive>]}
archive=${2:-${dir%/}.tar.gz}
"$(dirname "$0")/../.venv/bin/python" -c "import sys; from suite.store.published import publish; print(publish(sys.argv[1], sys.argv[2]))" "$dir" "$archive"
