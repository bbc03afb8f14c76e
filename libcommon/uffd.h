// userfaultfd: the one UFFDIO_COPY loop, shared by the eager restore (which
// fills registered memory before the tree runs) and ck-uffd-serve (which
// fills it while the tree runs).
#pragma once
#include <cstdint>
#include <functional>

namespace ck {

// Copies [src, src + len) to addr through UFFDIO_COPY, resuming after the
// kernel's partial copies and EAGAIN.  A page that is already there
// (EEXIST) is handed to present(addr, src) and passed over; the callers
// differ in what that means (overwrite it, or leave it).  Any other error
// stops the copy: false, errno kept, *at the address that failed.
bool uffd_copy(int uffd, uint64_t addr, const char* src, uint64_t len,
               const std::function<void(uint64_t addr, const char* src)>& present, uint64_t* at);

}  // namespace ck
