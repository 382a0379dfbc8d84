#!/usr/bin/env bash
# Reproduce results/standard/: the standard study on this machine (resumable: re-run after an
# interruption), then the published files beside its report. Extra arguments are passed to
# suite-study, e.g. study.workers=1.
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/standard
.venv/bin/suite-study study=standard results_dir=$out "$@"
# One compressed file with every stored row (runs/ itself, one file per run, stays out of git).
.venv/bin/python -c "from suite.store.runs import export_rows; print(export_rows('$out', '$out/rows.parquet'), 'rows -> $out/rows.parquet')"
