// The input of a libFuzzer run as an fd at offset 0, the way every ck
// reader takes its stream: one memfd per fuzzer process, refilled each run.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>

#include "fd.h"

namespace ckfuzz {

inline int input_fd(const uint8_t* data, size_t size) {
  static int fd = memfd_create("fuzz", 0);
  if (fd < 0) abort();
  if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) abort();
  if (size) ck::write_full(fd, data, size);
  lseek(fd, 0, SEEK_SET);
  return fd;
}

}  // namespace ckfuzz
