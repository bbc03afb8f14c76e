// show --json: every frame for people and jq, through protobuf reflection
// (so fields added to ck.proto appear without a change here): addresses,
// flags and masks as "0x..." strings, modes in octal, registers by name,
// argv and environment as lists of strings, small byte fields in hex,
// large ones by size; page payloads are left out.  decode stays the
// complete, round-trippable form.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/reflection.h>

#include <cinttypes>
#include <cstring>
#include <set>

#include "crit.h"
#include "crit_out.h"
#include "error.h"
#include "fd.h"

namespace crit {

namespace pb = ck::pb;
namespace gp = google::protobuf;
using ck::strf;

namespace {

// Fields shown in hex (CRIU marks such fields in its .proto files; ck
// keeps the list here so that ck.proto stays plain).
const std::set<std::string> kHex = {
    "addr", "start", "end", "pgoff", "flags", "prot", "blocked", "mask", "handler", "restorer", "shmid", "digest",
    "netns", "sigval", "rseq_abi", "rseq_sig", "clear_child_tid", "robust_list", "altstack_sp", "start_code",
    "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack", "arg_start", "arg_end", "env_start",
    "env_end", "personality", "events", "signalfd_mask", "eventfd_flags", "map_start", "cap_inh", "cap_prm",
    "cap_eff", "cap_bnd", "cap_amb", "securebits", "seals", "checksum", "dump", "exe_dev", "dev", "rdev", "tty_nr",
    "child_subreaper"};
const std::set<std::string> kOctal = {"mode", "umask", "name_mode"};

const char* const kRegs[] = {"r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
                             "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp",
                             "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs"};

std::string hexbytes(const std::string& s) {
  std::string o;
  for (unsigned char c : s) o += strf("%02x", c);
  return o;
}

void bytes_value(Json& j, const std::string& field, const std::string& s) {
  if (field == "gpregs" && s.size() == sizeof kRegs / sizeof *kRegs * 8) {
    j.begin_object();
    for (size_t i = 0; i < s.size() / 8; ++i) {
      uint64_t v;
      std::memcpy(&v, s.data() + 8 * i, 8);
      j.khex(kRegs[i], v);
    }
    j.end_object();
    return;
  }
  if (field == "cmdline" || field == "environ") {  // NUL-separated strings
    j.begin_array();
    size_t i = 0;
    while (i < s.size()) {
      size_t z = s.find('\0', i);
      if (z == std::string::npos) z = s.size();
      j.str(s.substr(i, z - i));
      i = z + 1;
    }
    j.end_array();
    return;
  }
  if (s.size() <= 256) j.str(hexbytes(s));
  else j.begin_object().knum("size", s.size()).end_object();
}

void number(Json& j, const std::string& field, uint64_t v) {
  if (kHex.count(field)) j.hex(v);
  else if (kOctal.count(field)) j.str(strf("0%" PRIo64, v));
  else if (v >> 53) j.str(std::to_string(v));  // beyond what a double (jq) holds exactly
  else j.num(v);
}

void message(Json& j, const gp::Message& m);

void value(Json& j, const gp::Message& m, const gp::FieldDescriptor* f, int i) {
  const auto* r = m.GetReflection();
  bool rep = f->is_repeated();
  const std::string& n = f->name();
  switch (f->cpp_type()) {
    case gp::FieldDescriptor::CPPTYPE_INT32: {
      int32_t v = rep ? r->GetRepeatedInt32(m, f, i) : r->GetInt32(m, f);
      if (kHex.count(n)) j.hex(static_cast<uint32_t>(v)); else j.snum(v);
      break;
    }
    case gp::FieldDescriptor::CPPTYPE_INT64: j.snum(rep ? r->GetRepeatedInt64(m, f, i) : r->GetInt64(m, f)); break;
    case gp::FieldDescriptor::CPPTYPE_UINT32: number(j, n, rep ? r->GetRepeatedUInt32(m, f, i) : r->GetUInt32(m, f)); break;
    case gp::FieldDescriptor::CPPTYPE_UINT64: number(j, n, rep ? r->GetRepeatedUInt64(m, f, i) : r->GetUInt64(m, f)); break;
    case gp::FieldDescriptor::CPPTYPE_BOOL: j.boolean(rep ? r->GetRepeatedBool(m, f, i) : r->GetBool(m, f)); break;
    case gp::FieldDescriptor::CPPTYPE_ENUM: j.str((rep ? r->GetRepeatedEnum(m, f, i) : r->GetEnum(m, f))->name()); break;
    case gp::FieldDescriptor::CPPTYPE_STRING: {
      std::string s = rep ? r->GetRepeatedString(m, f, i) : r->GetString(m, f);
      if (f->type() == gp::FieldDescriptor::TYPE_BYTES) bytes_value(j, n, s);
      else j.str(s);
      break;
    }
    case gp::FieldDescriptor::CPPTYPE_MESSAGE: message(j, rep ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f)); break;
    default: j.null(); break;  // (ck.proto has no floating point)
  }
}

// Set fields only (proto3: what differs from the default), in .proto order.
void message(Json& j, const gp::Message& m) {
  const auto* r = m.GetReflection();
  std::vector<const gp::FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  j.begin_object();
  for (const auto* f : fields) {
    if (f->is_map()) {
      j.key(f->name()).begin_object();
      std::vector<std::pair<std::string, const gp::Message*>> kv;
      for (int i = 0; i < r->FieldSize(m, f); ++i) {
        const auto& e = r->GetRepeatedMessage(m, f, i);
        const auto* ke = e.GetDescriptor()->FindFieldByName("key");
        kv.push_back({e.GetReflection()->GetString(e, ke), &e});
      }
      std::sort(kv.begin(), kv.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      for (const auto& [k, e] : kv) {
        j.key(k);
        value(j, *e, e->GetDescriptor()->FindFieldByName("value"), 0);
      }
      j.end_object();
      continue;
    }
    j.key(f->name());
    if (!f->is_repeated()) {
      value(j, m, f, 0);
      continue;
    }
    j.begin_array();
    for (int i = 0; i < r->FieldSize(m, f); ++i) value(j, m, f, i);
    j.end_array();
  }
  j.end_object();
}

// The pid a frame is about: its body's own, else the frame's.
uint32_t frame_pid(const pb::Frame& f) {
  switch (f.body_case()) {
    case pb::Frame::kProcess: return f.process().pid();
    case pb::Frame::kThread: return f.thread().pid();
    case pb::Frame::kFd: return f.fd().pid();
    case pb::Frame::kMm: return f.mm().pid();
    case pb::Frame::kPages: return f.pages().pid() ? f.pages().pid() : f.pid();
    case pb::Frame::kFile: return f.pid() ? f.pid() : f.file().owner_pid();
    default: return f.pid();
  }
}

}  // namespace

std::string frame_kind(const pb::Frame& f) {
  if (f.body_case() == pb::Frame::BODY_NOT_SET) return "unknown";
  return pb::Frame::descriptor()->FindFieldByNumber(f.body_case())->name();
}

int show_json(Source& s, const Filter& flt) {
  static const std::set<std::string> kKinds = {"header", "process", "thread", "file", "fd", "mm", "pages",
                                               "socket", "cgroup", "note", "netlock", "unknown"};
  for (const auto& k : flt.kinds)
    if (!kKinds.count(k))
      ck::usage_error("--kind '" + k + "': not a frame kind (header, process, thread, file, fd, mm, pages, socket, cgroup, note, netlock, unknown)");
  pb::Frame f;
  Json j;
  std::string buf;
  j.begin_object().key("frames").begin_array();
  while (s.next(&f)) {
    std::string kind = frame_kind(f);
    if (!flt.kinds.empty() && !flt.kinds.count(kind)) continue;
    if (!flt.pids.empty() && !flt.pids.count(frame_pid(f))) continue;
    j.begin_object().kstr("kind", kind).knum("pid", frame_pid(f));
    if (f.body_case() != pb::Frame::BODY_NOT_SET) {
      const auto* fd = pb::Frame::descriptor()->FindFieldByNumber(f.body_case());
      j.key(kind);
      message(j, f.GetReflection()->GetMessage(f, fd));
    }
    j.end_object();
    buf += j.take();  // one frame a line
    if (buf.size() > (1 << 20)) {
      ck::write_full(1, buf.data(), buf.size());
      buf.clear();
    }
  }
  s.verify();
  j.end_array().key("trailer");
  message(j, s.trailer());
  j.end_object();
  buf += j.take();
  ck::write_full(1, buf.data(), buf.size());
  return 0;
}

}  // namespace crit
