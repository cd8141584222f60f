#include "host_openmp.h"

#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#endif

namespace fused_lstm::cpu {
namespace {

#if defined(__linux__)
int find_openmp(dl_phdr_info* info, size_t, void* data) {
  const char* name = info->dlpi_name;
  if (name == nullptr) return 0;
  const char* base = std::strrchr(name, '/');
  base = base ? base + 1 : name;
  if (std::strncmp(base, "libgomp", 7) == 0 || std::strncmp(base, "libiomp5", 8) == 0 ||
      std::strncmp(base, "libomp.", 7) == 0) {
    *static_cast<std::string*>(data) = name;
    return 1;
  }
  return 0;
}

HostOpenMP look_up() {
  HostOpenMP omp;
  const char* team = std::getenv("FUSED_LSTM_CPU_TEAM");
  if (team != nullptr && std::strcmp(team, "threads") == 0) return omp;
  std::string path;
  dl_iterate_phdr(find_openmp, &path);
  if (path.empty()) return omp;
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);  // never loads a runtime
  if (handle == nullptr) return omp;
  omp.parallel = reinterpret_cast<decltype(omp.parallel)>(dlsym(handle, "GOMP_parallel"));
  omp.thread_num = reinterpret_cast<decltype(omp.thread_num)>(dlsym(handle, "omp_get_thread_num"));
  omp.num_threads = reinterpret_cast<decltype(omp.num_threads)>(dlsym(handle, "omp_get_num_threads"));
  omp.in_parallel = reinterpret_cast<decltype(omp.in_parallel)>(dlsym(handle, "omp_in_parallel"));
  return omp;  // the handle stays open: the runtime stays loaded with torch anyway
}
#else
HostOpenMP look_up() { return {}; }
#endif

}  // namespace

const HostOpenMP& host_openmp() {
  static const HostOpenMP omp = look_up();
  return omp;
}

}  // namespace fused_lstm::cpu
