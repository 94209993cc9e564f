#!/usr/bin/env bash
# The prepared GPU check: run it first whenever a GPU machine is at hand.
#
#   benchmarks/gpu_check.sh OUT_DIR            # on a GPU machine: about 8-10 minutes on one H200
#   benchmarks/gpu_check.sh OUT_DIR --dry-run  # the same steps on the CPU at tiny sizes
#
# Needs torch with CUDA and psicbatch (`pip install -e .`, or PYTHONPATH at this checkout);
# reaches no network and installs nothing, except DALI from the parts in build/dali when
# they are all there (benchmarks/dali_parts.sh), into a folder of its own that it removes
# at the end. DALI is used when it imports and reported missing otherwise; everything
# else runs either way. Steps:
#   1. the machine: nvidia-smi -q, library versions, whether DALI imports, and what
#      psicbatch detects and picks there (psicbatch info --json: machine-info.json);
#   2. the gpu-marked tests (tests/test_gpu.py);
#   3. psicbatch bench: the paper's network (width 1) at 1408x512, torch fp16 engine,
#      batches 1/8/32, engine-only (its own end-to-end phase generates 400 distinct files
#      and ran past the check's time on an H200; step 4 measures the same run path);
#   4. psicbatch run end to end on 6,000 1408x512 JPEG files, then 6,000 PNG files (200
#      generated images under 30 names each; at least 20 s of work at the engine's rate),
#      on GPU 0, then with --device on every visible GPU where there are several; the
#      summaries give the rate after start-up, stage times and latency, and end-to-end.md
#      puts each rate beside step 3's engine-only rate at the run's batch (8);
#   5. device time per convolution shape of the same engine (benchmarks/gpu_kernels.py);
#   6. the engine's cold start and engine-only rate with cuDNN's algorithm search at open
#      and with its heuristic choice (benchmarks/gpu_cold_start.py);
#   7. exact rewrites of the network's narrow layers and torch.compile, each timed against
#      the engine as it runs (benchmarks/gpu_variants.py; last, as the most optional).
# A step that fails is recorded in machine.txt and the later steps still run.
# STEPS="1 4 5" runs only those steps (step 1 always runs); BENCH_BATCHES=8 times only
# the run's batch in step 3 (the engine opens at the largest batch: 86 s at 32 on an H200,
# most likely cuDNN's search for every layer's shape); GPU_TESTS="expr" selects
# the gpu tests of step 2. A later check can so repeat what an earlier one did not finish.
# Everything it measures lands in OUT_DIR: machine.txt, nvidia-smi.txt, versions.json,
# machine-info.json, gpu-tests.txt, bench.json and bench.md, run-*.txt, end-to-end.md,
# kernels.md, cold-start.md, variants.md.
set -euo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [--dry-run]}
mode=${2:-gpu}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python=${PYTHON:-python3}
steps=" ${STEPS:-1 2 3 4 5 6 7} "
wanted() { [[ $steps == *" $1 "* ]]; }
psicbatch() { "$python" -m psicbatch "$@"; }
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

if [[ $mode == --dry-run ]]; then
    width=0.125 size=128x128 count=12 batches=1,2 run_batch=2 duration=0.5 precision=fp32
    one=(--device cpu) all=()  # the script's flow only: one run
    kernels=(--device cpu --precision fp32 --width 0.125 --size 128x128 --batch 2)
    cold=("${kernels[@]}") variants=("${kernels[@]}" --seconds 0.3)
else
    width=1 size=1408x512 count=6000 batches=${BENCH_BATCHES:-1,8,32} run_batch=8 duration=5
    precision=fp16
    kernels=(--precision fp16 --batch 8 --size 1408x512)
    cold=("${kernels[@]}") variants=("${kernels[@]}")
    gpus=$("$python" -c "import torch; print(','.join(map(str, range(torch.cuda.device_count()))))")
    [[ -n $gpus ]] || { echo "gpu_check: no CUDA GPU visible (use --dry-run on a CPU)" >&2; exit 1; }
    one=(--device 0) all=(--device "$gpus")
    [[ $gpus == *,* ]] || all=()  # one GPU: the all-GPU run would repeat the one-GPU run
fi

echo "== 1. machine" | tee "$out/machine.txt"
# DALI carried over in parts (benchmarks/dali_parts.sh) is installed for this check alone.
if [[ -f $root/build/dali/SHA256 ]] && ! "$python" -c "import nvidia.dali" 2>/dev/null; then
    if bash "$root/benchmarks/dali_parts.sh" install "$root/build/dali" "$work/dali" 2>&1 |
        tee -a "$out/machine.txt"; then
        export PYTHONPATH="$PYTHONPATH:$work/dali"
    fi
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi -q >"$out/nvidia-smi.txt" 2>&1 || true
else
    echo "nvidia-smi not found" >"$out/nvidia-smi.txt"
fi
# One interpreter for every probe: each start of Python with torch costs seconds.
"$python" - "$out" "$mode" <<'EOF' | tee -a "$out/machine.txt"
import datetime, json, sys
from pathlib import Path
import torch
from psicbatch.hardware import cpu_precisions
from psicbatch.versions import installed_versions
out, mode = Path(sys.argv[1]), sys.argv[2]
print(datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
print("mode:", mode)
print(cpu_precisions().describe())
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())
names = ["torch", "numpy", "pyarrow", "nvidia-dali-cuda120", "nvidia-dali-cuda130",
         "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "pillow"]
(out / "versions.json").write_text(json.dumps(installed_versions(names), indent=1) + "\n")
try:
    import nvidia.dali  # noqa: F401
    print("DALI imports: runs use the DALI decoder")
except ImportError:
    print("DALI does not import here: runs use the PIL decoder, DALI GPU tests skip")
EOF
# What psicbatch itself detects here and would pick (GPUs, backends, DALI against torch's CUDA).
psicbatch info --json >"$out/machine-info.json" 2>>"$out/machine.txt" ||
    echo "psicbatch info FAILED" | tee -a "$out/machine.txt"
if grep -q "^DALI imports" "$out/machine.txt"; then decoder=dali; else decoder=pil; fi

echo "== 2. gpu tests"
if ! wanted 2; then
    echo "not run (STEPS=$steps)" >"$out/gpu-tests.txt"
elif [[ $mode == --dry-run ]]; then
    echo "dry run: the gpu tests skip without a GPU, not run" >"$out/gpu-tests.txt"
else
    (cd "$root" && "$python" -m pytest -q -p no:cacheprovider -m gpu ${GPU_TESTS:+-k "$GPU_TESTS"} tests/test_gpu.py) \
        >"$out/gpu-tests.txt" 2>&1 || echo "gpu tests FAILED (see gpu-tests.txt)" | tee -a "$out/machine.txt"
fi
tail -n 3 "$out/gpu-tests.txt"

echo "== 3. bench: width $width at $size, torch $precision, batches $batches, engine only"
# A failed step is recorded and the check goes on: every later step still measures.
if ! wanted 3; then
    echo "not run (STEPS=$steps)" >"$out/bench-log.txt"
elif psicbatch bench --width "$width" --precision "$precision" --sizes "$size" --batch "$batches" \
    --duration "$duration" --no-baseline --no-host-ceiling --no-end-to-end -o "$work/bench" \
    >"$out/bench-log.txt" 2>&1; then
    cp "$work/bench/bench.json" "$work/bench/bench.md" "$out/"
else
    echo "bench FAILED (see bench-log.txt)" | tee -a "$out/machine.txt"
fi

echo "== 4. run: $count generated $size images as JPEG, then as PNG"
if wanted 4; then
    # A file, not standard input: the processes that generate the images import it.
    cat >"$work/inputs.py" <<'EOF'
import sys
from pathlib import Path
from PIL import Image
from psicbatch.checkpoint import save_checkpoint, untrained_checkpoint
from psicbatch.data.synth import generate_many
from psicbatch.model import ModelConfig

def main() -> None:
    work, width, count = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[4])
    size = tuple(map(int, sys.argv[3].split("x")))
    save_checkpoint(untrained_checkpoint(ModelConfig(width=width), size, 0), work / "model.pt")
    # 200 distinct images (generated on every core), each linked under many names, make
    # the run's inputs (the page cache holds them either way).
    distinct = min(200, count)
    generated = sorted(generate_many(work / "generated", distinct, size, seed=5))
    for path in generated:
        Image.open(path).save(path.with_suffix(".jpg"), quality=92)
    for suffix in ("jpg", "png"):
        folder = work / "data" / suffix
        folder.mkdir(parents=True)
        for copy in range(count):
            source = generated[copy % distinct].with_suffix(f".{suffix}")
            (folder / f"{copy:06d}.{suffix}").hardlink_to(source)

if __name__ == "__main__":
    main()
EOF
    "$python" "$work/inputs.py" "$work" "$width" "$size" "$count"
    # An untrained network's masks are noise; --threshold 1 judges every image defect-free, as
    # on a healthy line, so noise masks are neither computed nor encoded (gated masks).
    for name in one-gpu all-gpus; do
        if [[ $name == one-gpu ]]; then devices=("${one[@]}"); else devices=("${all[@]}"); fi
        for suffix in jpg png; do
            log="$out/run-$name-$suffix.txt"
            if [[ ${#devices[@]} -eq 0 ]]; then
                echo "one device only: see run-one-gpu-$suffix.txt" >"$log"
                continue
            fi
            status=0
            # A wide console keeps the summary's lines whole, for the table below.
            COLUMNS=200 psicbatch run "$work/data/$suffix" --model "$work/model.pt" \
                --precision "$precision" --decoder "$decoder" --batch-size "$run_batch" "${devices[@]}" \
                --threshold 1 --out "$work/run-$name-$suffix.parquet" >"$work/run.log" 2>&1 ||
                status=$?
            # The summary table comes last; keep it (and any error) without the progress bar.
            {
                echo "psicbatch run ${devices[*]} on $count .$suffix files: exit code $status"
                grep -v "inspecting" "$work/run.log"
            } >"$log"
            grep -E "exit code|images/s" "$log"
        done
    done
    # End to end against engine-only at the run's batch (step 3), both measured here.
    "$python" - "$out" "$run_batch" <<'EOF' | tee "$out/end-to-end.md"
import json, re, sys
from pathlib import Path
out, batch = Path(sys.argv[1]), int(sys.argv[2])
bench = out / "bench.json"
results = json.loads(bench.read_text())["results"] if bench.exists() else []
alone = {r["batch"]: r["throughput_items_per_s"] for r in results}.get(batch)
print(f"| run | images/s after the first batch | engine-only images/s (batch {batch}) | share |")
print("| --- | --- | --- | --- |")
for log in sorted(out.glob("run-*-*.txt")):
    found = re.search(r"([0-9.]+) images/s after the first batch", log.read_text())
    if found:
        rate = float(found[1])
        share = f"{rate / alone:.0%}" if alone else "-"
        print(f"| {log.stem} | {rate:.1f} | {f'{alone:.1f}' if alone else '-'} | {share} |")
EOF
fi

echo "== 5. device time per convolution shape, torch $precision engine"
if wanted 5; then
    "$python" "$root/benchmarks/gpu_kernels.py" "${kernels[@]}" >"$out/kernels.md" 2>&1 ||
        echo "kernel profile FAILED (see kernels.md)" | tee -a "$out/machine.txt"
    grep -v "^USDT" "$out/kernels.md" | head -n 8
fi
echo "== 6. cold start with and without cuDNN's search, torch $precision engine"
if wanted 6; then
    "$python" "$root/benchmarks/gpu_cold_start.py" "${cold[@]}" >"$out/cold-start.md" 2>&1 ||
        echo "cold start FAILED (see cold-start.md)" | tee -a "$out/machine.txt"
    grep -v "^USDT" "$out/cold-start.md" | tail -n 4
fi
echo "== 7. exact rewrites of the network against the torch $precision engine"
if wanted 7; then
    "$python" "$root/benchmarks/gpu_variants.py" "${variants[@]}" >"$out/variants.md" 2>&1 ||
        echo "variants FAILED (see variants.md)" | tee -a "$out/machine.txt"
    grep "^|" "$out/variants.md" | tail -n 5
fi
echo "gpu_check: done, results in $out"
