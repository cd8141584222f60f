"""ptxas resource report of every CUDA kernel vs the budget its launcher assumes.

Compiles each csrc/cuda/*.cu for sm_90 (cubin only, a few seconds each, in
parallel) with `-Xptxas -v` and the build's spill gate, parses the report, and
checks per kernel: no spills, no stack frame, no static shared memory (all of
it is dynamic, sized by the launcher), and registers x threads per block x the
blocks per SM the launcher counts on within the SM's 64K registers. The
persistent kernels' co-residency (and simt's model of it) rests on that last one.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
REGISTERS_PER_SM = 65536
ARCH = "sm_90"

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found")


def header_constant(name, text):
    match = re.search(rf"constexpr int {name} = (\d+);", text)
    assert match, f"{name} not found"
    return int(match.group(1))


def parse_report(text):
    """{mangled kernel name: {registers, spill_stores, spill_loads, stack, smem}}"""
    kernels, current = {}, None
    for line in text.splitlines():
        if m := re.search(r"Compiling entry function '(\S+)' for '(\w+)'", line):
            current = kernels.setdefault(m.group(1), {"smem": 0})
        elif current is not None and (m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                                                     r"(\d+) bytes spill loads", line)):
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current is not None and (m := re.search(r"Used (\d+) registers", line)):
            current["registers"] = int(m.group(1))
            if s := re.search(r"(\d+) bytes smem", line):
                current["smem"] = int(s.group(1))
    return kernels


def demangle(names):
    filt = shutil.which("c++filt")
    if not filt:
        return {n: n for n in names}
    out = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ptxas")
    sources = sorted(CUDA_DIR.glob("*.cu"))
    jobs = []
    for source in sources:
        command = [NVCC, "-std=c++17", "--expt-relaxed-constexpr", f"-arch={ARCH}", "-cubin",
                   "-Xptxas=-v,-warn-spills,-Werror", "-o", str(out_dir / (source.stem + ".cubin")), str(source)]
        jobs.append((source, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    kernels = {}
    for source, job in jobs:
        output, _ = job.communicate()
        assert job.returncode == 0, f"{source.name} failed to compile (a spill is an error):\n{output}"
        kernels.update(parse_report(output))
    names = demangle(list(kernels))
    short = {m: re.sub(r"^void |fused_lstm::(cuda::)?|\([^()]*\)$", "", n) for m, n in names.items()}
    table = [f"{'kernel (' + ARCH + ')':48s}  regs  spill  stack  static smem"]
    for mangled, info in sorted(kernels.items(), key=lambda kv: short[kv[0]]):
        table.append(f"{short[mangled]:48s} {info['registers']:5d} {info['spill_stores'] + info['spill_loads']:6d}"
                     f" {info['stack']:6d} {info['smem']:12d}")
    print("\n".join(table))
    return {names[m]: info for m, info in kernels.items()}


def test_every_kernel_reported(report):
    recurrence = [n for n in report if "fused_lstm::cuda::lstm_" in n and "pointwise" not in n]
    for kind in ["fwd_step", "fwd_proj", "fwd_persistent", "bwd_step", "bwd_dh", "bwd_persistent", "transpose"]:
        for dtype in ["float", "__half", "__nv_bfloat16"]:
            assert any(f"lstm_{kind}_kernel<{dtype}>" in n for n in recurrence), (kind, dtype, recurrence)
    assert any("lstm_row_offsets_kernel" in n for n in recurrence)


def test_no_spills_no_stack_no_static_smem(report):
    for name, info in report.items():
        assert info["spill_stores"] == 0 and info["spill_loads"] == 0, (name, info)
        assert info["stack"] == 0, (name, info)
        assert info["smem"] == 0, f"{name}: static shared memory; use FUSED_LSTM_DYNAMIC_SMEM"


def test_registers_fit_the_launch_budget(report):
    text = (CUDA_DIR / "lstm_recurrence_kernel.cuh").read_text()
    threads = header_constant("kMaxThreads", text)
    min_blocks = header_constant("kMinBlocksPerSm", text)
    for name, info in report.items():
        if "pointwise" in name:
            pointwise_threads = header_constant("kPointwiseThreads", (CUDA_DIR / "lstm_pointwise_kernel.cuh").read_text())
            assert info["registers"] * pointwise_threads <= REGISTERS_PER_SM, (name, info)
            continue
        # The launchers (and simt's co-residency model) count on kMinBlocksPerSm
        # blocks of kMaxThreads per SM: registers must allow it.
        assert info["registers"] * threads * min_blocks <= REGISTERS_PER_SM, (name, info)
