"""The kernel benchmark: FusedLSTM against torch.nn.LSTM and PyTorch fastrnns'
runners, its table and its plot.

``python -m fused_lstm bench`` times every case here (runners of one shape and
mode interleaved, repetition by repetition and in a shuffled order, so that a
busy machine and cache-evicting neighbours slow all of them alike), prints
the table and writes ``<out>/speedup.png`` and ``<out>/results.json``.
``pytest bench/ --benchmark-json=FILE`` times the same cases with
pytest-benchmark; ``python -m fused_lstm bench --from-json FILE`` turns that
file into the same table and plot.

Runners (fastrnns' names in brackets):
  fused           fused_lstm.FusedLSTM
  lstm            torch.nn.LSTM: oneDNN on CPU, cuDNN on CUDA       [cudnn]
  lstm_native     torch.nn.LSTM with oneDNN / cuDNN disabled        [aten]
  jit             TorchScript loop over a flat LSTM cell             [jit]
  py              the same loop in Python                            [py]

FLOP convention: forward = 2*T*N*4H*(I+H) (the input and recurrent GEMMs;
the pointwise gate math, ~30 FLOP per hidden unit and step, is not counted);
training (forward + backward) = 3x forward (backward: dW and dx/dh GEMMs).
The ratio column is nn.LSTM's median time over the runner's, both from the
same run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

RUNNERS = ("fused", "lstm", "lstm_native", "jit", "py")
MODES = ("inference", "training")
BASELINE = "lstm"


@dataclass(frozen=True)
class Shape:
    group: str
    T: int
    N: int
    I: int
    H: int

    @property
    def name(self) -> str:
        return f"T{self.T}-N{self.N}-I{self.I}-H{self.H}"

    def flops(self, mode: str) -> float:
        forward = 2.0 * self.T * self.N * 4 * self.H * (self.I + self.H)
        return forward if mode == "inference" else 3 * forward


SHAPES = (
    Shape("fastrnns", 100, 64, 512, 512),
    Shape("latency", 100, 1, 64, 64),
    Shape("latency", 100, 1, 256, 256),
    Shape("latency", 100, 1, 1024, 1024),
    Shape("mid", 100, 8, 128, 128),
    Shape("mid", 100, 16, 128, 128),
    Shape("long", 1000, 1, 256, 256),
    Shape("large", 50, 64, 512, 512),
)

# Issue 5's targets, for the CPU: (T, N, H, mode) -> minimum nn.LSTM time / FusedLSTM time.
TARGETS = {
    (100, 1, 64, "inference"): 2.0,
    (100, 8, 128, "inference"): 1.5,
    (1000, 1, 256, "inference"): 1.5,
    (50, 64, 512, "inference"): 1.0,
    (100, 16, 128, "training"): 1.2,
}


def target_for(shape: Shape, mode: str, device: str = "cpu") -> Optional[float]:
    return TARGETS.get((shape.T, shape.N, shape.H, mode)) if device == "cpu" else None


# ---------------------------------------------------------------- runners

def _flat_lstm_cell(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                    b_hh: Tensor) -> Tuple[Tensor, Tensor]:
    # fastrnns' flat_lstm_cell
    gates = torch.mm(x, w_ih.t()) + torch.mm(h, w_hh.t()) + b_ih + b_hh
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def _lstm_loop(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
               b_hh: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    outputs = []
    for t in range(x.size(0)):
        h, c = _flat_lstm_cell(x[t], h, c, w_ih, w_hh, b_ih, b_hh)
        outputs.append(h)
    return torch.stack(outputs), h, c


_scripted_loop = None


def _scripted():
    global _scripted_loop
    if _scripted_loop is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _scripted_loop = torch.jit.script(_lstm_loop)
    return _scripted_loop


class _CellLoop(torch.nn.Module):
    """fastrnns' "py" / "jit" runner around nn.LSTM's parameters."""

    def __init__(self, lstm: torch.nn.LSTM, scripted: bool):
        super().__init__()
        self.lstm = lstm
        self.loop = _scripted() if scripted else _lstm_loop

    def forward(self, x: Tensor):
        N, H = x.shape[1], self.lstm.hidden_size
        h = x.new_zeros(N, H)
        y, h, c = self.loop(x, h, h, self.lstm.weight_ih_l0, self.lstm.weight_hh_l0, self.lstm.bias_ih_l0,
                            self.lstm.bias_hh_l0)
        return y, (h, c)


def make_case(runner: str, shape: Shape, mode: str, device: str = "cpu", seed: int = 0) -> Callable[[], None]:
    """A callable that runs one step of the benchmark (inference: forward;
    training: forward and backward into the weights and the input)."""
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(shape.I, shape.H, device=device)
    if runner == "fused":
        from .modules import FusedLSTM
        module = FusedLSTM.from_torch(lstm)
    elif runner in ("lstm", "lstm_native"):
        module = lstm
    elif runner in ("jit", "py"):
        module = _CellLoop(lstm, scripted=runner == "jit")
    else:
        raise ValueError(f"unknown runner {runner!r}; runners: {', '.join(RUNNERS)}")
    x = torch.randn(shape.T, shape.N, shape.I, device=device, requires_grad=mode == "training")
    grad_y = torch.randn(shape.T, shape.N, shape.H, device=device)
    native = runner == "lstm_native"
    cuda = device.startswith("cuda")

    @contextlib.contextmanager
    def backends():
        if not native:
            yield
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mkldnn.flags warns about TF32 on Intel GPUs
            flags = torch.backends.cudnn.flags(enabled=False) if cuda else torch.backends.mkldnn.flags(enabled=False)
            flags.__enter__()
        try:
            yield
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flags.__exit__(None, None, None)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if mode == "inference":
        def run():
            with backends(), torch.inference_mode():
                module(x)
            sync()
    else:
        def run():
            with backends():
                y, _ = module(x)
                y.backward(grad_y)
            sync()
    return run


# ---------------------------------------------------------------- timing

@dataclass
class Result:
    shape: Shape
    mode: str
    runner: str
    median_ms: float
    repeats: int
    device: str = "cpu"

    @property
    def gflops(self) -> float:
        return self.shape.flops(self.mode) / (self.median_ms * 1e-3) / 1e9


def time_cases(shape: Shape, mode: str, runners, device: str, budget_s: float, max_repeats: int,
               min_repeats: int = 5) -> List[Result]:
    """Times the runners of one shape and mode, interleaved: each repetition
    runs every runner once, so load from other processes hits all alike. The
    order is shuffled every repetition (fixed seed), so each runner follows
    each other about equally often: a call right after a heavy runner finds
    its code and data evicted from the caches."""
    cases = {}
    for runner in runners:
        try:
            cases[runner] = make_case(runner, shape, mode, device)
        except Exception as error:  # e.g. a runner this build lacks
            print(f"  skip {runner} {shape.name} {mode}: {error}", file=sys.stderr)
    per_call = {}
    for runner, run in cases.items():
        run()  # warm-up: oneDNN primitive creation, TorchScript profiling, packing
        start = time.perf_counter()
        run()
        run()
        per_call[runner] = (time.perf_counter() - start) / 2
    total = sum(per_call.values()) or 1e-9
    repeats = int(max(min_repeats, min(max_repeats, budget_s / total)))
    times: Dict[str, List[float]] = {runner: [] for runner in cases}
    order = list(cases.items())
    shuffle = random.Random(0).shuffle
    for _ in range(repeats):
        shuffle(order)
        for runner, run in order:
            start = time.perf_counter()
            run()
            times[runner].append((time.perf_counter() - start) * 1e3)
    return [Result(shape, mode, runner, statistics.median(ts), len(ts), device) for runner, ts in times.items()]


def _cpu_idle_fraction(interval: float = 0.5) -> Optional[float]:
    """Share of CPU time idle over `interval` seconds (Linux /proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total
    try:
        idle0, total0 = sample()
        time.sleep(interval)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_until_quiet(max_wait_s: float, min_idle: float = 0.8) -> Optional[float]:
    """On a shared machine: waits up to max_wait_s for the CPUs to be at least
    min_idle idle (others' load skews every runner, nn.LSTM included); returns
    the idle fraction seen last."""
    deadline = time.monotonic() + max_wait_s
    idle = _cpu_idle_fraction()
    while idle is not None and idle < min_idle and time.monotonic() < deadline:
        idle = _cpu_idle_fraction()
    return idle


# ---------------------------------------------------------------- report

def fma_peak_gflops() -> Optional[float]:
    """This machine's float32 FMA peak if FUSED_LSTM_FMA_PEAK_GFLOPS says it
    (measured by bench/fma_peak.py); shown beside the achieved GFLOP/s."""
    value = os.environ.get("FUSED_LSTM_FMA_PEAK_GFLOPS")
    return float(value) if value else None


def table(results: List[Result]) -> str:
    peak = fma_peak_gflops()
    by_key = {(r.shape, r.mode, r.runner): r for r in results}
    lines = []
    header = (f"{'shape':22s} {'group':9s} {'mode':9s} {'runner':12s} {'median ms':>10s} {'GFLOP/s':>8s}"
              + (f" {'% peak':>6s}" if peak else "") + f" {'vs lstm':>8s}  target")
    lines.append(header)
    lines.append("-" * len(header))
    shapes = list(dict.fromkeys(r.shape for r in results))
    for shape in shapes:
        for mode in MODES:
            base = by_key.get((shape, mode, BASELINE))
            for runner in RUNNERS:
                r = by_key.get((shape, mode, runner))
                if r is None:
                    continue
                ratio = base.median_ms / r.median_ms if base else float("nan")
                target = target_for(shape, mode, r.device) if runner == "fused" else None
                verdict = "" if target is None else f">= {target:.1f} {'met' if ratio >= target else 'MISSED'}"
                lines.append(f"{shape.name:22s} {shape.group:9s} {mode:9s} {runner:12s} {r.median_ms:10.3f} "
                             f"{r.gflops:8.1f}" + (f" {100 * r.gflops / peak:5.0f}%" if peak else "")
                             + f" {ratio:7.2f}x  {verdict}")
    return "\n".join(lines)


def plot(results: List[Result], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {(r.shape, r.mode, r.runner): r for r in results}
    shapes = list(dict.fromkeys(r.shape for r in results))
    runners = [r for r in RUNNERS if r != BASELINE and any(x.runner == r for x in results)]
    fig, axes = plt.subplots(1, len(MODES), figsize=(7 * len(MODES), 4.5), sharey=True)
    width = 0.8 / max(1, len(runners))
    for ax, mode in zip(axes, MODES):
        for i, runner in enumerate(runners):
            ratios = []
            for shape in shapes:
                base, r = by_key.get((shape, mode, BASELINE)), by_key.get((shape, mode, runner))
                ratios.append(base.median_ms / r.median_ms if base and r else 0.0)
            ax.bar([k + (i - (len(runners) - 1) / 2) * width for k in range(len(shapes))], ratios, width,
                   label=runner)
        for k, shape in enumerate(shapes):
            base = by_key.get((shape, mode, BASELINE))
            target = target_for(shape, mode, base.device) if base else None
            if target:
                ax.plot([k - 0.4, k + 0.4], [target, target], "k--", linewidth=1)
        ax.axhline(1.0, color="gray", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels([s.name.replace("-", "\n") for s in shapes], fontsize=7)
        ax.set_title(f"{mode}: speed-up over torch.nn.LSTM (higher is better; dashed: target)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("nn.LSTM time / runner time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_from_pytest_json(path: str) -> List[Result]:
    with open(path) as f:
        data = json.load(f)
    results = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if "runner" not in info or "shape" not in info:  # not a sequence case (bench/test_bench_cell.py's)
            continue
        shape = Shape(**info["shape"])
        results.append(Result(shape, info["mode"], info["runner"], bench["stats"]["median"] * 1e3,
                              bench["stats"]["rounds"], info.get("device", "cpu")))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fused_lstm bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--runners", default=",".join(RUNNERS), help="comma-separated subset of " + ", ".join(RUNNERS))
    parser.add_argument("--groups", default="", help="only these shape groups (comma-separated)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per shape and mode")
    parser.add_argument("--max-repeats", type=int, default=200)
    parser.add_argument("--out", default="bench-results", help="folder for speedup.png and results.json")
    parser.add_argument("--from-json", help="build the report from a pytest-benchmark JSON file instead of timing")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each shape and mode, wait up to SECONDS for the CPUs to be 80%% idle "
                             "(shared machines)")
    args = parser.parse_args(argv)

    if args.from_json:
        results = results_from_pytest_json(args.from_json)
    else:
        runners = [r for r in args.runners.split(",") if r]
        if BASELINE not in runners:
            runners.append(BASELINE)
        groups = {g for g in args.groups.split(",") if g}
        shapes = [s for s in SHAPES if not groups or s.group in groups]
        print(f"fused_lstm bench on {platform.processor() or platform.machine()} ({args.device}), "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
        results = []
        for shape in shapes:
            for mode in args.modes.split(","):
                idle = wait_until_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
                results += time_cases(shape, mode, runners, args.device, args.budget, args.max_repeats)
                if idle is not None:
                    print(f"  (CPUs {100 * idle:.0f}% idle before timing)", flush=True)
                got = {r.runner: r.median_ms for r in results if r.shape == shape and r.mode == mode}
                print(f"  {shape.name} {mode}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in got.items()), flush=True)
    print()
    print(table(results))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump([dict(asdict(r), gflops=r.gflops) for r in results], f, indent=1, default=str)
    try:
        plot(results, os.path.join(args.out, "speedup.png"))
        print(f"\nplot: {os.path.join(args.out, 'speedup.png')}")
    except ImportError:
        print("\n(matplotlib not installed: no plot; pip install fused_lstm[bench])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
