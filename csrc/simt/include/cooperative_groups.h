// simt shim of <cooperative_groups.h>: grid.sync() is a barrier over every
// thread of a cooperative simt launch.
#pragma once
#include "cuda_runtime.h"

namespace cooperative_groups {
struct grid_group {
  void sync() const { ::simt::grid_sync(); }
};
struct thread_block {
  void sync() const { ::simt::syncthreads(); }
};
inline grid_group this_grid() { return {}; }
inline thread_block this_thread_block() { return {}; }
}  // namespace cooperative_groups
