"""python -m fused_lstm info: how the compiled core was built and what it sees."""
from __future__ import annotations

import argparse
import sys


def info() -> int:
    import torch

    from . import _C

    build = _C.build_info()
    print(f"fused_lstm core: {_C.__file__}")
    if build["cuda"]:
        archs = ", ".join(f"sm_{a}" for a in build["cuda_archs"].split(",") if a)
        print(f"CUDA kernels: built with nvcc {build['cuda_compiler_version']} for {archs}")
        if build["cuda_runtime_error"]:
            print(f"CUDA runtime: no device ({build['cuda_runtime_error']})")
        else:
            print(f"CUDA runtime: {build['cuda_device_count']} device(s)")
    else:
        print("CUDA kernels: not built (CPU-only build)")
    print(f"CPU features: {', '.join(build['cpu_features']) or 'none detected'}")
    try:
        from . import _simt  # noqa: F401
        print("simt test module: present (CUDA kernels runnable on the CPU)")
    except ImportError:
        print("simt test module: not built (FUSED_LSTM_SIMT=OFF)")
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fused_lstm")
    parser.add_argument("command", choices=["info"])
    args = parser.parse_args(argv)
    return {"info": info}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
