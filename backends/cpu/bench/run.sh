#!/usr/bin/env bash
# make bench-cpu: trains the two benchmark settings with the mypt CPU backend and with
# PyTorch CPU (Debian python3-torch) on 2 threads each, then prints per setting ms/iter,
# tokens/s and the ratio mypt/PyTorch (tokens/s) as the last lines.
# Env: STEPS (default 50), WARMUP (5), PYTHON (/usr/bin/python3).
set -euo pipefail
cd "$(dirname "$0")/../../.."
STEPS=${STEPS:-50}
WARMUP=${WARMUP:-5}
PYTHON=${PYTHON:-/usr/bin/python3}
export OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE GOMAXPROCS=2

# Debian's python3-torch uses whatever libblas.so.3 the alternatives point at; the netlib
# reference BLAS would make PyTorch ~15x slower and the ratio meaningless.
blas=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | awk '/^Value:/ {print $2}')
if [[ "$blas" != *openblas* ]]; then
	echo "bench-cpu: PyTorch would run on the reference BLAS (${blas:-libblas.so.3 alternative not found});" >&2
	echo "bench-cpu: install OpenBLAS first: apt-get install libopenblas0-pthread" >&2
	exit 1
fi

bin=$(mktemp -d)/cpubench
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./backends/cpu/bench
mypt_out=$("$bin" -steps "$STEPS" -warmup "$WARMUP" -threads 2)
echo "$mypt_out"
torch_out=$("$PYTHON" backends/cpu/bench/bench_torch.py --steps "$STEPS" --warmup "$WARMUP" --threads 2)
echo "$torch_out"
echo "---"
for s in shakespeare-char gpt2-2L-64w-50304v; do
	m=$(echo "$mypt_out" | awk -v s="$s:" '$2==s {print $3, $5}')
	t=$(echo "$torch_out" | awk -v s="$s:" '$2==s {print $3, $5}')
	echo "$s $m $t" | awk '{printf "%s: mypt %.2f ms/iter %.0f tok/s | pytorch %.2f ms/iter %.0f tok/s | ratio mypt/pytorch %.2fx\n", $1, $2, $3, $4, $5, $3/$5}'
done
