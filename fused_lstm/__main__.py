"""python -m fused_lstm info | demo | bench"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from . import __version__, _backend
from .modules import FusedLSTM


def info() -> int:
    build = _backend.build_info()
    print(f"fused_lstm {__version__}  torch {torch.__version__}  python {platform.python_version()}")
    if "import_error" in build:
        print(f"compiled core: NOT BUILT ({build['import_error']})")
        return 1
    archs = build["cuda_archs"]
    print(f"CUDA kernels compiled: {'yes, for sm_' + ', sm_'.join(archs.split(',')) if build['cuda'] else 'no'}"
          + (f" (nvcc {build['cuda_compiler_version']})" if build["cuda"] else ""))
    try:
        from . import _simt  # noqa: F401  (test-only module, built with FUSED_LSTM_SIMT=ON)
        simt = "yes"
    except ImportError:
        simt = "no"
    print(f"simt module built: {simt}")
    print(f"CPU: {platform.machine()}, features: {' '.join(build['cpu_features']) or 'none detected'}, "
          f"torch threads: {torch.get_num_threads()}")
    print(f"CPU recurrence: {build['cpu_isa']} kernels, {build['cpu_team']} thread team")
    devices = ["cpu"]
    if build["cuda"]:
        error = build.get("cuda_runtime_error")
        devices += [f"cuda:{i}" for i in range(build["cuda_device_count"])]
        if error:
            print(f"CUDA runtime: {error}")
    if torch.cuda.is_available():
        devices += [f"torch sees {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    print(f"devices visible: {', '.join(devices)}")
    print(f"backend for CPU tensors: {_backend.choose('cpu')}")
    return 0


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN builds its primitives on the first call of a shape
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def demo(repeats: int) -> int:
    """Parity with nn.LSTM on random data, then both timed on this machine."""
    torch.manual_seed(0)
    print(f"fused_lstm {__version__} demo on {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads")
    failures = 0
    # Parity: float64 and float32, forward and backward, a multi-layer bidirectional projected LSTM.
    for dtype, tolerance in ((torch.float64, 1e-9), (torch.float32, 5e-5)):
        reference = torch.nn.LSTM(16, 32, num_layers=2, bidirectional=True, proj_size=8, dtype=dtype)
        fused = FusedLSTM.from_torch(reference)
        x = torch.randn(20, 4, 16, dtype=dtype, requires_grad=True)
        errors = []
        grads = []
        for module in (reference, fused):
            out, (h, c) = module(x)
            loss = out.square().sum() + h.sum() + c.sum()
            grads.append([out, h, c] + list(torch.autograd.grad(loss, [x, *module.parameters()])))
        errors = [(a - b).abs().max().item() for a, b in zip(*grads)]
        ok = max(errors) <= tolerance
        failures += not ok
        print(f"parity {str(dtype):14s} outputs+gradients max |diff| = {max(errors):.2e} "
              f"(bound {tolerance:.0e}): {'OK' if ok else 'FAIL'}")
    print()
    print(f"{'shape (T, N, I, H)':24s} {'mode':10s} {'nn.LSTM ms':>11s} {'FusedLSTM ms':>13s} {'speed-up':>9s}")
    for T, N, I, H in ((100, 1, 64, 64), (100, 8, 128, 128), (100, 16, 128, 128), (50, 64, 512, 512)):
        reference = torch.nn.LSTM(I, H)
        fused = FusedLSTM.from_torch(reference)
        x = torch.randn(T, N, I)
        for mode in ("inference", "training"):
            xin = x.clone().requires_grad_(mode == "training")

            def run(module, xin=xin, mode=mode):
                if mode == "inference":
                    with torch.inference_mode():
                        module(xin)
                else:
                    out, _ = module(xin)
                    out.sum().backward()

            ms_torch = _median_ms(lambda: run(reference), repeats)
            ms_fused = _median_ms(lambda: run(fused), repeats)
            print(f"{str((T, N, I, H)):24s} {mode:10s} {ms_torch:11.2f} {ms_fused:13.2f} {ms_torch / ms_fused:8.2f}x")
    print("\n(medians of", repeats, "runs each; `python -m fused_lstm bench` runs the full benchmark suite)")
    return 1 if failures else 0


def bench(argv) -> int:
    try:
        from .bench_report import main as bench_main
    except ImportError as error:
        print(f"the benchmark report is not available: {error}", file=sys.stderr)
        return 1
    return bench_main(argv)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fused_lstm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, compiled kernels and architectures, devices")
    demo_parser = commands.add_parser("demo", help="parity check and timing against torch.nn.LSTM")
    demo_parser.add_argument("--repeats", type=int, default=20)
    commands.add_parser("bench", help="the kernel benchmark suite's table and plot", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "info":
        return info()
    if args.command == "demo":
        return demo(args.repeats)
    return bench(rest)


if __name__ == "__main__":
    sys.exit(main())
