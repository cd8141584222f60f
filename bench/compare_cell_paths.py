"""FusedLSTMCell's two CPU step paths against torch.nn.LSTMCell, interleaved
repetition by repetition in one process, in a shuffled order (so the VM's
phases and each runner's cache evictions slow all three alike): the
recurrence's kernels for the whole step ("kernels"), and the path the cell
chooses (_ops._cell_by_gemms: the framework's GEMMs plus our gate math for
large weights, else the kernels). Prints median us and nn.LSTMCell time /
FusedLSTMCell time per case.
    python bench/compare_cell_paths.py [N,H ...]     (default: the shapes below)
"""
import random
import statistics
import sys
import time

from fused_lstm import _ops
from test_bench_cell import make_cell_case

SHAPES = [(1, 64), (8, 128), (64, 256), (1, 256), (8, 256), (1, 512), (16, 512)]


def compare(batch, hidden, mode, repeats):
    runs = {name: make_cell_case("lstm_cell" if name == "nn" else "fused", batch, hidden, mode)
            for name in ("kernels", "chosen", "nn")}
    chosen_bytes = _ops.CELL_GEMM_MIN_WEIGHT_BYTES

    def run(name):
        _ops.CELL_GEMM_MIN_WEIGHT_BYTES = 1 << 62 if name == "kernels" else chosen_bytes
        runs[name]()

    try:
        for name in runs:
            for _ in range(10):
                run(name)
        times = {name: [] for name in runs}
        order, shuffle = list(runs), random.Random(0).shuffle
        for _ in range(repeats):
            shuffle(order)
            for name in order:
                start = time.perf_counter()
                run(name)
                times[name].append(time.perf_counter() - start)
    finally:
        _ops.CELL_GEMM_MIN_WEIGHT_BYTES = chosen_bytes
    return {name: statistics.median(values) * 1e6 for name, values in times.items()}


def main(argv):
    shapes = [tuple(int(v) for v in arg.split(",")) for arg in argv] or SHAPES
    for batch, hidden in shapes:
        line = f"N={batch} H={hidden}"
        for mode in ("inference", "training"):
            us = compare(batch, hidden, mode, 600 if batch * hidden <= 1024 else 200)
            line += (f" | {mode}: kernels {us['kernels']:.0f} us ({us['nn'] / us['kernels']:.2f}x), chosen "
                     f"{us['chosen']:.0f} us ({us['nn'] / us['chosen']:.2f}x), nn.LSTMCell {us['nn']:.0f} us")
        print(line, flush=True)


if __name__ == "__main__":  # run as a script: bench/ is on sys.path, test_bench_cell with it
    main(sys.argv[1:])
