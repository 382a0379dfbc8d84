#!/usr/bin/env bash
# The main job until the study runner exists: a handful of suite-train runs on every task.
set -euo pipefail
out=${1:-results/quick}
train=".venv/bin/suite-train results_dir=$out progress=false"
$train task=regression optimizer=sgd batch_size=full lr=0.5 budget.epochs=200
$train task=regression optimizer=sgd batch_size=1 lr=0.01 budget.epochs=2
$train task=regression optimizer=momentum batch_size=128 budget.epochs=20
$train task=tiny_mlp optimizer=adam batch_size=32 lr=0.01 budget.epochs=20
$train task=tiny_mlp optimizer=rmsprop batch_size=1 budget.epochs=2
$train task=fashion_mnist optimizer=adam batch_size=128 budget.epochs=1
$train task=fashion_mnist optimizer=nesterov batch_size=1024 accumulation_steps=8 budget.epochs=1
.venv/bin/python -c "import pandas as pd; d=pd.read_parquet('$out/runs'); \
print(d.sort_values('step').groupby('run_id').tail(1)[['task','optimizer','regime','batch_size','lr','step','time_s','train_loss','val_loss','val_accuracy']].to_string(index=False))"
echo "rows stored under $out/runs"
