#!/usr/bin/env bash
# One call on a lent GPU machine (the image's python3 has torch with CUDA,
# pybind11, scikit-build-core, pytest-timeout): build for that GPU only, run the
# cuda-marked tests, time FusedLSTM against cuDNN (both CUDA paths), and run one
# small case of each path under compute-sanitizer. Logs go to $OUT (or ./gpu-check).
#   bash bench/gpu_check.sh            ARCHS=90 by default (H100/H200)
set -uo pipefail
out=${OUT:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=python3
start=$SECONDS
stamp() { echo "== $1 (t=$((SECONDS - start)) s)"; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  nvcc --version | tail -1
  $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/machine.txt"

stamp "build (sm_${ARCHS:-90})"
if ! FUSED_LSTM_CUDA=ON FUSED_LSTM_CUDA_ARCHS="${ARCHS:-90}" \
    $py -m pip install --no-build-isolation --no-deps --no-index -v -e . >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  exit 1
fi
$py -m fused_lstm info | tee -a "$out/machine.txt"

stamp "cuda tests"
timeout 240 $py -m pytest -m cuda -q -rfE --tb=short -p no:cacheprovider \
  --timeout 120 -o timeout_method=thread 2>&1 | tee "$out/tests.log" | tail -40

stamp "benchmark, default path choice"
timeout 120 $py -m fused_lstm bench --device cuda --runners fused,lstm,lstm_native --budget 1 \
  --out "$out/bench" 2>&1 | tee "$out/bench.log" | tail -24

stamp "benchmark, step path forced"
FUSED_LSTM_CUDA_PATH=step timeout 60 $py -m fused_lstm bench --device cuda --runners fused,lstm \
  --groups latency,mid,long --modes inference --budget 0.5 --out /tmp/bench-step 2>&1 | tee -a "$out/bench.log" | tail -10

stamp "compute-sanitizer memcheck, both paths"
cat >/tmp/sanitize_case.py <<'EOF'
import os, torch
from fused_lstm import FusedLSTM
torch.manual_seed(0)
# H=512, N=40: both persistent kernels split the batch into shared-memory stages
# (the backward's by the bytes its weight slices leave), the step kernels too.
ref = torch.nn.LSTM(32, 512, device="cuda")
fused = FusedLSTM.from_torch(ref)
x = torch.randn(6, 40, 32, device="cuda", requires_grad=True)
y, (h, c) = fused(x)
(y.sum() + h.sum() + c.sum()).backward()
torch.cuda.synchronize()
print(os.environ.get("FUSED_LSTM_CUDA_PATH", "auto"), "ok", float((y - ref(x)[0]).abs().max()))
EOF
for path in persistent step; do
  FUSED_LSTM_CUDA_PATH=$path timeout 60 compute-sanitizer --tool memcheck --error-exitcode 3 $py /tmp/sanitize_case.py \
    >"$out/sanitizer-$path.log" 2>&1
  echo "memcheck $path: exit $?"; tail -3 "$out/sanitizer-$path.log"
done
stamp "done"
