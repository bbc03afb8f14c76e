// The PAGEMAP_SCAN ioctl ABI (Linux 6.7, include/uapi/linux/fs.h).  This
// machine's headers predate it, so it is spelled out once here for
// ck-memread and the dirty-page tracker.
#pragma once
#include <sys/ioctl.h>

#include <cstdint>

namespace ck::pagemap {

struct PageRegion {
  uint64_t start, end, categories;
};
struct ScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
  uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
static_assert(sizeof(ScanArg) == 96, "pm_scan_arg layout");

constexpr uint64_t kPageIsWritten = 1 << 1;
constexpr uint64_t kPageIsFile = 1 << 2;
constexpr uint64_t kPageIsPresent = 1 << 3;
constexpr uint64_t kPageIsSwapped = 1 << 4;
constexpr uint64_t kPageIsPfnZero = 1 << 5;
constexpr uint64_t kPageIsHuge = 1 << 6;
constexpr uint64_t kScanWpMatching = 1 << 0;
constexpr uint64_t kScanCheckWpasync = 1 << 1;
constexpr unsigned long kIoctl = _IOWR('f', 16, struct ScanArg);

}  // namespace ck::pagemap
