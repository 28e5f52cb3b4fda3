#!/usr/bin/env bash
# The checks to run when a CUDA GPU is lent (no CI machine has one), in stages:
#   tests  tests/test_cuda.py (bf16 autocast and --no-bf16, fused Adam, channels-last,
#          torch.compile, NCCL with one process, prediction on the GPU against the CPU)
#   modes  benchmarks/prediction_modes.py: the output modes' times (issue 20), under bf16
#          (section prediction_modes_gpu) and in float32 (prediction_modes_gpu_fp32)
#   speed  benchmarks/speed.py: sections speed_gpu and speed_gpu_1024 of docs/benchmarks.md
#
#   bash benchmarks/gpu_check.sh [OUTDIR] [STAGE ...]   # default: tests modes speed
#
# Each stage has its own timeout (tests 150 s, modes 2 × 150 s, speed 290 + 100 s); a device
# call is limited to 600 s, so run `tests modes` in one call and `speed` in a second.
# Logs and the updated docs/benchmarks.md go to OUTDIR (default gpu-check).
# Uses the python3 on the PATH with the package from src/ (no install). Wheels in .whl/ (for
# packages the GPU machine lacks: pydantic, mrcfile, ...) are installed to /tmp/site first.
set -u
out=${1:-gpu-check}
shift || true
stages=${*:-tests modes speed}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$out/torch.txt"
status=0
for stage in $stages; do
    case $stage in
    tests)
        timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_devices.py 2>&1 \
            | tee "$out/tests.log"
        [ "${PIPESTATUS[0]}" = 0 ] || status=1 ;;
    modes)
        for precision in "" --no-bf16; do
            timeout 150 python3 benchmarks/prediction_modes.py --size 512 --planes 50 --repeats 3 \
                --device cuda $precision 2>&1 | tee -a "$out/prediction_modes.log"
        done ;;
    speed)
        timeout 290 python3 benchmarks/speed.py --sizes 256 --presets demo demo-regression paper \
            --child-timeout 120 2>&1 | tee "$out/speed.log"
        timeout 100 python3 benchmarks/speed.py --sizes 1024 --presets demo demo-regression \
            --variants fast --phases sample --child-timeout 60 --section speed_gpu_1024 2>&1 \
            | tee "$out/speed_1024.log" ;;
    *) echo "unknown stage '$stage': use tests, modes or speed" >&2; exit 2 ;;
    esac
done
cp docs/benchmarks.md "$out/benchmarks.md"
exit $status
