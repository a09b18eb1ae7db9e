#!/usr/bin/env bash
# The committed benchmark configurations. Needs ../shared (datasets, the ResNet checkpoint).
# Reported seeds default to 1,2,3 (seed 0 tunes every method's grid on the validation split) and
# methods to all; pass e.g. SEEDS=1 METHODS=retrain,rfa,ft,neggrad for a
# quicker run (benchmarks/README.md says what each committed table ran). Oracles and finished
# points are cached in .cache/bench; JOBS=2 runs each table in two processes; TABLES= names the
# tables to run (comma-separated table names, e.g. fashion_mnist-sample10; default all). Each table
# is written to the folder benchmarks/README.md's headline reads (Fashion-MNIST and CIFAR-10: the
# `-merged` ones, whose committed rows joined one run per method; the folders without the suffix
# are the earlier protocol's, kept as measured), and the headline is rendered again at the end.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
SEEDS="${SEEDS:-1,2,3}"
METHODS="${METHODS:-retrain,rfa,ft,neggrad,rl,salun,scrub}"
SHARED="${SHARED:-../shared}"
JOBS="${JOBS:-1}"  # processes per table
TABLES="${TABLES:-}"
for t in ${TABLES//,/ }; do  # a misspelt name would run nothing: refused before any work
  grep -q -E "^table benchmarks/results/$t(-merged)? " "$SELF" || { echo "TABLES: no table named $t" >&2; exit 2; }
done
TABLES="${TABLES//-merged/}"  # a folder's name names its table too
# One torch thread per process unless OMP_NUM_THREADS says otherwise, whatever JOBS is: every
# committed table ran so, a point's digest includes the thread count, and on the digits tables
# two threads' float sums alone moved baseline choices (notes/digits-class0.md).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
U="${UNLEARN:-.venv/bin/unlearn}"  # the CLI (a test puts a recording stub here)

# One table: with JOBS > 1 its methods are split round-robin between JOBS processes (each with
# Retrain, whose oracles they share through the cache's lock), then one run over every method
# (same threads: the thread count is part of a point's configuration) assembles the table from
# the points they finished (benchmarks/points.py). A stopped table resumes when run again.
table() {
  local out=$1; shift
  local name="${out##*/}"; name="${name%-merged}"  # the table's name: TABLES, notes, partial runs
  if [ -n "$TABLES" ] && [[ ",$TABLES," != *",$name,"* ]]; then return 0; fi
  if (( JOBS > 1 )); then
    local -a groups=() pids=()
    local i=0 k m retrain=""
    for m in ${METHODS//,/ }; do
      if [ "$m" = retrain ]; then retrain="retrain,"; continue; fi
      groups[i % JOBS]+="${groups[i % JOBS]:+,}$m"; i=$((i + 1))
    done
    mkdir -p .cache/bench/partial
    for k in "${!groups[@]}"; do
      $U bench "$@" --seeds "$SEEDS" --methods "$retrain${groups[k]}" \
        --out ".cache/bench/partial/$name-$k" > ".cache/bench/partial/$name-$k.log" 2>&1 &
      pids[k]=$!
    done
    for k in "${!pids[@]}"; do
      wait "${pids[k]}" || { echo "methods ${groups[k]} failed: .cache/bench/partial/$name-$k.log" >&2; exit 1; }
    done
  fi
  $U bench "$@" --seeds "$SEEDS" --methods "$METHODS" --out "$out"
  # results.md keeps its Notes through a re-run; this puts the current benchmarks/notes/<table>.md there.
  local notes="benchmarks/notes/$name.md"
  if [ -f "$notes" ]; then $U bench-report "$out" --notes "$notes" > /dev/null; fi
}
# Models behind the committed tables come out slightly different on another machine, so they
# travel with the repository and are copied into the cache: the 60-epoch CIFAR-10 oracles (a 10 %
# one: 50-56 minutes on two cores; 274 s on an H200 with --oracles-only) in benchmarks/oracles/,
# and both Fashion-MNIST tables' base models and the 10 % table's LiRA shadows in its base/ and
# shadows/ (their oracles beside the CIFAR-10 ones): per-method runs of one table made apart must
# share them.
for kind in oracles base shadows; do
  mkdir -p ".cache/bench/$kind"
  src=benchmarks/oracles; [ "$kind" = oracles ] || src="benchmarks/oracles/$kind"
  for f in "$src"/*; do
    if [ -f "$f" ] && [ ! -e ".cache/bench/$kind/${f##*/}" ]; then cp "$f" ".cache/bench/$kind/"; fi
  done
done
FM=(--dataset fashion_mnist --data-dir "$SHARED/datasets/fashion_mnist" --model small_cnn --params benchmarks/params/fashion_mnist.yaml)
CF=(--dataset cifar10 --data-dir "$SHARED/datasets/cifar10" --model resnet20
    --checkpoint "$SHARED/models/resnet_cifar10_akamaster/resnet20-12fca82f.th" --params benchmarks/params/cifar10.yaml)
# Every method in bf16, as on the 10 % table (the earlier fp32 table's runs took 4.0 CPU hours).
# Grids where their choices fell inside on seed 0's validation split (notes): NegGrad+ forgets the
# class only from 0.0000390625 and loses Dr above it; SCRUB (3 epochs) matches Retrain's
# MIA-efficacy only from 0.000125 and collapses above it; RL and SalUn take the params file's grid.
table benchmarks/results/fashion_mnist-class0-merged "${FM[@]}" --scenario class --forget-class 0 \
  --precision bf16 \
  --grid neggrad=0.0000048828125,0.000009765625,0.00001953125,0.0000390625,0.000078125 \
  --grid scrub=0.0000625,0.000125,0.00025,0.0005,0.001
# A 20-epoch bf16 base and Retrain: the 4-epoch base memorised nothing (notes); LiRA's 8 shadows like it.
# Every method in bf16 too: 2.2-2.6x per baseline step, 1.4x RFA's, on this CPU (notes/precision.md).
# RFA collapses from 0.08 on; its retain guard rolls those runs back to the original, whose gap is
# the lowest here, so its five points reach 0.16 (0.08 and 0.16 tie; 0.08 is chosen).
# NegGrad+ chose the file's lowest lr, then each new lowest, down to 0.0003125; SCRUB, started at the
# class table's grid, lost 9 points of Dr at its second point, 0.000015625, and chose 0.000001953125.
# RL and SalUn lost 4-5 points of Dr at the file's lowest, 0.00325: 4x-spaced points around their choice.
table benchmarks/results/fashion_mnist-sample10-merged "${FM[@]}" --scenario sample --fraction 0.1 \
  --oracle-epochs 20 --oracle-precision bf16 --lira-shadows 8 --precision bf16 \
  --grid rfa=0.01,0.02,0.04,0.08,0.16 \
  --grid neggrad=0.00015625,0.0003125,0.000625,0.00125,0.0025 \
  --grid scrub=0.00000048828125,0.0000009765625,0.000001953125,0.00000390625,0.0000078125 \
  --grid rl=0.0000001983642578125,0.00000079345703125,0.000003173828125,0.0000126953125,0.00005078125 \
  --grid salun=0.0000001983642578125,0.00000079345703125,0.000003173828125,0.0000126953125,0.00005078125
# Both CIFAR-10 tables: a 60-epoch bf16 oracle (the 10 % notes): the 10-epoch one under-fit Dr,
# and the class gap measured its under-fit.
# NegGrad+ collapsed on class 0 at the file's lowest lr, 0.0025, and kept the class at 9.77e-6
# (notes): its five points span those two, 4x apart. RFA chose the file's lowest, 0.0025, once its
# target passes ran in bf16 (acc81eb): its grid moved down two points, and 0.0025 stays inside.
table benchmarks/results/cifar10-resnet20-class0-merged "${CF[@]}" --scenario class --forget-class 0 \
  --oracle-epochs 60 --oracle-precision bf16 \
  --grid neggrad=0.000009765625,0.0000390625,0.00015625,0.000625,0.0025 \
  --grid rfa=0.000625,0.00125,0.0025,0.005,0.01
# SCRUB on crop + flip batches left the model as it was across the file's grid, choosing its top
# (notes): its five points now end at 5e-4, where it collapses.
# NegGrad+ chose the top of the file's 0.0025 .. 0.04 on crop + flip batches; 0.08 loses Dr (notes).
table benchmarks/results/cifar10-resnet20-sample10-merged "${CF[@]}" --scenario sample --fraction 0.1 \
  --oracle-epochs 60 --oracle-precision bf16 \
  --grid scrub=0.00003125,0.0000625,0.000125,0.00025,0.0005 \
  --grid neggrad=0.005,0.01,0.02,0.04,0.08
# The demo's digits (params.yaml), each grid moved until its choice is inside it (notes).
table benchmarks/results/digits-class0 --dataset digits --scenario class --forget-class 0 \
  --grid rl=0.013,0.026,0.052,0.104,0.208 --grid salun=0.052,0.104,0.208,0.416,0.832 \
  --grid scrub=0.0005,0.001,0.002,0.004,0.008
# SalUn chose its grid's bottom (then RL's) in the re-run at 782be79: one point lower.
table benchmarks/results/digits-sample10 --dataset digits --scenario sample --fraction 0.1 \
  --grid rl=0.000203125,0.00040625,0.0008125,0.001625,0.00325 \
  --grid salun=0.0001015625,0.000203125,0.00040625,0.0008125,0.001625
# The README's headline (RFA's targets by table, each table's key rows) from the tables as they now are.
$U bench-summary
