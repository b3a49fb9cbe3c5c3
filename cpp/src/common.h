// Small shared vocabulary of the core: the error type and checked arithmetic.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace lowbit {

// Every recoverable failure (bad file, bad argument, unsupported model) is an Error.
// The Python binding turns it into a Python exception; the C API into a status code.
class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Thrown for input that is structurally invalid (corrupt or truncated file, ...).
class FormatError : public Error {
  public:
    using Error::Error;
};

[[noreturn]] inline void fail(const std::string& msg) { throw Error(msg); }

// a * b, or throw if it does not fit in int64.
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) throw FormatError(std::string("size overflow in ") + what);
    return r;
}

}  // namespace lowbit
