#include "vma.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "error.h"
#include "fd.h"
#include "log.h"

CK_LOG_MODULE("memread");

namespace ck {
namespace {

bool starts_with(const std::string& s, const char* p) { return s.compare(0, std::strlen(p), p) == 0; }

// Splits off the next space-separated token from s at *pos.
bool token(const std::string& s, size_t* pos, std::string* out) {
  size_t b = s.find_first_not_of(' ', *pos);
  if (b == std::string::npos) return false;
  size_t e = s.find(' ', b);
  if (e == std::string::npos) e = s.size();
  *out = s.substr(b, e - b);
  *pos = e;
  return true;
}

bool parse_hex_strict(const std::string& s, uint64_t* v) {
  if (s.empty() || s.size() > 16) return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long x = std::strtoull(s.c_str(), &end, 16);
  if (errno || *end) return false;
  *v = x;
  return true;
}

// "start-end" where both are hex: a header line of maps/smaps.
bool is_header(const std::string& line) {
  size_t dash = line.find('-');
  size_t sp = line.find(' ');
  if (dash == std::string::npos || sp == std::string::npos || dash > sp || dash == 0) return false;
  for (size_t i = 0; i < sp; ++i)
    if (i != dash && !std::isxdigit(static_cast<unsigned char>(line[i]))) return false;
  return true;
}

}  // namespace

pb::VmaKind vma_kind(const std::string& path, bool shared) {
  if (path == "[heap]") return pb::VMA_HEAP;
  if (path == "[stack]") return pb::VMA_STACK;
  if (path == "[vdso]") return pb::VMA_VDSO;
  if (path == "[vvar]") return pb::VMA_VVAR;
  if (path == "[vvar_vclock]") return pb::VMA_VVAR_VCLOCK;
  if (path == "[vsyscall]") return pb::VMA_VSYSCALL;
  if (starts_with(path, "/memfd:")) return pb::VMA_MEMFD;
  if (starts_with(path, "/SYSV")) return pb::VMA_SYSV_SHM;
  if (path.empty() || path[0] == '[') return shared ? pb::VMA_SHARED_ANON : pb::VMA_ANON;  // [anon:name] too
  if (path == "/dev/zero (deleted)" || path == "/anon_hugepage (deleted)")
    return shared ? pb::VMA_SHARED_ANON : pb::VMA_ANON;
  return shared ? pb::VMA_FILE_SHARED : pb::VMA_FILE_PRIVATE;
}

bool vma_is_shmem_object(const pb::Vma& v) {
  switch (v.kind()) {
    case pb::VMA_SHARED_ANON:
    case pb::VMA_SYSV_SHM:
    case pb::VMA_MEMFD:
      return true;
    default:
      return false;
  }
}

bool vma_has_private_pages(const pb::Vma& v) {
  switch (v.kind()) {
    case pb::VMA_ANON:
    case pb::VMA_HEAP:
    case pb::VMA_STACK:
    case pb::VMA_FILE_PRIVATE:
      return true;
    case pb::VMA_MEMFD:  // a MAP_PRIVATE memfd mapping has COW pages of its own
      return v.flags() & MAP_PRIVATE;
    default:
      return false;
  }
}

std::vector<pb::Vma> parse_maps(const std::string& text, const std::string& what) {
  std::vector<pb::Vma> out;
  size_t at = 0;
  int lineno = 0;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(at, nl - at);
    at = nl + 1;
    ++lineno;
    if (line.empty()) continue;
    if (!is_header(line)) {
      if (starts_with(line, "VmFlags:")) {
        if (out.empty()) bad_input(strf("%s line %d: VmFlags before any mapping", what.c_str(), lineno));
        size_t b = line.find_first_not_of(' ', 8);
        std::string f = b == std::string::npos ? "" : line.substr(b);
        while (!f.empty() && f.back() == ' ') f.pop_back();
        out.back().set_vmflags(f);
      }
      continue;  // other smaps lines
    }
    auto bad = [&](const char* why) {
      bad_input(strf("%s line %d: %s: '%s'", what.c_str(), lineno, why, line.c_str()));
    };
    size_t pos = 0;
    std::string range, perms, off, dev, ino;
    if (!token(line, &pos, &range) || !token(line, &pos, &perms) || !token(line, &pos, &off) ||
        !token(line, &pos, &dev) || !token(line, &pos, &ino))
      bad("too few fields");
    size_t dash = range.find('-');
    uint64_t start, end, pgoff, maj, min;
    if (!parse_hex_strict(range.substr(0, dash), &start) || !parse_hex_strict(range.substr(dash + 1), &end) ||
        end < start)
      bad("bad address range");
    if (perms.size() != 4) bad("bad permissions");
    if (!parse_hex_strict(off, &pgoff)) bad("bad offset");
    size_t colon = dev.find(':');
    if (colon == std::string::npos || !parse_hex_strict(dev.substr(0, colon), &maj) ||
        !parse_hex_strict(dev.substr(colon + 1), &min))
      bad("bad device");
    char* e = nullptr;
    unsigned long long inode = std::strtoull(ino.c_str(), &e, 10);
    if (*e) bad("bad inode");
    size_t pb_ = line.find_first_not_of(' ', pos);
    std::string path = pb_ == std::string::npos ? "" : line.substr(pb_);

    pb::Vma v;
    v.set_start(start);
    v.set_end(end);
    uint32_t prot = 0;
    if (perms[0] == 'r') prot |= PROT_READ;
    if (perms[1] == 'w') prot |= PROT_WRITE;
    if (perms[2] == 'x') prot |= PROT_EXEC;
    v.set_prot(prot);
    bool shared = perms[3] == 's';
    v.set_flags(shared ? MAP_SHARED : MAP_PRIVATE);
    v.set_pgoff(pgoff);
    v.set_dev(makedev(static_cast<unsigned>(maj), static_cast<unsigned>(min)));
    v.set_ino(inode);
    v.set_path(path);
    v.set_kind(vma_kind(path, shared));
    out.push_back(std::move(v));
  }
  return out;
}

std::string map_files_path(pid_t pid, const pb::Vma& v) {
  return strf("/proc/%d/map_files/%lx-%lx", pid, static_cast<unsigned long>(v.start()),
              static_cast<unsigned long>(v.end()));
}

std::vector<pb::Vma> read_vmas(pid_t pid) {
  std::string path = strf("/proc/%d/smaps", pid);
  std::string text;
  if (!try_read_file(path, &text)) {
    int err = errno;
    if (err == ENOENT || err == ESRCH) fail(strf("pid %d: no such process", pid));
    throw_errno("unable to read '" + path + "'", err);
  }
  // A zombie (or a kernel thread) has an empty smaps.
  std::vector<pb::Vma> vmas = parse_maps(text, path);
  for (auto& v : vmas) {
    if (v.ino() == 0 || v.kind() == pb::VMA_SHARED_ANON || v.kind() == pb::VMA_SYSV_SHM) continue;
    struct stat st;
    std::string mf = map_files_path(pid, v);
    bool ok = ::stat(mf.c_str(), &st) == 0;
    if (!ok) {
      // Fall back to the path itself (not for "(deleted)" ones: another file may be there now).
      const std::string& p = v.path();
      bool deleted = p.size() > 10 && p.compare(p.size() - 10, 10, " (deleted)") == 0;
      ok = !deleted && !p.empty() && p[0] == '/' && ::stat(p.c_str(), &st) == 0 && st.st_ino == v.ino();
    }
    if (ok) {
      v.set_file_size(static_cast<uint64_t>(st.st_size));
      v.set_file_mtime_ns(static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec);
    } else {
      LOG_DEBUG("pid %d: no stat for mapping %s of '%s'", pid, mf.c_str(), v.path().c_str());
    }
  }
  return vmas;
}

std::string format_vma(const pb::Vma& v) {
  char perms[5] = {v.prot() & PROT_READ ? 'r' : '-', v.prot() & PROT_WRITE ? 'w' : '-',
                   v.prot() & PROT_EXEC ? 'x' : '-', v.flags() & MAP_SHARED ? 's' : 'p', 0};
  std::string s = strf("%08lx-%08lx %s %08lx %02x:%02x %lu", static_cast<unsigned long>(v.start()),
                       static_cast<unsigned long>(v.end()), perms, static_cast<unsigned long>(v.pgoff()),
                       major(v.dev()), minor(v.dev()), static_cast<unsigned long>(v.ino()));
  if (!v.path().empty()) s += " " + v.path();
  return s;
}

}  // namespace ck
