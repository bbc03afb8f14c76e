#include "uffd.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

namespace ck {

bool uffd_copy(int uffd, uint64_t addr, const char* src, uint64_t len,
               const std::function<void(uint64_t, const char*)>& present, uint64_t* at) {
  constexpr uint64_t kPg = 4096;
  while (len) {
    struct uffdio_copy c = {addr, reinterpret_cast<uint64_t>(src), len, 0, 0};
    int r = ::ioctl(uffd, UFFDIO_COPY, &c);
    if (c.copy > 0) {
      addr += static_cast<uint64_t>(c.copy), src += c.copy, len -= static_cast<uint64_t>(c.copy);
      continue;
    }
    if (r != 0 && errno == EAGAIN) continue;
    if (r != 0 && errno == EEXIST) {
      present(addr, src);
      addr += kPg, src += kPg, len -= kPg;
      continue;
    }
    *at = addr;
    return false;
  }
  return true;
}

}  // namespace ck
