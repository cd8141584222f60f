"""FusedLSTM against torch.nn.LSTM (oneDNN / cuDNN, and native) and fastrnns'
jit / py cell loops, inference and training, over the shapes of
fused_lstm.bench_report. Raw numbers: --benchmark-json; the case is in each
benchmark's extra_info, which `python -m fused_lstm bench --from-json` reads."""
from dataclasses import asdict

import pytest

from fused_lstm.bench_report import MODES, RUNNERS, SHAPES, make_case


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s.group}-{s.name}")
def test_lstm(benchmark, shape, mode, runner, device):
    run = make_case(runner, shape, mode, device)
    run()  # warm-up: primitive creation, scripting, first-touch
    benchmark.extra_info.update(shape=asdict(shape), mode=mode, runner=runner, device=device, flops=shape.flops(mode))
    benchmark.pedantic(run, rounds=max(3, min(50, int(2e9 / shape.flops(mode)))), warmup_rounds=1)
