#!/usr/bin/env bash
# Print the CMAKE_ARGS that build llama-cpp-python for this machine's accelerator, and say on
# stderr what was found. Empty output: the default CPU build.
#
#   Jetson (L4T: /etc/nv_tegra_release) with the CUDA toolkit (nvcc on PATH or in
#   /usr/local/cuda/bin): -DGGML_CUDA=on, with the GPU architecture of the module
#   (sm_87 Orin, sm_72 Xavier) so that nvcc does not build for every architecture.
#   Anything else: nothing (CPU). A CUDA toolkit without L4T is left alone on purpose: on
#   a development host the CPU build is what the tests run.
#
# JETSON_ROOT (default /) is where /etc, /usr and /proc are looked up: tests point it at a
# fake tree. EDGED_LLAMA_CPU=1 forces the CPU build.
set -euo pipefail

root=${JETSON_ROOT:-}
say() { echo "edged: $*" >&2; }

[ "${EDGED_LLAMA_CPU:-0}" = 1 ] && { say "EDGED_LLAMA_CPU=1: CPU build of llama-cpp-python"; exit 0; }

release="$root/etc/nv_tegra_release"
if [ ! -r "$release" ]; then
  exit 0  # not a Jetson: today's CPU build, silently
fi
# "# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, EABI: aarch64, ..."
l4t=$(sed -nE 's/^# R([0-9]+) \(release\), REVISION: ([0-9.]+).*/\1.\2/p' "$release" | head -1)
case "$l4t" in
  36.4.[3-9]*|36.[5-9]*) jetpack="6.2" ;;
  36.*) jetpack="6.x" ;;
  35.*) jetpack="5.x" ;;
  32.*) jetpack="4.x" ;;
  *) jetpack="unknown" ;;
esac

nvcc=""
if [ -z "$root" ] && command -v nvcc >/dev/null 2>&1; then
  nvcc=$(command -v nvcc)
elif [ -x "$root/usr/local/cuda/bin/nvcc" ]; then
  nvcc="$root/usr/local/cuda/bin/nvcc"
fi
if [ -z "$nvcc" ]; then
  say "Jetson (L4T ${l4t:-?}, JetPack $jetpack) without the CUDA toolkit (no nvcc): CPU build." \
      "Install it (sudo apt-get install nvidia-jetpack, or cuda-toolkit-12-6 on JetPack 6) and rerun."
  exit 0
fi

model=$(tr -d '\0' < "$root/proc/device-tree/model" 2>/dev/null || true)
case "$model" in
  *Orin*) arch=87 ;;
  *Xavier*) arch=72 ;;
  *) arch="" ;;
esac
args="-DGGML_CUDA=on -DCMAKE_CUDA_COMPILER=$nvcc"
[ -n "$arch" ] && args="$args -DCMAKE_CUDA_ARCHITECTURES=$arch"
say "Jetson (L4T ${l4t:-?}, JetPack $jetpack, ${model:-unknown module}), CUDA at $nvcc: $args"
echo "$args"
