// Checks that throw (never exit/abort): file:line, the failed expression and
// the values the caller adds. pybind11 turns fused_lstm::Error into a Python
// RuntimeError (or ValueError for FUSED_LSTM_CHECK_ARG).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace fused_lstm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ArgumentError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

namespace detail {
template <class... Args>
std::string check_message(const char* file, int line, const char* expr, const Args&... args) {
  std::ostringstream out;
  out << "fused_lstm: " << expr << " failed at " << file << ":" << line;
  if constexpr (sizeof...(Args) > 0) {
    out << ": ";
    (out << ... << args);
  }
  return out.str();
}
}  // namespace detail

}  // namespace fused_lstm

#define FUSED_LSTM_CHECK(cond, ...)                                                          \
  do {                                                                                       \
    if (!(cond))                                                                             \
      throw ::fused_lstm::Error(                                                             \
          ::fused_lstm::detail::check_message(__FILE__, __LINE__, #cond, ##__VA_ARGS__));    \
  } while (0)

// A bad argument from the caller (shape, size, null pointer): ValueError in Python.
#define FUSED_LSTM_CHECK_ARG(cond, ...)                                                      \
  do {                                                                                       \
    if (!(cond))                                                                             \
      throw ::fused_lstm::ArgumentError(                                                     \
          ::fused_lstm::detail::check_message(__FILE__, __LINE__, #cond, ##__VA_ARGS__));    \
  } while (0)
