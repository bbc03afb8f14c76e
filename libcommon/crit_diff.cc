// diff: what differs between two images, record by record (tasks,
// threads, registers, fds and their descriptions, VMAs, sockets, cgroups)
// and page by page, leaving out what always moves between two dumps of an
// idle process (the default ignores, kDefaults below).
//
// Records are matched by what names them (a process by pid, a thread by
// tid, an fd by pid and number, a description by id, a VMA by pid and start,
// a socket by description, a cgroup by path) and compared field by field
// through protobuf reflection, so a field added to ck.proto is compared
// without a change here.  Kernel object identities (inode numbers, pipe
// ids, shared memory ids, netns cookies, and the number in "pipe:[N]")
// are compared as a renaming: equal when both images share objects in the
// same way, whatever the numbers (a restore makes new pipes).
//
// Pages: each image is read once; every page is hashed (ck64) as it
// passes, the hashes kept (16 bytes a page: 4 MiB per GiB), then the two
// lists are walked in address order and the differing pages printed as
// ranges.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/reflection.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "ck64.h"
#include "crit.h"
#include "error.h"
#include "fd.h"
#include "stream.h"

namespace crit {

namespace pb = ck::pb;
namespace gp = google::protobuf;
using ck::strf;

namespace {

struct Ignore {
  const char* name;
  const char* why;
};
const Ignore kDefaults[] = {
    {"Header.created_ns", "the time of the dump"},
    {"Header.writers", "which tools wrote it (a stream and an image of one dump say the same)"},
    {"ITimer.value_us", "time left on an interval timer"},
    {"PosixTimer.value_ns", "time left on a POSIX timer"},
    {"PosixTimer.overrun", "a counter of missed expirations"},
    {"FileDesc.timer_value_ns", "time left on a timerfd"},
    {"FileDesc.timer_ticks", "a counter of timerfd expirations"},
    {"FileDesc.mtime_ns", "a file's modification time"},
    {"FileDesc.atime_ns", "a file's access time"},
    {"Vma.file_mtime_ns", "a mapped file's modification time"},
    {"TcpState.timestamp", "the connection's timestamp clock"},
    {"rseq", "the cpu_id_start, cpu_id, node_id and mm_cid fields of each thread's struct rseq in memory, "
             "which the kernel rewrites whenever the task runs"},
};

// Pseudo fields: what --ignore also takes besides Message.field.
//   pages          page contents (layouts are still compared, in MemLayout)
//   registers      Thread.gpregs and Thread.xsave
//   rseq           as above
//   root-ppid      the root process's parent (whoever restored it)
//   Message.field:TOKEN  one space-separated word of a string field
//                  (Vma.vmflags:ac)

struct Ids {  // a renaming between A's numbers and B's
  std::map<uint64_t, uint64_t> ab, ba;
  bool same(uint64_t a, uint64_t b) {
    if (!a || !b) return a == b;
    auto i = ab.find(a), j = ba.find(b);
    if (i == ab.end() && j == ba.end()) {
      ab[a] = b;
      ba[b] = a;
      return true;
    }
    return i != ab.end() && i->second == b && j != ba.end() && j->second == a;
  }
};

// One page as an image holds it.
struct Page {
  uint64_t addr;  // address, or offset into a shared object or file
  uint64_t hash;  // 0: a zero run
};
// Pages by space: (0, pid) private memory, (1, shmid) a shared object,
// (2, FileDesc id) the contents of a deleted file or memfd.
using Space = std::pair<int, uint64_t>;

struct Side {
  std::string name;
  Model m;
  std::map<Space, std::vector<Page>> pages;
};

class Differ {
 public:
  Differ(const DiffOptions& o) : o_(o) {
    if (!o.no_default_ignores)
      for (const auto& d : kDefaults) ignore_.insert(d.name);
    for (const auto& i : o.ignore) {
      auto colon = i.find(':');
      if (colon != std::string::npos) {
        tokens_[i.substr(0, colon)].insert(i.substr(colon + 1));
        continue;
      }
      if (i == "registers") {
        ignore_.insert("Thread.gpregs");
        ignore_.insert("Thread.xsave");
        continue;
      }
      if (i != "pages" && i != "rseq" && i != "root-ppid" && i.find('.') == std::string::npos)
        ck::usage_error("--ignore '" + i + "': want Message.field (Thread.gpregs), Message.field:WORD, pages, registers, rseq or root-ppid");
      if (i.find('.') != std::string::npos && !known(i)) ck::usage_error("--ignore '" + i + "': no such field in ck.proto");
      ignore_.insert(i);
    }
  }
  bool ignored(const std::string& n) const { return ignore_.count(n) > 0; }

  void load_side(Side& s, Source& src);
  void compare(Side& a, Side& b);
  int differences() const { return n_; }

 private:
  static bool known(const std::string& f) {
    auto dot = f.find('.');
    const auto* d = gp::DescriptorPool::generated_pool()->FindMessageTypeByName("ck.pb." + f.substr(0, dot));
    return d && d->FindFieldByName(f.substr(dot + 1));
  }
  void say(const std::string& s) {
    ++n_;
    if (o_.max_lines && n_ > o_.max_lines) return;
    std::string l = s + "\n";
    ck::write_full(1, l.data(), l.size());
  }
  void messages(const std::string& where, const gp::Message& a, const gp::Message& b);
  bool field_same(const gp::FieldDescriptor* f, const gp::Message& a, const gp::Message& b, int i, std::string* va, std::string* vb);
  void pages(const std::string& where, const std::vector<Page>& a, const std::vector<Page>& b);

  const DiffOptions& o_;
  std::set<std::string> ignore_;
  std::map<std::string, std::set<std::string>> tokens_;
  Ids ino_, shm_, netns_;
  int n_ = 0;
};

// ---- reading ----------------------------------------------------------------

void Differ::load_side(Side& s, Source& src) {
  bool mask_rseq = ignored("rseq"), want_pages = !ignored("pages");
  // Each pid's rseq areas (threads come before pages in a stream).
  std::map<uint32_t, std::vector<uint64_t>> rseq;
  std::vector<char> buf, page(ck::kPageSize);
  auto hook = [&](const pb::Frame& f, Source& in) {
    if (!want_pages) return;
    const auto& p = f.pages();
    uint32_t pid = p.pid() ? p.pid() : f.pid();
    Space sp = p.file() ? Space{2, p.file()} : p.shmid() ? Space{1, p.shmid()} : Space{0, pid};
    auto& v = s.pages[sp];
    const std::vector<uint64_t>* rs = nullptr;
    if (mask_rseq && sp.first == 0) {
      auto it = rseq.find(pid);
      if (it != rseq.end()) rs = &it->second;
    }
    if (buf.empty()) buf.resize(1 << 20);
    uint64_t at = p.addr();
    while (in.payload_left()) {
      size_t n = std::min<uint64_t>(in.payload_left(), buf.size());
      in.read_payload(buf.data(), n);
      for (size_t o = 0; o < n; o += ck::kPageSize, at += ck::kPageSize) {
        const char* pg = buf.data() + o;
        if (rs) {
          for (uint64_t r : *rs) {
            if (r + 32 <= at || r >= at + ck::kPageSize) continue;
            if (pg != page.data()) std::memcpy(page.data(), pg, ck::kPageSize), pg = page.data();
            // cpu_id_start, cpu_id (bytes 0-7), node_id, mm_cid (20-27)
            for (uint64_t k : {0, 1, 2, 3, 4, 5, 6, 7, 20, 21, 22, 23, 24, 25, 26, 27})
              if (r + k >= at && r + k < at + ck::kPageSize) page[r + k - at] = 0;
          }
        }
        uint64_t h = ck::ck64(pg, ck::kPageSize);
        v.push_back({at, h ? h : 1});
      }
    }
  };
  // The hook sees a run before load() has its threads only if the stream
  // puts pages first; collect rseq areas from thread frames as they pass.
  class Tap : public Source {
   public:
    Tap(Source& s, std::map<uint32_t, std::vector<uint64_t>>& r) : s_(s), r_(r) {}
    bool next(pb::Frame* f) override {
      bool ok = s_.next(f);
      if (ok && f->has_thread() && f->thread().rseq_abi()) r_[f->thread().pid()].push_back(f->thread().rseq_abi());
      return ok;
    }
    const std::string& raw() const override { return s_.raw(); }
    uint64_t payload_left() const override { return s_.payload_left(); }
    void read_payload(void* d, size_t n) override { s_.read_payload(d, n); }
    const pb::Trailer& trailer() const override { return s_.trailer(); }
    void verify() override { s_.verify(); }

   private:
    Source& s_;
    std::map<uint32_t, std::vector<uint64_t>>& r_;
  } tap(src, rseq);
  s.m = load(tap, hook);
  // Zero runs: a hash of 0.
  if (want_pages) {
    auto zeros = [&](Space sp, const Run& r) {
      auto& v = s.pages[sp];
      for (uint64_t i = 0; i < r.npages; ++i) v.push_back({r.addr + i * ck::kPageSize, 0});
    };
    for (const auto& [pid, t] : s.m.tasks)
      for (const Run& r : t.runs)
        if (!r.data) zeros({0, pid}, r);
    for (const auto& [id, runs] : s.m.shared)
      for (const Run& r : runs)
        if (!r.data) zeros({1, id}, r);
    // (file runs without payload are not in the model: holes and zero runs of files read alike)
    for (auto& [sp, v] : s.pages)  // stable: where runs overlap, the later one wins
      std::stable_sort(v.begin(), v.end(), [](const Page& x, const Page& y) { return x.addr < y.addr; });
  }
}

// ---- records ----------------------------------------------------------------

std::string value_str(const gp::Message& m, const gp::FieldDescriptor* f, int i) {
  const auto* r = m.GetReflection();
  bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case gp::FieldDescriptor::CPPTYPE_INT32: return std::to_string(rep ? r->GetRepeatedInt32(m, f, i) : r->GetInt32(m, f));
    case gp::FieldDescriptor::CPPTYPE_INT64: return std::to_string(rep ? r->GetRepeatedInt64(m, f, i) : r->GetInt64(m, f));
    case gp::FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v = rep ? r->GetRepeatedUInt32(m, f, i) : r->GetUInt32(m, f);
      return v > 9 ? strf("%u (%#x)", v, v) : std::to_string(v);
    }
    case gp::FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v = rep ? r->GetRepeatedUInt64(m, f, i) : r->GetUInt64(m, f);
      return v > 9 ? strf("%" PRIu64 " (%#" PRIx64 ")", v, v) : std::to_string(v);
    }
    case gp::FieldDescriptor::CPPTYPE_BOOL: return (rep ? r->GetRepeatedBool(m, f, i) : r->GetBool(m, f)) ? "true" : "false";
    case gp::FieldDescriptor::CPPTYPE_ENUM: return (rep ? r->GetRepeatedEnum(m, f, i) : r->GetEnum(m, f))->name();
    case gp::FieldDescriptor::CPPTYPE_STRING: {
      std::string s = rep ? r->GetRepeatedString(m, f, i) : r->GetString(m, f);
      if (f->type() == gp::FieldDescriptor::TYPE_BYTES) return strf("%zu bytes", s.size());
      return "'" + s.substr(0, 200) + "'";
    }
    default: return "?";
  }
}

// "pipe:[123]" -> ("pipe:[", 123); anything else: (s, 0).
std::pair<std::string, uint64_t> split_id(const std::string& s) {
  auto o = s.find(":[");
  if (o == std::string::npos || s.back() != ']' || o + 3 > s.size()) return {s, 0};
  std::string num = s.substr(o + 2, s.size() - o - 3);
  if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) return {s, 0};
  return {s.substr(0, o + 2), std::strtoull(num.c_str(), nullptr, 10)};
}

std::set<std::string> words(const std::string& s, const std::set<std::string>& drop) {
  std::set<std::string> w;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(' ', i);
    if (j == std::string::npos) j = s.size();
    if (j > i && !drop.count(s.substr(i, j - i))) w.insert(s.substr(i, j - i));
    i = j + 1;
  }
  return w;
}

bool Differ::field_same(const gp::FieldDescriptor* f, const gp::Message& a, const gp::Message& b, int i,
                        std::string* va, std::string* vb) {
  const std::string name = f->containing_type()->name() + "." + f->name();
  const auto* ra = a.GetReflection();
  const auto* rb = b.GetReflection();
  bool rep = f->is_repeated();
  *va = value_str(a, f, i);
  *vb = value_str(b, f, i);
  Ids* ids = nullptr;
  static const std::set<std::string> kIno = {"FileDesc.ino", "FileDesc.pipe_id", "Vma.ino", "UnixSock.ino",
                                             "UnixSock.peer_ino", "UnixSock.icons", "UnixMsg.from_ino"};
  if (kIno.count(name)) ids = &ino_;
  else if (name == "Vma.shmid" || name == "PageRun.shmid") ids = &shm_;
  else if (name == "Socket.netns" || name == "NetLock.netns") ids = &netns_;
  if (ids) {
    uint64_t x = rep ? ra->GetRepeatedUInt64(a, f, i) : ra->GetUInt64(a, f);
    uint64_t y = rep ? rb->GetRepeatedUInt64(b, f, i) : rb->GetUInt64(b, f);
    return ids->same(x, y);
  }
  if (f->cpp_type() == gp::FieldDescriptor::CPPTYPE_STRING) {
    std::string x = rep ? ra->GetRepeatedString(a, f, i) : ra->GetString(a, f);
    std::string y = rep ? rb->GetRepeatedString(b, f, i) : rb->GetString(b, f);
    if (x == y) return true;
    auto t = tokens_.find(name);
    if (t != tokens_.end()) return words(x, t->second) == words(y, t->second);
    if (name == "FileDesc.path" || name == "Vma.path") {
      auto px = split_id(x), py = split_id(y);
      return px.second && py.second && px.first == py.first && ino_.same(px.second, py.second);
    }
    return false;
  }
  return *va == *vb;
}

// What differs between two byte strings: registers by name for gpregs,
// else the sizes and the first differing byte.
std::string bytes_diff(const std::string& name, const std::string& x, const std::string& y) {
  static const char* const kRegs[] = {"r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
                                      "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp",
                                      "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs"};
  if (name == "Thread.gpregs" && x.size() == y.size() && x.size() == sizeof kRegs / sizeof *kRegs * 8) {
    std::string s;
    for (size_t i = 0; i < x.size() / 8; ++i) {
      uint64_t a, b;
      std::memcpy(&a, x.data() + 8 * i, 8);
      std::memcpy(&b, y.data() + 8 * i, 8);
      if (a != b) s += strf("%s%s %#" PRIx64 " -> %#" PRIx64, s.empty() ? "" : ", ", kRegs[i], a, b);
    }
    return s;
  }
  size_t i = 0;
  while (i < x.size() && i < y.size() && x[i] == y[i]) ++i;
  return strf("%zu bytes -> %zu bytes, first difference at byte %zu", x.size(), y.size(), i);
}

void Differ::messages(const std::string& where, const gp::Message& a, const gp::Message& b) {
  const auto* d = a.GetDescriptor();
  const auto* ra = a.GetReflection();
  const auto* rb = b.GetReflection();
  for (int k = 0; k < d->field_count(); ++k) {
    const auto* f = d->field(k);
    std::string name = d->name() + "." + f->name();
    if (ignored(name)) continue;
    if (f->cpp_type() == gp::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (!f->is_repeated()) {
        if (ra->HasField(a, f) || rb->HasField(b, f)) messages(where + " " + f->name(), ra->GetMessage(a, f), rb->GetMessage(b, f));
        continue;
      }
      int na = ra->FieldSize(a, f), nb = rb->FieldSize(b, f);
      if (na != nb) say(strf("%s: %s: %d entries -> %d", where.c_str(), f->name().c_str(), na, nb));
      // Sets whose order means nothing: in the order of their bytes.
      std::vector<const gp::Message*> xa, xb;
      for (int i = 0; i < na; ++i) xa.push_back(&ra->GetRepeatedMessage(a, f, i));
      for (int i = 0; i < nb; ++i) xb.push_back(&rb->GetRepeatedMessage(b, f, i));
      if (f->is_map() || name == "FileDesc.epoll" || name == "FileDesc.watches" || name == "FileDesc.locks") {
        auto by_bytes = [](const gp::Message* x, const gp::Message* y) { return x->SerializeAsString() < y->SerializeAsString(); };
        std::sort(xa.begin(), xa.end(), by_bytes);
        std::sort(xb.begin(), xb.end(), by_bytes);
      }
      for (int i = 0; i < std::min(na, nb); ++i) messages(strf("%s %s[%d]", where.c_str(), f->name().c_str(), i), *xa[i], *xb[i]);
      continue;
    }
    std::string va, vb;
    if (!f->is_repeated()) {
      if (field_same(f, a, b, 0, &va, &vb)) continue;
      if (f->type() == gp::FieldDescriptor::TYPE_BYTES)
        say(strf("%s: %s: %s", where.c_str(), f->name().c_str(), bytes_diff(name, ra->GetString(a, f), rb->GetString(b, f)).c_str()));
      else
        say(strf("%s: %s: %s -> %s", where.c_str(), f->name().c_str(), va.c_str(), vb.c_str()));
      continue;
    }
    int na = ra->FieldSize(a, f), nb = rb->FieldSize(b, f);
    if (na != nb) {
      say(strf("%s: %s: %d entries -> %d", where.c_str(), f->name().c_str(), na, nb));
      continue;
    }
    for (int i = 0; i < na; ++i)
      if (!field_same(f, a, b, i, &va, &vb))
        say(strf("%s: %s[%d]: %s -> %s", where.c_str(), f->name().c_str(), i, va.c_str(), vb.c_str()));
  }
}

// Compares two keyed sets of records.
template <class K, class M, class Name>
void keyed(Differ* d, const std::map<K, const M*>& a, const std::map<K, const M*>& b, Name name,
           const std::function<void(const std::string&, const M&, const M&)>& cmp,
           const std::function<void(const std::string&)>& say) {
  for (const auto& [k, x] : a) {
    auto it = b.find(k);
    if (it == b.end()) say(name(k) + ": only in A");
    else cmp(name(k), *x, *it->second);
  }
  for (const auto& [k, y] : b)
    if (!a.count(k)) say(name(k) + ": only in B");
}

std::string range_str(uint64_t lo, uint64_t hi) {
  return strf("%#" PRIx64 "-%#" PRIx64 " (%" PRIu64 " pages)", lo, hi, (hi - lo) / ck::kPageSize);
}

void Differ::pages(const std::string& where, const std::vector<Page>& a, const std::vector<Page>& b) {
  // Last run wins where runs overlap: keep the last entry of each address.
  auto state = [](const std::vector<Page>& v, size_t& i) -> std::pair<uint64_t, uint64_t> {
    uint64_t addr = v[i].addr;
    while (i + 1 < v.size() && v[i + 1].addr == addr) ++i;
    return {addr, v[i++].hash};
  };
  size_t i = 0, j = 0;
  // The open range of differing pages: [lo, hi) of one kind of difference.
  uint64_t lo = 0, hi = 0;
  std::string what;
  auto flush = [&]() {
    if (!what.empty()) say(where + " " + range_str(lo, hi) + ": " + what);
    what.clear();
  };
  auto differ = [&](uint64_t addr, const std::string& w) {
    if (!what.empty() && (addr != hi || w != what)) flush();
    if (what.empty()) lo = addr, what = w;
    hi = addr + ck::kPageSize;
  };
  auto kind = [](uint64_t h) { return h ? "data" : "zero"; };
  while (i < a.size() || j < b.size()) {
    if (j >= b.size() || (i < a.size() && a[i].addr < b[j].addr)) {
      auto [addr, h] = state(a, i);
      differ(addr, std::string("only in A (") + kind(h) + ")");
    } else if (i >= a.size() || b[j].addr < a[i].addr) {
      auto [addr, h] = state(b, j);
      differ(addr, std::string("only in B (") + kind(h) + ")");
    } else {
      auto [addr, x] = state(a, i);
      auto [addr2, y] = state(b, j);
      (void)addr2;
      if (x == y) continue;
      if (!x || !y) differ(addr, std::string(kind(x)) + " in A, " + kind(y) + " in B");
      else differ(addr, "contents differ");
    }
  }
  flush();
}

void Differ::compare(Side& A, Side& B) {
  const Model &a = A.m, &b = B.m;
  auto sayf = [this](const std::string& s) { say(s); };
  messages("header", a.header, b.header);
  // processes, threads, fds, layouts
  std::map<uint32_t, const pb::Process*> pa, pb_;
  std::map<uint32_t, const pb::Thread*> ta, tb;
  std::map<std::pair<uint32_t, int>, const pb::Fd*> fa, fb;
  std::map<std::pair<uint32_t, uint64_t>, const pb::Vma*> va, vb;
  auto index = [](const Model& m, auto& p, auto& t, auto& f, auto& v) {
    for (const auto& [pid, k] : m.tasks) {
      if (k.has_process) p[pid] = &k.proc;
      for (const auto& th : k.threads) t[th.tid()] = &th;
      for (const auto& fd : k.fds) f[{pid, fd.fd()}] = &fd;
      for (const auto& vm : k.vmas) v[{pid, vm.start()}] = &vm;
    }
  };
  index(a, pa, ta, fa, va);
  index(b, pb_, tb, fb, vb);
  bool root_ppid = ignored("root-ppid");
  keyed<uint32_t, pb::Process>(this, pa, pb_, [](uint32_t p) { return strf("process %u", p); },
      [&](const std::string& w, const pb::Process& x, const pb::Process& y) {
        if (root_ppid && x.pid() == a.header.root_pid() && x.ppid() != y.ppid()) {
          pb::Process y2 = y;
          y2.set_ppid(x.ppid());
          messages(w, x, y2);
          return;
        }
        messages(w, x, y);
      }, sayf);
  keyed<uint32_t, pb::Thread>(this, ta, tb, [](uint32_t t) { return strf("thread %u", t); },
      [&](const std::string& w, const pb::Thread& x, const pb::Thread& y) { messages(w, x, y); }, sayf);
  keyed<std::pair<uint32_t, int>, pb::Fd>(this, fa, fb, [](std::pair<uint32_t, int> k) { return strf("process %u fd %d", k.first, k.second); },
      [&](const std::string& w, const pb::Fd& x, const pb::Fd& y) { messages(w, x, y); }, sayf);
  std::map<uint32_t, const pb::FileDesc*> da, db;
  for (const auto& [id, d] : a.files) da[id] = &d;
  for (const auto& [id, d] : b.files) db[id] = &d;
  keyed<uint32_t, pb::FileDesc>(this, da, db, [](uint32_t id) { return strf("file %u", id); },
      [&](const std::string& w, const pb::FileDesc& x, const pb::FileDesc& y) { messages(w, x, y); }, sayf);
  keyed<std::pair<uint32_t, uint64_t>, pb::Vma>(this, va, vb,
      [](std::pair<uint32_t, uint64_t> k) { return strf("process %u vma %#" PRIx64, k.first, k.second); },
      [&](const std::string& w, const pb::Vma& x, const pb::Vma& y) { messages(w, x, y); }, sayf);
  std::map<uint32_t, const pb::Socket*> sa, sb;
  for (const auto& [id, s] : a.socks) sa[id] = &s;
  for (const auto& [id, s] : b.socks) sb[id] = &s;
  keyed<uint32_t, pb::Socket>(this, sa, sb, [](uint32_t id) { return strf("socket %u", id); },
      [&](const std::string& w, const pb::Socket& x, const pb::Socket& y) { messages(w, x, y); }, sayf);
  std::map<std::string, const pb::Cgroup*> ca, cb;
  for (const auto& c : a.cgroups) ca[c.path()] = &c;
  for (const auto& c : b.cgroups) cb[c.path()] = &c;
  keyed<std::string, pb::Cgroup>(this, ca, cb, [](const std::string& p) { return "cgroup " + p; },
      [&](const std::string& w, const pb::Cgroup& x, const pb::Cgroup& y) { messages(w, x, y); }, sayf);
  std::map<size_t, const pb::Note*> na, nb;
  for (size_t i = 0; i < a.notes.size(); ++i) na[i] = &a.notes[i];
  for (size_t i = 0; i < b.notes.size(); ++i) nb[i] = &b.notes[i];
  keyed<size_t, pb::Note>(this, na, nb, [](size_t i) { return strf("note %zu", i); },
      [&](const std::string& w, const pb::Note& x, const pb::Note& y) { messages(w, x, y); }, sayf);
  std::map<size_t, const pb::NetLock*> la, lb;
  for (size_t i = 0; i < a.locks.size(); ++i) la[i] = &a.locks[i];
  for (size_t i = 0; i < b.locks.size(); ++i) lb[i] = &b.locks[i];
  keyed<size_t, pb::NetLock>(this, la, lb, [](size_t i) { return strf("network lock %zu", i); },
      [&](const std::string& w, const pb::NetLock& x, const pb::NetLock& y) { messages(w, x, y); }, sayf);
  if (a.unknown != b.unknown) say(strf("frames of unknown kinds: %" PRIu64 " -> %" PRIu64, a.unknown, b.unknown));
  if (ignored("pages")) return;
  // Page contents, space by space; shared objects through the renaming of
  // their ids that the VMAs made.
  static const std::vector<Page> kNone;
  auto get = [](const Side& s, Space sp) -> const std::vector<Page>& {
    auto it = s.pages.find(sp);
    return it == s.pages.end() ? kNone : it->second;
  };
  auto where = [](Space sp) {
    switch (sp.first) {
      case 0: return strf("process %" PRIu64 " memory", sp.second);
      case 1: return strf("shared object %#" PRIx64, sp.second);
      default: return strf("file %" PRIu64 " contents", sp.second);
    }
  };
  std::set<Space> done;
  for (const auto& [sp, v] : A.pages) {
    Space other = sp;
    if (sp.first == 1) {
      auto it = shm_.ab.find(sp.second);
      if (it != shm_.ab.end()) other.second = it->second;
    }
    done.insert(other);
    pages(where(sp), v, get(B, other));
  }
  for (const auto& [sp, v] : B.pages)
    if (!done.count(sp)) pages(where(sp), kNone, v);
}

}  // namespace

std::string diff_default_ignores() {
  std::string s;
  for (const auto& d : kDefaults) s += strf("%-24s %s\n", d.name, d.why);
  return s;
}

int diff(const std::string& a, const std::string& b, const DiffOptions& o) {
  if ((a.empty() || a == "-") && (b.empty() || b == "-")) ck::usage_error("diff: only one of A and B can be the stream on stdin");
  Differ d(o);
  Side A, B;
  A.name = a;
  B.name = b;
  {
    auto s = open_source(a);
    d.load_side(A, *s);
  }
  {
    auto s = open_source(b);
    d.load_side(B, *s);
  }
  d.compare(A, B);
  if (o.max_lines && d.differences() > o.max_lines)
    std::printf("... %d more differences\n", d.differences() - o.max_lines);
  return d.differences() ? 1 : 0;
}

}  // namespace crit
