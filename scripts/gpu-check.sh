#!/usr/bin/env bash
# gpu-check.sh: the GPU session's checks of the cuda and xla backends, in one run that
# fits a budget. It runs ON the GPU machine, from the repository root, with the binaries
# built here by `make gpu-bundle` (bin/gpu-bundle.tar.gz, which it unpacks into bin/, or
# bin/mypt and bin/mypt-backend-{cpu,cuda,xla} themselves, with bin/mypt-cuda-kernelcheck and
# bin/mypt-cuda-emu.so for cuda-kernels). No Go toolchain or C++ compiler is needed there.
#
#   scripts/gpu-check.sh                          # every stage
#   STAGES="gpu cuda" scripts/gpu-check.sh        # a selection, run in the fixed order below
#
# Stages, in order ("cuda" selects the cuda-* stages, "xla" the xla-* ones, "all" every stage):
#   gpu               nvidia-smi -L, driver version, memory
#   backends          bin/mypt backends (with the xla plugin pointed at JAX's CUDA PJRT plugin)
#   cuda-conformance  bin/mypt conformance --backend cuda --report $OUT/cuda-conformance.json
#   cuda-kernels      bin/mypt-cuda-kernelcheck --emu-lib bin/mypt-cuda-emu.so --json $OUT/cuda-kernels.json
#                     (each kernel on the GPU against the emulated device on the same inputs)
#   cuda-bench        bin/mypt bench --backend cuda --config $BENCH_CONFIG --steps 30 --warmup 5 --json
#   xla-plugin        find JAX's CUDA PJRT plugin and the CUDA libraries of its Python environment
#   xla-conformance   bin/mypt conformance --backend xla --report $OUT/xla-conformance.json
#   xla-bench         bin/mypt bench --backend xla ... (as cuda-bench)
#
# Every stage runs under its own `timeout`, cut to what is left of BUDGET_S; a stage that
# would get less than MIN_STAGE_S is skipped. A failing stage does not stop the others.
# The summary table is printed last (and kept in $OUT/summary.txt, rewritten after every
# stage, so a killed run still leaves it). Exit status 0 only when every stage passed.
#
# Output under OUT (default /tmp/gpu-check), at most 7 files (the device tool brings back 8):
#   gpu-check.log          every stage's full output, each after a line "=== STAGE ..."
#   summary.txt            the table
#   {cuda,xla}-conformance.json, {cuda,xla}-bench.json, cuda-kernels.json   the reports
#
# Environment (defaults in brackets):
#   OUT [/tmp/gpu-check]   BUDGET_S [540]   MIN_STAGE_S [20]
#   T_GPU [30] T_BACKENDS [120] T_CUDA_CONFORMANCE [180] T_CUDA_KERNELS [120] T_CUDA_BENCH [240]
#   T_XLA_PLUGIN [60] T_XLA_CONFORMANCE [240] T_XLA_BENCH [300]       per-stage timeouts, seconds
#   BENCH_CONFIG [configs/750M_1024_chat_sft_phase3a.json]  BENCH_STEPS [30]  BENCH_WARMUP [5]
#   BENCH_ARGS, CUDA_BENCH_ARGS, XLA_BENCH_ARGS   extra bench flags, e.g. "--batch_size 4"
#   CONFORMANCE_ARGS, CUDA_CONFORMANCE_ARGS, XLA_CONFORMANCE_ARGS   e.g. "--dtype bf16"
#   KERNELCHECK_ARGS   extra mypt-cuda-kernelcheck flags, e.g. "--rtol 1e-4"
#   PYTHON [python3]   the Python whose site-packages hold jax-cuda13-plugin / jax-cuda13-pjrt
#   PJRT_PLUGIN_LIBRARY_PATH   use this PJRT plugin instead of searching
# Stage functions run through `bash -c` under timeout, which shellcheck cannot see:
# shellcheck disable=SC2317
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

export OUT=${OUT:-/tmp/gpu-check}
BUDGET_S=${BUDGET_S:-540}
MIN_STAGE_S=${MIN_STAGE_S:-20}
export BENCH_CONFIG=${BENCH_CONFIG:-configs/750M_1024_chat_sft_phase3a.json}
export BENCH_STEPS=${BENCH_STEPS:-30} BENCH_WARMUP=${BENCH_WARMUP:-5}
export BENCH_ARGS=${BENCH_ARGS:-} CUDA_BENCH_ARGS=${CUDA_BENCH_ARGS:-} XLA_BENCH_ARGS=${XLA_BENCH_ARGS:-}
export CONFORMANCE_ARGS=${CONFORMANCE_ARGS:-} CUDA_CONFORMANCE_ARGS=${CUDA_CONFORMANCE_ARGS:-} XLA_CONFORMANCE_ARGS=${XLA_CONFORMANCE_ARGS:-}
export KERNELCHECK_ARGS=${KERNELCHECK_ARGS:-}
export PYTHON=${PYTHON:-python3}
export MYPT_LOG_LEVEL=${MYPT_LOG_LEVEL:-info}
ALL_STAGES="gpu backends cuda-conformance cuda-kernels cuda-bench xla-plugin xla-conformance xla-bench"

mkdir -p "$OUT" || exit 2
export LOG=$OUT/gpu-check.log
SUMMARY=$OUT/summary.txt
: >"$LOG"
# The xla environment found by the xla-plugin stage (or by backends), sourced by later stages.
export XLA_ENV=${TMPDIR:-/tmp}/gpu-check-xla-env.$$.sh
export NOTE=${TMPDIR:-/tmp}/gpu-check-note.$$
trap 'rm -f "$XLA_ENV" "$NOTE"' EXIT

say() { printf '%s\n' "$*" | tee -a "$LOG"; }

# --- the bundle --------------------------------------------------------------------------
# Always unpacked when present: a warm machine may still hold an older call's bin/.
if [[ -f bin/gpu-bundle.tar.gz ]]; then
	say "unpacking bin/gpu-bundle.tar.gz"
	tar -xzf bin/gpu-bundle.tar.gz -C bin || exit 2
fi
for b in mypt mypt-backend-cpu mypt-backend-cuda mypt-backend-xla; do
	if [[ ! -x bin/$b ]]; then
		say "bin/$b missing: build here with 'make gpu-bundle' and carry bin/gpu-bundle.tar.gz"
		exit 2
	fi
done

# --- stages (each runs in its own bash under timeout; writes a one-line note to $NOTE) -----
note() { printf '%s' "$*" >"$NOTE"; }

# json_field FILE KEY: a number or string field of the one-line JSON mypt bench prints.
json_field() {
	sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" "$1" | head -1
}

# last_error: the last "mypt: ..." error line of this stage's part of the log, shortened.
last_error() {
	tail -n +"${STAGE_LINE:-1}" "$LOG" | grep '^mypt: ' | tail -1 | cut -c7-200
}

# conformance_note: "N passed, M failed, K skipped" from this stage's part of the log.
conformance_note() {
	tail -n +"${STAGE_LINE:-1}" "$LOG" | grep -Eo '[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' | tail -1
}

# gpu_sampler_start FILE: samples memory used and utilisation every second into FILE;
# gpu_sampler_stop ends it; gpu_stats FILE summarises the samples.
gpu_sampler_start() {
	SAMPLER_PID=
	if command -v nvidia-smi >/dev/null; then
		nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits -lms 1000 >"$1" 2>/dev/null &
		SAMPLER_PID=$!
	fi
}
gpu_sampler_stop() {
	if [[ -n ${SAMPLER_PID:-} ]]; then
		kill "$SAMPLER_PID" 2>/dev/null
		wait "$SAMPLER_PID" 2>/dev/null
	fi
	return 0
}
gpu_stats() {
	[[ -s $1 ]] || return 0
	awk -F', *' 'NF>=2 {if ($1>m) m=$1; u+=$2; n++} END {if (n) printf ", peak GPU memory %.1f GiB, mean util %d%%", m/1024, u/n}' "$1"
}

# cuda_libs: where libnvrtc.so.13 and libcublasLt.so.13 are, when the loader does not know.
cuda_libs() {
	if ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so\.1[23] ' && ldconfig -p 2>/dev/null | grep -q 'libcublasLt\.so\.1[23] '; then
		return
	fi
	local d dirs=()
	for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
		[[ -e $d/libnvrtc.so.13 || -e $d/libnvrtc.so.12 ]] && dirs+=("$d")
	done
	# The CUDA wheels of the JAX / PyTorch environment (CUDA 13 wheels install into nvidia/cu13/lib).
	local site
	for site in $(timeout 30 "$PYTHON" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
		for d in "$site"/nvidia/*/lib; do
			[[ -e $d/libnvrtc.so.13 || -e $d/libcublasLt.so.13 || -e $d/libnvrtc.so.12 ]] && dirs+=("$d")
		done
	done
	local IFS=:
	printf '%s' "${dirs[*]}"
}

# use_cuda_libs puts cuda_libs onto LD_LIBRARY_PATH.
use_cuda_libs() {
	local libs
	libs=$(cuda_libs)
	[[ -n $libs ]] && { echo "LD_LIBRARY_PATH += $libs"; export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}; }
	return 0
}

stage_gpu() {
	if ! command -v nvidia-smi >/dev/null; then
		echo "nvidia-smi not found: no NVIDIA driver on this machine"
		note "nvidia-smi not found: no NVIDIA driver"
		return 1
	fi
	nvidia-smi -L || { note "nvidia-smi -L failed"; return 1; }
	nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm --format=csv || true
	nvidia-smi | head -4
	note "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
}

stage_backends() {
	[[ -f $XLA_ENV ]] || locate_pjrt >/dev/null 2>&1
	# shellcheck disable=SC1090
	[[ -f $XLA_ENV ]] && source "$XLA_ENV"
	use_cuda_libs
	local out
	out=$(bin/mypt backends 2>&1)
	local rc=$?
	printf '%s\n' "$out"
	[[ $rc -eq 0 ]] || { note "mypt backends exited $rc"; return 1; }
	local bad ok
	bad=$(printf '%s\n' "$out" | awk '/ERROR:/ {print $1}' | paste -sd, -)
	ok=$(printf '%s\n' "$out" | awk 'NR>1 && !/ERROR:/ {print $1}' | paste -sd, -)
	if [[ -n $bad ]]; then
		note "ok: ${ok:-none}; ERROR: $bad (see log)"
		return 1
	fi
	note "ok: $ok"
}

# locate_pjrt writes $XLA_ENV: PJRT_PLUGIN_LIBRARY_PATH = JAX's CUDA PJRT plugin, and the
# CUDA libraries (and tools) of the same site-packages onto LD_LIBRARY_PATH (and PATH), as
# docs/XLA.md describes.
locate_pjrt() {
	local plugin=${PJRT_PLUGIN_LIBRARY_PATH:-} mod dir site
	if [[ -n $plugin ]]; then
		echo "PJRT_PLUGIN_LIBRARY_PATH given: $plugin"
	elif ! command -v "$PYTHON" >/dev/null; then
		echo "$PYTHON not found"
	else
		for mod in xla_cuda13 xla_cuda12; do
			dir=$(timeout 60 "$PYTHON" -c "import jax_plugins.$mod as p, os; print(os.path.dirname(p.__file__))" 2>&1) ||
				{ echo "import jax_plugins.$mod: $(printf '%s' "$dir" | tail -1)"; continue; }
			if [[ -f $dir/xla_cuda_plugin.so ]]; then
				plugin=$dir/xla_cuda_plugin.so
				break
			fi
			echo "jax_plugins.$mod is at $dir but has no xla_cuda_plugin.so"
		done
		if [[ -z $plugin ]]; then
			for site in $(timeout 30 "$PYTHON" -c 'import site; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
				plugin=$(find "$site/jax_plugins" -name xla_cuda_plugin.so 2>/dev/null | head -1)
				[[ -n $plugin ]] && { echo "found by search in $site"; break; }
			done
		fi
	fi
	if [[ -z $plugin || ! -f $plugin ]]; then
		echo "no JAX CUDA PJRT plugin (jax_plugins/xla_cuda13/xla_cuda_plugin.so) in $PYTHON's site-packages${plugin:+ ($plugin does not exist)}"
		return 1
	fi
	plugin=$(cd "$(dirname "$plugin")" && pwd)/$(basename "$plugin")
	site=$(dirname "$(dirname "$(dirname "$plugin")")")
	local libs bins libdevice
	libs=$(find "$site/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib 2>/dev/null | sort | paste -sd: -)
	bins=$(find "$site/nvidia" -mindepth 2 -maxdepth 3 -type d -name bin 2>/dev/null | sort | paste -sd: -)
	libdevice=$(find "$site/nvidia" -path '*/nvvm/libdevice/libdevice.10.bc' 2>/dev/null | head -1)
	# The file expands the existing values when sourced.
	# shellcheck disable=SC2016
	{
		printf 'export PJRT_PLUGIN_LIBRARY_PATH=%q\n' "$plugin"
		[[ -n $libs ]] && printf 'export LD_LIBRARY_PATH=%q${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\n' "$libs"
		[[ -n $bins ]] && printf 'export PATH=%q:$PATH\n' "$bins"
		[[ -n $libdevice ]] && printf 'export XLA_FLAGS=%q${XLA_FLAGS:+ $XLA_FLAGS}\n' "--xla_gpu_cuda_data_dir=${libdevice%/nvvm/libdevice/libdevice.10.bc}"
	} >"$XLA_ENV"
	echo "xla environment ($XLA_ENV):"
	cat "$XLA_ENV"
}

stage_xla_plugin() {
	local why
	if ! why=$(locate_pjrt); then
		printf '%s\n' "$why"
		note "$(printf '%s\n' "$why" | tail -1)"
		return 1
	fi
	printf '%s\n' "$why"
	# shellcheck disable=SC1090
	source "$XLA_ENV"
	note "$PJRT_PLUGIN_LIBRARY_PATH"
	# JAX itself on the same plugin: if this fails too, the environment is at fault, not mypt.
	if command -v "$PYTHON" >/dev/null; then
		echo "JAX's own view (XLA_PYTHON_CLIENT_PREALLOCATE=false):"
		XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 60 "$PYTHON" -c \
			'import jax; d = jax.devices(); print(jax.__version__, d, d[0].device_kind)' ||
			echo "(JAX could not list its devices)"
	fi
}

conformance() { # backend extra-args...
	local backend=$1
	shift
	local report=$OUT/$backend-conformance.json
	rm -f "$report"
	# shellcheck disable=SC2086
	bin/mypt conformance --backend "$backend" --report "$report" -v $CONFORMANCE_ARGS "$@"
	local rc=$?
	local counts
	counts=$(conformance_note)
	if [[ -f $report ]]; then
		note "${counts:-report written}"
	else
		note "no report (exit $rc): $(last_error)"
	fi
	return "$rc"
}

bench() { # backend extra-args...
	local backend=$1
	shift
	local json=$OUT/$backend-bench.json smi=${TMPDIR:-/tmp}/gpu-check-smi.$$
	rm -f "$json"
	# Stop timing in time to report: 30 s before the stage's timeout.
	local limit=${STAGE_LIMIT:-600}
	local max_time=$((limit > 90 ? limit - 30 : limit * 2 / 3))
	echo "config $BENCH_CONFIG, $BENCH_WARMUP warmup + $BENCH_STEPS timed steps, --max_time ${max_time}s"
	gpu_sampler_start "$smi"
	# shellcheck disable=SC2086
	bin/mypt bench --backend "$backend" --config "$BENCH_CONFIG" --steps "$BENCH_STEPS" --warmup "$BENCH_WARMUP" \
		--max_time "${max_time}s" --json $BENCH_ARGS "$@" >"$json"
	local rc=$?
	gpu_sampler_stop
	local gpu
	gpu=$(gpu_stats "$smi")
	rm -f "$smi"
	cat "$json"
	if [[ $rc -ne 0 || ! -s $json ]]; then
		rm -f "$json"
		note "exit $rc$gpu: $(last_error)"
		return 1
	fi
	local mfu
	mfu=$(json_field "$json" mfu)
	if [[ -n $mfu ]]; then
		mfu=$(awk -v m="$mfu" 'BEGIN {printf "MFU %.1f%%", 100*m}')
	else
		mfu="MFU n/a"
	fi
	local steps partial=
	steps=$(json_field "$json" steps)
	[[ $steps != "$BENCH_STEPS" ]] && partial=" (only $steps of $BENCH_STEPS steps: --max_time)"
	note "$(json_field "$json" compute_dtype) $(json_field "$json" tokens_per_step) tok/step," \
		"median $(awk -v x="$(json_field "$json" median)" 'BEGIN {printf "%.1f", x}') ms," \
		"$(awk -v x="$(json_field "$json" tokens_per_s)" 'BEGIN {printf "%.0f", x}') tok/s," \
		"$(awk -v x="$(json_field "$json" achieved_tflops)" 'BEGIN {printf "%.3g", x}') TFLOP/s, $mfu$gpu$partial"
}

stage_cuda_conformance() {
	use_cuda_libs
	# shellcheck disable=SC2086
	conformance cuda $CUDA_CONFORMANCE_ARGS
}

# stage_cuda_kernels: every kernel on the GPU against the emulated device (prebuilt library,
# no compiler needed); the note is the checker's summary line.
stage_cuda_kernels() {
	use_cuda_libs
	local report=$OUT/cuda-kernels.json
	rm -f "$report"
	if [[ ! -x bin/mypt-cuda-kernelcheck || ! -f bin/mypt-cuda-emu.so ]]; then
		echo "bin/mypt-cuda-kernelcheck or bin/mypt-cuda-emu.so missing: the bundle predates them (make gpu-bundle)"
		note "bin/mypt-cuda-kernelcheck or bin/mypt-cuda-emu.so missing (make gpu-bundle)"
		return 1
	fi
	# shellcheck disable=SC2086
	bin/mypt-cuda-kernelcheck --emu-lib bin/mypt-cuda-emu.so --json "$report" $KERNELCHECK_ARGS
	local rc=$?
	local line
	line=$(tail -n +"${STAGE_LINE:-1}" "$LOG" | grep '^kernelcheck: ' | tail -1)
	if [[ -n $line ]]; then
		note "${line#kernelcheck: }"
	else
		note "exit $rc: $(tail -n +"${STAGE_LINE:-1}" "$LOG" | grep '^mypt-cuda-kernelcheck: ' | tail -1 | cut -c24-200)"
	fi
	return "$rc"
}

stage_cuda_bench() {
	use_cuda_libs
	# shellcheck disable=SC2086
	bench cuda $CUDA_BENCH_ARGS
}

# xla_env: the PJRT environment, or a failure; never simplego (the 750M model would take hours).
xla_env() {
	[[ -f $XLA_ENV ]] || locate_pjrt || {
		echo "no JAX CUDA PJRT plugin: refusing to run the xla backend on simplego"
		note "no JAX CUDA PJRT plugin (see xla-plugin)"
		return 1
	}
	# shellcheck disable=SC1090
	source "$XLA_ENV"
}

stage_xla_conformance() {
	xla_env || return 1
	# shellcheck disable=SC2086
	conformance xla $XLA_CONFORMANCE_ARGS
}

stage_xla_bench() {
	xla_env || return 1
	# PJRT names the device "cuda:0": look the peak up by the GPU's model instead.
	local name
	name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
	# shellcheck disable=SC2086
	bench xla ${name:+--peak_device "$name"} $XLA_BENCH_ARGS
}

export -f note json_field last_error conformance_note gpu_sampler_start gpu_sampler_stop gpu_stats cuda_libs use_cuda_libs locate_pjrt xla_env conformance bench \
	stage_gpu stage_backends stage_xla_plugin stage_cuda_conformance stage_cuda_kernels stage_cuda_bench stage_xla_conformance stage_xla_bench

# --- the stage list ----------------------------------------------------------------------
want=" "
for s in ${STAGES:-all}; do
	case $s in
	all) want+="$ALL_STAGES " ;;
	cuda) want+="cuda-conformance cuda-kernels cuda-bench " ;;
	xla) want+="xla-plugin xla-conformance xla-bench " ;;
	gpu | backends | cuda-conformance | cuda-kernels | cuda-bench | xla-plugin | xla-conformance | xla-bench) want+="$s " ;;
	*)
		say "unknown stage '$s': choose from all cuda xla $ALL_STAGES"
		exit 2
		;;
	esac
done

timeout_of() {
	case $1 in
	gpu) echo "${T_GPU:-30}" ;;
	backends) echo "${T_BACKENDS:-120}" ;;
	cuda-conformance) echo "${T_CUDA_CONFORMANCE:-180}" ;;
	cuda-kernels) echo "${T_CUDA_KERNELS:-120}" ;;
	cuda-bench) echo "${T_CUDA_BENCH:-240}" ;;
	xla-plugin) echo "${T_XLA_PLUGIN:-60}" ;;
	xla-conformance) echo "${T_XLA_CONFORMANCE:-240}" ;;
	xla-bench) echo "${T_XLA_BENCH:-300}" ;;
	esac
}

START=$(date +%s)
DEADLINE=$((START + BUDGET_S))
ROWS=()
FAILED=0

write_summary() {
	{
		printf '%-17s %-7s %5s  %s\n' STAGE RESULT SECS NOTE
		printf '%s\n' "${ROWS[@]}"
		printf 'total %ss of a %ss budget; logs: %s\n' "$(($(date +%s) - START))" "$BUDGET_S" "$LOG"
	} >"$SUMMARY"
}

say "gpu-check: stages:$want budget ${BUDGET_S}s, OUT=$OUT, $(date -u +%FT%TZ), $(uname -n)"
for stage in $ALL_STAGES; do
	[[ $want == *" $stage "* ]] || continue
	left=$((DEADLINE - $(date +%s)))
	limit=$(timeout_of "$stage")
	if ((left < MIN_STAGE_S)); then
		ROWS+=("$(printf '%-17s %-7s %5s  %s' "$stage" SKIP 0 "budget spent (${left}s left; rerun with STAGES=$stage)")")
		FAILED=1
		write_summary
		continue
	fi
	((limit > left)) && limit=$left
	: >"$NOTE"
	start_line=$(($(wc -l <"$LOG") + 1))
	say "=== $stage (timeout ${limit}s) $(date -u +%T)"
	t0=$(date +%s)
	STAGE_LINE=$start_line STAGE_LIMIT=$limit timeout -k 10 "$limit" bash -c "stage_${stage//-/_}" >>"$LOG" 2>&1
	rc=$?
	secs=$(($(date +%s) - t0))
	note_text=$(cat "$NOTE" 2>/dev/null)
	case $rc in
	0) result=PASS ;;
	124 | 137)
		result=TIMEOUT
		note_text="killed after ${limit}s${note_text:+; $note_text}"
		;;
	*) result=FAIL ;;
	esac
	[[ $result == PASS ]] || FAILED=1
	ROWS+=("$(printf '%-17s %-7s %5s  %s' "$stage" "$result" "$secs" "$note_text")")
	say "--- $stage: $result in ${secs}s${note_text:+: $note_text}"
	if [[ $result != PASS ]]; then
		# The end of the failed stage's output, so the reply's tail shows why.
		tail -n +"$start_line" "$LOG" | grep -v '^=== ' | grep -v '^--- ' | tail -n 6 | cut -c1-240 | sed 's/^/    | /'
	fi
	write_summary
done

echo
cat "$SUMMARY"
exit "$FAILED"
