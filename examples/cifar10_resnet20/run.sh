#!/usr/bin/env bash
# End to end on a real pre-trained model: the CIFAR-10 ResNet-20 checkpoint and the CIFAR-10 files.
#
#   examples/cifar10_resnet20/run.sh DATA_DIR CHECKPOINT [WORKSPACE] [OUT_DIR]
#   e.g. examples/cifar10_resnet20/run.sh ../shared/datasets/cifar10 \
#        ../shared/models/resnet_cifar10_akamaster/resnet20-12fca82f.th
#
# init (npz source, heldout from the test split) -> model import -> class request (3, cat) ->
# batch -> approve -> 500 random samples -> batch -> approve -> audit verify both. Each batch's
# outcome (metrics, gates, stage timings) is written to OUT_DIR/batch-*.json.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data_dir="$(cd "$1" && pwd)"; checkpoint="$(realpath "$2")"
ws="${3:-$(mktemp -d)/cifar10-ws}"; out="${4:-$ws.out}"
mkdir -p "$out"
# Signing keys of this run (batch and review), unless UNLEARN_KEY_DIR names the machine's own.
export UNLEARN_KEY_DIR="${UNLEARN_KEY_DIR:-$out/keys}"
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1
PATH="$(cd "$here/../.." && pwd)/.venv/bin:$PATH"
model=cifar10-resnet20
step() { echo "== [${SECONDS}s] $*" >&2; }

sed "s|__DATA_DIR__|$data_dir|" "$here/params.yaml" > "$out/params.yaml"
unlearn keys init
step "init $ws"; unlearn init "$ws" --params "$out/params.yaml"
cd "$ws"
step "import $checkpoint"; unlearn model import --checkpoint "$checkpoint" --trained-on train-files
step "class request: 3 (cat)"; unlearn request submit --class 3
step "class batch"; unlearn batch run --json > "$out/batch-class.json" || { cat "$out/batch-class.json"; exit 1; }
unlearn review approve "$model" 2 --reviewer recipe-reviewer
step "sample request: 500 random training images"
ids=$(unlearn data ids --random 500 --seed 0)
unlearn request submit --samples "$ids"
step "sample batch"; unlearn batch run --json > "$out/batch-sample.json" || { cat "$out/batch-sample.json"; exit 1; }
unlearn review approve "$model" 3 --reviewer recipe-reviewer
step "verify"; unlearn audit verify "$model" 2; unlearn audit verify "$model" 3
step "done: outcomes in $out"
