"""The benchmark's timing loop (fused_lstm.bench_report.time_cases) with stand-in runners."""
import json
from collections import Counter

from fused_lstm import bench_report


def test_time_cases_interleaves_runners_in_shuffled_orders(monkeypatch):
    calls = []
    monkeypatch.setattr(bench_report, "make_case", lambda runner, *args: lambda: calls.append(runner))
    runners = ["a", "b", "c", "d"]
    results = bench_report.time_cases(bench_report.SHAPES[0], "inference", runners, "cpu", budget_s=0.0,
                                      max_repeats=200, min_repeats=200)
    assert [r.runner for r in results] == runners and all(r.repeats == 200 for r in results)
    timed = calls[3 * len(runners):]  # after the warm-up and per-call estimate: 3 calls each
    repetitions = [timed[i:i + len(runners)] for i in range(0, len(timed), len(runners))]
    assert len(repetitions) == 200 and all(sorted(rep) == runners for rep in repetitions)
    # Every runner follows every other about equally often (1/3 each here), not always the same one.
    predecessors = Counter(zip(timed, timed[1:]))
    for runner in runners:
        counts = [predecessors[(other, runner)] for other in runners if other != runner]
        assert min(counts) > 0.6 * max(counts), (runner, counts)


def test_targets_are_the_cpus_only():
    shape = next(s for s in bench_report.SHAPES if bench_report.target_for(s, "inference"))
    for device, shown in (("cpu", True), ("cuda", False)):
        results = [bench_report.Result(shape, "inference", runner, ms, 5, device)
                   for runner, ms in (("fused", 1.0), ("lstm", 3.0))]
        fused_row = next(line for line in bench_report.table(results).splitlines() if " fused " in line)
        assert ("met" in fused_row) == shown, (device, fused_row)


def test_results_from_pytest_json_reads_the_sequence_cases_only(tmp_path):
    shape = bench_report.SHAPES[0]
    sequence = dict(shape=dict(group=shape.group, T=shape.T, N=shape.N, I=shape.I, H=shape.H), mode="training",
                    runner="fused", device="cpu")
    cell = dict(batch=1, hidden=64, mode="training", runner="fused", device="cpu")  # bench/test_bench_cell.py's
    stats = dict(median=0.002, rounds=7)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(dict(benchmarks=[dict(extra_info=sequence, stats=stats),
                                                dict(extra_info=cell, stats=stats)])))
    results = bench_report.results_from_pytest_json(str(path))
    assert [(r.shape, r.mode, r.runner, r.median_ms, r.repeats) for r in results] == [
        (shape, "training", "fused", 2.0, 7)]
