// mem, args, env and the byte gathering behind them and sum: a range of a
// process's memory as the image holds it, in one pass over the source.
#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cstdio>

#include "crit.h"
#include "error.h"
#include "fd.h"
#include "stream.h"

namespace crit {

namespace pb = ck::pb;
using ck::strf;

Bytes read_bytes(Source& s, uint32_t pid, Range range, uint64_t addr, uint64_t len) {
  Bytes b;
  b.pid = pid;
  bool seen = false, placed = range == Range::kGiven;
  auto place = [&](uint64_t a, uint64_t l) {
    if (l > kMaxBytes) ck::fail(strf("pid %u: a range of %" PRIu64 " bytes is more than ck-crit reads at once (%" PRIu64 ")", pid, l, kMaxBytes));
    if (a + l < a) ck::usage_error("the range wraps around");
    b.addr = a;
    b.len = l;
    b.data.assign(l, '\0');
    b.have.assign(l, false);
    placed = true;
  };
  if (range == Range::kGiven) place(addr, len);
  std::vector<pb::Vma> vmas;
  std::vector<char> chunk;
  pb::Frame f;
  // Where the bytes [from, from + len) of a run land in the process.
  struct Place {
    uint64_t from, len, at;
  };
  std::vector<Place> places, hit;
  while (s.next(&f)) {
    if (f.has_header() && b.pid == 0) b.pid = pid = f.header().root_pid();
    if (f.pid() == pid && pid) seen = true;
    if (f.has_process() && f.process().pid() == pid) {
      b.proc = f.process();
      if (range == Range::kArgs) place(b.proc.arg_start(), b.proc.arg_end() - std::min(b.proc.arg_end(), b.proc.arg_start()));
      if (range == Range::kEnv) place(b.proc.env_start(), b.proc.env_end() - std::min(b.proc.env_end(), b.proc.env_start()));
    }
    if (f.has_mm() && f.mm().pid() == pid) vmas.assign(f.mm().vmas().begin(), f.mm().vmas().end());
    if (!f.has_pages() || !placed) continue;
    const auto& p = f.pages();
    if (p.file() || ((p.pid() ? p.pid() : f.pid()) != pid && p.shmid() == 0)) continue;
    uint64_t rlen = uint64_t{p.npages()} * ck::kPageSize;
    places.clear();
    if (p.shmid() == 0) {
      places.push_back({0, rlen, p.addr()});
    } else {
      // addr is an offset into the shared object; map it through this
      // process's VMAs of that object (those seen so far).
      for (const auto& v : vmas) {
        if (v.shmid() != p.shmid()) continue;
        uint64_t lo = std::max(p.addr(), v.pgoff());
        uint64_t hi = std::min(p.addr() + rlen, v.pgoff() + (v.end() - v.start()));
        if (lo < hi) places.push_back({lo - p.addr(), hi - lo, v.start() + (lo - v.pgoff())});
      }
    }
    // Keep only the parts inside [addr, addr + len).
    hit.clear();
    for (const auto& pl : places) {
      uint64_t lo = std::max(pl.at, b.addr), hi = std::min(pl.at + pl.len, b.addr + b.len);
      if (lo < hi) hit.push_back({pl.from + (lo - pl.at), hi - lo, lo});
    }
    if (hit.empty()) continue;
    for (const auto& h : hit) std::fill_n(b.have.begin() + (h.at - b.addr), h.len, true);
    if (!p.has_payload()) {
      for (const auto& h : hit) std::fill_n(b.data.begin() + (h.at - b.addr), h.len, '\0');
      continue;
    }
    if (chunk.empty()) chunk.resize(1 << 20);
    uint64_t done = 0;
    while (s.payload_left()) {
      size_t n = std::min<uint64_t>(s.payload_left(), chunk.size());
      s.read_payload(chunk.data(), n);
      for (const auto& h : hit) {
        uint64_t lo = std::max(h.from, done), hi = std::min(h.from + h.len, done + n);
        if (lo < hi) std::copy_n(chunk.data() + (lo - done), hi - lo, b.data.begin() + (h.at + (lo - h.from) - b.addr));
      }
      done += n;
    }
  }
  s.verify();
  if (!seen) ck::fail(strf("pid %u is not in the image", pid));
  if (!placed) ck::fail(strf("pid %u has no process frame in the image (a zombie, or a stream without ck-freeze)", pid));
  return b;
}

namespace {

void out(const std::string& s) { ck::write_full(1, s.data(), s.size()); }

// Bytes no run covers: a line says so instead of printing zeros.
std::string hexdump(const Bytes& b) {
  std::string o;
  for (uint64_t i = 0; i < b.len;) {
    if (!b.have[i]) {
      uint64_t j = i;
      while (j < b.len && !b.have[j]) ++j;
      o += strf("%012" PRIx64 "  -- %" PRIu64 " bytes not in the image (no page run: never touched, or file-backed and unwritten)\n",
                b.addr + i, j - i);
      i = j;
      continue;
    }
    uint64_t n = std::min<uint64_t>(16, b.len - i);
    for (uint64_t k = 0; k < n; ++k)
      if (!b.have[i + k]) n = k;
    o += strf("%012" PRIx64 " ", b.addr + i);
    std::string text;
    for (uint64_t k = 0; k < 16; ++k) {
      if (k == 8) o += ' ';
      if (k < n) {
        unsigned char c = static_cast<unsigned char>(b.data[i + k]);
        o += strf(" %02x", c);
        text += std::isprint(c) ? static_cast<char>(c) : '.';
      } else {
        o += "   ";
      }
    }
    o += "  |" + text + "|\n";
    i += n;
    if (o.size() > (1 << 20)) {
      out(o);
      o.clear();
    }
  }
  return o;
}

}  // namespace

int mem(Source& s, uint32_t pid, uint64_t addr, uint64_t len, bool raw) {
  Bytes b = read_bytes(s, pid, Range::kGiven, addr, len);
  if (raw) {
    if (isatty(1)) ck::usage_error("refusing to write raw memory to a terminal (drop --raw for a hexdump)");
    out(b.data);
  } else {
    out(hexdump(b));
  }
  return 0;
}

int args(Source& s, uint32_t pid, bool env, bool nul) {
  Bytes b = read_bytes(s, pid, env ? Range::kEnv : Range::kArgs);
  const char* what = env ? "environment" : "argv";
  if (b.len == 0) ck::fail(strf("pid %u: its %s range is empty in the image", b.pid, what));
  auto gap = std::find(b.have.begin(), b.have.end(), false);
  if (gap != b.have.end())
    ck::fail(strf("pid %u: its %s (%#" PRIx64 "-%#" PRIx64 ") is not all in the image's pages: nothing at %#" PRIx64,
                  b.pid, what, b.addr, b.addr + b.len, b.addr + (gap - b.have.begin())));
  std::string o = b.data;
  // As the kernel shows /proc/PID/cmdline: up to the last NUL of the range.
  size_t last = o.find_last_of('\0');
  if (last != std::string::npos) o.resize(last + 1);
  else o += '\0';
  if (!nul) std::replace(o.begin(), o.end(), '\0', '\n');
  out(o);
  return 0;
}

}  // namespace crit
