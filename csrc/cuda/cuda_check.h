// Every CUDA runtime call and launch is checked; a failure throws
// fused_lstm::Error (a Python RuntimeError) naming the call and the cause.
#pragma once
#include <cuda_runtime.h>

#include "../common/check.h"

#define FUSED_LSTM_CUDA_CHECK(call)                                                     \
  do {                                                                                  \
    const cudaError_t status_ = (call);                                                 \
    FUSED_LSTM_CHECK(status_ == cudaSuccess, cudaGetErrorName(status_), ": ",          \
                     cudaGetErrorString(status_));                                      \
  } while (0)

// After a <<<>>> launch: configuration errors show up here, not at the launch.
#define FUSED_LSTM_CUDA_CHECK_LAUNCH() FUSED_LSTM_CUDA_CHECK(cudaGetLastError())
