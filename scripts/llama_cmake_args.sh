#!/bin/sh
# Prints CMAKE_ARGS for a portable CPU build of llama-cpp-python on this machine.
# GGML_NATIVE=OFF is deliberate: a native build enables ggml's AMX kernels on CPUs
# that advertise AMX, and those segfault on the first decode (seen on our CI hosts).
# Instead we enable, explicitly, the x86 extensions this CPU has.
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has() { case " $flags " in *" $1 "*) return 0;; *) return 1;; esac; }
args="-DGGML_NATIVE=OFF"
if [ "$(uname -m)" = "x86_64" ]; then
  has avx && args="$args -DGGML_AVX=ON"
  has avx2 && args="$args -DGGML_AVX2=ON"
  has fma && args="$args -DGGML_FMA=ON"
  has f16c && args="$args -DGGML_F16C=ON"
  has avx512f && args="$args -DGGML_AVX512=ON"
  has avx512vbmi && args="$args -DGGML_AVX512_VBMI=ON"
  has avx512_vnni && args="$args -DGGML_AVX512_VNNI=ON"
  has avx512_bf16 && args="$args -DGGML_AVX512_BF16=ON"
  has avx_vnni && args="$args -DGGML_AVX_VNNI=ON"
fi
echo "$args"
