// ck-anon: the rules (one per field of the format) and the stage's loop.
#include "anon.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include <cinttypes>
#include <cstdio>
#include <map>
#include <thread>

#include "crit.h"
#include "error.h"
#include "fd.h"
#include "log.h"
#include "stream.h"

CK_LOG_MODULE("anon");

namespace ck {

namespace {

namespace gp = google::protobuf;

enum class Rule {
  kKeep,      // not secret: ids, sizes, flags, addresses of the layout
  kRecurse,   // a message: its own fields' rules apply
  kDrop,      // never passed on
  kPath,      // a path, component by component
  kWord,      // a name (comm): one word
  kHostname,  // the host's name: a word unless --keep-hostname
  kZero,      // bytes: as many zero bytes
  kZero64,    // an integer that is a tracee address or user data: 0
  kFill,      // bytes of a queue or a file: replaced, size and zero bytes kept
  kSigInfo,   // raw siginfo_t: signo, errno and code kept, the rest zeroed
  kCmdline,   // NUL-separated arguments, each one replaced
  kEnviron,   // NUL-separated NAME=VALUE
  kUnixName,  // sun_path bytes
  kSockAddr,  // "1.2.3.4:80", "/run/x.sock", "@abstract"
  kIp,        // 4 or 16 bytes
  kPort,      // a port, mapped with --ports
  kCgroupV1,  // "4:memory:/x"
  kNoteText,  // a stage's free text
};

// The rule of every field a Frame can hold, by full name.  A field not
// named here is dropped (and counted) wherever it appears: a later format's
// new field stays out of an anonymized stream until someone decides what
// it may keep.  tests/unit/anon_test.cc fails when one is missing.
const std::map<std::string, Rule>& rules() {
  using R = Rule;
  static const std::map<std::string, Rule> m = [] {
    std::map<std::string, Rule> r;
    auto msg = [&](const char* name, std::initializer_list<std::pair<const char*, Rule>> fields) {
      for (auto& [f, rule] : fields) r[std::string("ck.pb.") + name + "." + f] = rule;
    };
    msg("Frame", {{"pid", R::kKeep}, {"header", R::kRecurse}, {"trailer", R::kDrop}, {"process", R::kRecurse},
                  {"thread", R::kRecurse}, {"file", R::kRecurse}, {"fd", R::kRecurse}, {"mm", R::kRecurse},
                  {"pages", R::kRecurse}, {"socket", R::kRecurse}, {"cgroup", R::kRecurse}, {"note", R::kRecurse},
                  {"netlock", R::kRecurse}});
    msg("Header", {{"major", R::kKeep}, {"minor", R::kKeep}, {"writers", R::kKeep}, {"kernel", R::kKeep},
                   {"machine", R::kKeep}, {"hostname", R::kHostname}, {"page_size", R::kKeep},
                   {"created_ns", R::kKeep}, {"root_pid", R::kKeep}, {"incremental", R::kKeep},
                   {"round", R::kRecurse}, {"anonymized", R::kRecurse}});
    msg("Anonymized", {{"by", R::kKeep}, {"env", R::kKeep}, {"addresses", R::kKeep}, {"ports", R::kKeep},
                       {"keyed", R::kKeep}});
    msg("Round", {{"dump", R::kKeep}, {"gen", R::kKeep}, {"base", R::kKeep}});
    msg("Trailer", {{"frames", R::kKeep}, {"payload_bytes", R::kKeep}, {"checksum", R::kKeep}});
    msg("Creds", {{"uid", R::kKeep}, {"gid", R::kKeep}, {"groups", R::kKeep}, {"cap_inh", R::kKeep},
                  {"cap_prm", R::kKeep}, {"cap_eff", R::kKeep}, {"cap_bnd", R::kKeep}, {"cap_amb", R::kKeep},
                  {"securebits", R::kKeep}, {"no_new_privs", R::kKeep}});
    msg("Rlimit", {{"resource", R::kKeep}, {"cur", R::kKeep}, {"max", R::kKeep}});
    msg("SigAction", {{"signo", R::kKeep}, {"handler", R::kKeep}, {"flags", R::kKeep}, {"restorer", R::kKeep},
                      {"mask", R::kKeep}});
    msg("SigInfo", {{"raw", R::kSigInfo}, {"shared", R::kKeep}});
    msg("ITimer", {{"which", R::kKeep}, {"interval_us", R::kKeep}, {"value_us", R::kKeep}});
    msg("PosixTimer", {{"id", R::kKeep}, {"clock", R::kKeep}, {"notify", R::kKeep}, {"signo", R::kKeep},
                       {"sigval", R::kZero64}, {"notify_tid", R::kKeep}, {"interval_ns", R::kKeep},
                       {"value_ns", R::kKeep}, {"overrun", R::kKeep}});
    msg("Process",
        {{"pid", R::kKeep},         {"ppid", R::kKeep},          {"pgid", R::kKeep},         {"sid", R::kKeep},
         {"tids", R::kKeep},        {"comm", R::kWord},          {"exe", R::kPath},          {"cwd", R::kPath},
         {"root", R::kPath},        {"creds", R::kRecurse},      {"rlimits", R::kRecurse},   {"personality", R::kKeep},
         {"sigactions", R::kRecurse}, {"shared_pending", R::kRecurse}, {"itimers", R::kRecurse},
         {"posix_timers", R::kRecurse}, {"auxv", R::kKeep},      {"cmdline", R::kCmdline},   {"environ", R::kEnviron},
         {"umask", R::kKeep},       {"start_code", R::kKeep},    {"end_code", R::kKeep},     {"start_data", R::kKeep},
         {"end_data", R::kKeep},    {"start_brk", R::kKeep},     {"brk", R::kKeep},          {"start_stack", R::kKeep},
         {"arg_start", R::kKeep},   {"arg_end", R::kKeep},       {"env_start", R::kKeep},    {"env_end", R::kKeep},
         {"exit_signal", R::kKeep}, {"exe_dev", R::kKeep},       {"exe_ino", R::kKeep},      {"dumpable", R::kKeep},
         {"pdeath_sig", R::kKeep},  {"child_subreaper", R::kKeep}, {"tty_nr", R::kKeep},     {"tty_pgrp", R::kKeep},
         {"zombie", R::kKeep},      {"exit_status", R::kKeep},   {"cgroup_v1", R::kCgroupV1}, {"stop_signal", R::kKeep},
         {"cwd_desc", R::kKeep},    {"root_desc", R::kKeep}});
    msg("Thread", {{"pid", R::kKeep},           {"tid", R::kKeep},          {"comm", R::kWord},
                   {"gpregs", R::kZero},        {"xsave", R::kZero},        {"blocked", R::kKeep},
                   {"pending", R::kRecurse},    {"altstack_sp", R::kKeep},  {"altstack_size", R::kKeep},
                   {"altstack_flags", R::kKeep}, {"rseq_abi", R::kZero64},  {"rseq_len", R::kKeep},
                   {"rseq_sig", R::kKeep},      {"clear_child_tid", R::kZero64}, {"robust_list", R::kZero64},
                   {"robust_len", R::kKeep},    {"sched_policy", R::kKeep}, {"nice", R::kKeep}});
    msg("EpollTarget", {{"tfd", R::kKeep}, {"events", R::kKeep}, {"data", R::kZero64}});
    msg("FileLock", {{"kind", R::kKeep}, {"write", R::kKeep}, {"start", R::kKeep}, {"end", R::kKeep},
                     {"to_eof", R::kKeep}, {"pid", R::kKeep}, {"fd", R::kKeep}});
    msg("InotifyWatch", {{"wd", R::kKeep}, {"mask", R::kKeep}, {"path", R::kPath}});
    msg("FileDesc",
        {{"id", R::kKeep},           {"kind", R::kKeep},           {"path", R::kPath},
         {"flags", R::kKeep},        {"pos", R::kKeep},            {"dev", R::kKeep},
         {"ino", R::kKeep},          {"mode", R::kKeep},           {"size", R::kKeep},
         {"mtime_ns", R::kKeep},     {"deleted", R::kKeep},        {"contents", R::kFill},
         {"pipe_id", R::kKeep},      {"pipe_data", R::kFill},      {"pipe_size", R::kKeep},
         {"eventfd_count", R::kKeep}, {"eventfd_flags", R::kKeep}, {"epoll", R::kRecurse},
         {"signalfd_mask", R::kKeep}, {"timer_clock", R::kKeep},   {"timer_interval_ns", R::kKeep},
         {"timer_value_ns", R::kKeep}, {"timer_ticks", R::kKeep},  {"watches", R::kRecurse},
         {"rdev", R::kKeep},         {"owner_pid", R::kKeep},      {"owner_fd", R::kKeep},
         {"socket_family", R::kKeep}, {"tty", R::kKeep},           {"termios", R::kKeep},
         {"winsize", R::kKeep},      {"socket_type", R::kKeep},    {"socket_protocol", R::kKeep},
         {"socket_addr", R::kSockAddr}, {"socket_peer", R::kSockAddr}, {"socket_listening", R::kKeep},
         {"external", R::kPath},     {"uid", R::kKeep},            {"gid", R::kKeep},
         {"atime_ns", R::kKeep},     {"seals", R::kKeep},          {"map_start", R::kKeep},
         {"locks", R::kRecurse}});
    msg("Fd", {{"pid", R::kKeep}, {"fd", R::kKeep}, {"desc", R::kKeep}, {"cloexec", R::kKeep}});
    msg("Vma", {{"start", R::kKeep}, {"end", R::kKeep}, {"prot", R::kKeep}, {"flags", R::kKeep},
                {"pgoff", R::kKeep}, {"dev", R::kKeep}, {"ino", R::kKeep}, {"path", R::kPath},
                {"kind", R::kKeep}, {"shmid", R::kKeep}, {"contents_elsewhere", R::kKeep},
                {"file_size", R::kKeep}, {"file_mtime_ns", R::kKeep}, {"vmflags", R::kKeep}, {"file", R::kKeep}});
    msg("MemLayout", {{"pid", R::kKeep}, {"vmas", R::kRecurse}});
    // (has_payload, digest and dropped: set by the stage's loop, below)
    msg("PageRun", {{"pid", R::kKeep}, {"addr", R::kKeep}, {"npages", R::kKeep}, {"has_payload", R::kKeep},
                    {"shmid", R::kKeep}, {"round", R::kKeep}, {"digest", R::kDrop}, {"file", R::kKeep},
                    {"dropped", R::kKeep}});
    msg("InetAddr", {{"family", R::kKeep}, {"addr", R::kIp}, {"port", R::kPort}, {"scope_id", R::kKeep},
                     {"flowinfo", R::kKeep}});
    msg("SockOpts",
        {{"sndbuf", R::kKeep},     {"rcvbuf", R::kKeep},      {"sndbuf_locked", R::kKeep}, {"rcvbuf_locked", R::kKeep},
         {"reuseaddr", R::kKeep},  {"reuseport", R::kKeep},   {"keepalive", R::kKeep},     {"broadcast", R::kKeep},
         {"passcred", R::kKeep},   {"oobinline", R::kKeep},   {"dontroute", R::kKeep},     {"linger_on", R::kKeep},
         {"linger_secs", R::kKeep}, {"mark", R::kKeep},       {"priority", R::kKeep},      {"rcvtimeo_us", R::kKeep},
         {"sndtimeo_us", R::kKeep}, {"rcvlowat", R::kKeep},   {"peek_off", R::kKeep},      {"bindtodevice", R::kKeep},
         {"filter", R::kZero},     {"filter_locked", R::kKeep}, {"timestamp", R::kKeep},   {"passsec", R::kKeep},
         {"owner_pid", R::kKeep},  {"owner_type", R::kKeep},  {"sigio", R::kKeep}});
    msg("Ucred", {{"pid", R::kKeep}, {"uid", R::kKeep}, {"gid", R::kKeep}});
    msg("UnixMsg", {{"data", R::kFill}, {"fds", R::kKeep}, {"cred", R::kRecurse}, {"from", R::kUnixName},
                    {"from_ino", R::kKeep}});
    msg("UnixSock", {{"ino", R::kKeep}, {"state", R::kKeep}, {"name", R::kUnixName}, {"name_deleted", R::kKeep},
                     {"name_mode", R::kKeep}, {"name_uid", R::kKeep}, {"name_gid", R::kKeep}, {"peer_ino", R::kKeep},
                     {"peer_name", R::kUnixName}, {"shutdown", R::kKeep}, {"backlog", R::kKeep}, {"icons", R::kKeep},
                     {"queue", R::kRecurse}, {"external", R::kKeep}, {"external_id", R::kPath},
                     {"peer_gone", R::kKeep}});
    msg("TcpState",
        {{"state", R::kKeep},       {"backlog", R::kKeep},     {"snd_seq", R::kKeep},      {"rcv_seq", R::kKeep},
         {"sendq", R::kFill},       {"unsent", R::kKeep},      {"recvq", R::kFill},        {"mss_clamp", R::kKeep},
         {"wscale_ok", R::kKeep},   {"snd_wscale", R::kKeep},  {"rcv_wscale", R::kKeep},   {"sack_ok", R::kKeep},
         {"tstamp_ok", R::kKeep},   {"timestamp", R::kKeep},   {"snd_wl1", R::kKeep},      {"snd_wnd", R::kKeep},
         {"max_window", R::kKeep},  {"rcv_wnd", R::kKeep},     {"rcv_wup", R::kKeep},      {"nodelay", R::kKeep},
         {"cork", R::kKeep},        {"keepidle", R::kKeep},    {"keepintvl", R::kKeep},    {"keepcnt", R::kKeep},
         {"user_timeout", R::kKeep}, {"congestion", R::kKeep}, {"maxseg", R::kKeep},       {"linger2", R::kKeep},
         {"window_clamp", R::kKeep}, {"syncnt", R::kKeep},     {"defer_accept", R::kKeep}, {"notsent_lowat", R::kKeep},
         {"thin_linear_timeouts", R::kKeep}, {"fastopen", R::kKeep}, {"fastopen_connect", R::kKeep},
         {"inq", R::kKeep},         {"waiting", R::kKeep},     {"dead", R::kKeep},         {"fin_unsent", R::kKeep},
         {"snd_mss", R::kKeep}});
    msg("UdpDgram", {{"data", R::kFill}, {"from", R::kRecurse}});
    msg("McastGroup", {{"group", R::kIp}, {"ifindex", R::kKeep}, {"ifname", R::kKeep}, {"include", R::kKeep},
                       {"sources", R::kIp}});
    msg("UdpState", {{"queue", R::kRecurse}, {"cork", R::kKeep}, {"has_pending", R::kKeep}, {"pending", R::kFill},
                     {"pending_to", R::kRecurse}, {"cscov_send", R::kKeep}, {"cscov_recv", R::kKeep},
                     {"segment", R::kKeep}, {"gro", R::kKeep}, {"groups", R::kRecurse}});
    msg("InetOpts",
        {{"tos", R::kKeep},          {"ttl", R::kKeep},          {"freebind", R::kKeep},     {"transparent", R::kKeep},
         {"mtu_discover", R::kKeep}, {"recverr", R::kKeep},      {"pktinfo", R::kKeep},      {"recvtos", R::kKeep},
         {"recvttl", R::kKeep},      {"bind_address_no_port", R::kKeep}, {"recvorigdstaddr", R::kKeep},
         {"mc_ttl", R::kKeep},       {"mc_loop", R::kKeep},      {"mc_all", R::kKeep},       {"v6only", R::kKeep},
         {"tclass", R::kKeep},       {"unicast_hops", R::kKeep}, {"mc_hops", R::kKeep},      {"mc6_loop", R::kKeep},
         {"recvpktinfo6", R::kKeep}, {"recverr6", R::kKeep},     {"mtu_discover6", R::kKeep}, {"recvtclass", R::kKeep},
         {"recvhoplimit", R::kKeep}, {"mc_if6", R::kKeep}});
    msg("InetSock", {{"local", R::kRecurse}, {"remote", R::kRecurse}, {"bound", R::kKeep}, {"connected", R::kKeep},
                     {"shutdown", R::kKeep}, {"tcp", R::kRecurse}, {"udp", R::kRecurse}, {"ip", R::kRecurse}});
    msg("Socket", {{"desc", R::kKeep}, {"family", R::kKeep}, {"type", R::kKeep}, {"protocol", R::kKeep},
                   {"opts", R::kRecurse}, {"unix_sk", R::kRecurse}, {"inet", R::kRecurse}, {"netns", R::kKeep}});
    msg("NetLock", {{"table", R::kKeep}, {"netns", R::kKeep}});
    // Controller settings are the kernel's values (numbers, "max", types).
    msg("Cgroup", {{"path", R::kPath}, {"settings", R::kKeep}, {"procs", R::kKeep}, {"threads", R::kKeep},
                   {"ancestor", R::kKeep}});
    msg("Cgroup.SettingsEntry", {{"key", R::kKeep}, {"value", R::kKeep}});
    msg("Note", {{"stage", R::kKeep}, {"text", R::kNoteText}});
    return r;
  }();
  return m;
}

// Environment names whose values are still replaced but whose names say
// nothing about the site.
const std::set<std::string>& known_env_names() {
  static const std::set<std::string> s = {
      "PATH", "HOME",  "LANG",    "LANGUAGE", "TERM",  "SHELL", "USER",  "LOGNAME", "PWD",  "OLDPWD", "TMPDIR",
      "TZ",   "SHLVL", "DISPLAY", "EDITOR",   "PAGER", "HOSTNAME", "MAIL", "LD_LIBRARY_PATH", "LD_PRELOAD",
      "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "COLUMNS", "LINES", "_"};
  return s;
}

std::string read_key(const std::string& file) {
  ScopedFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw_errno("unable to open key file '" + file + "'");
  std::string k(1 << 16, '\0');
  size_t n = read_full(fd.get(), k.data(), k.size());
  if (n < 16) usage_error(strf("key file '%s' holds %zu bytes: at least 16 are needed", file.c_str(), n));
  if (n == k.size()) usage_error(strf("key file '%s' is over %zu bytes", file.c_str(), k.size() - 1));
  k.resize(n);
  unsigned char h[32];
  sha256(k.data(), k.size(), h);
  return std::string(reinterpret_cast<char*>(h), 32);
}

std::string random_key() {
  std::string k(32, '\0');
  size_t got = 0;
  while (got < k.size()) {
    ssize_t n = ::getrandom(k.data() + got, k.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("unable to draw a random key");
    got += static_cast<size_t>(n);
  }
  return k;
}

// What was removed, for the summary and the closing note.
struct Counts {
  uint64_t dropped_runs = 0, dropped_pages = 0, paths = 0, words = 0, zeroed = 0, filled_bytes = 0, ips = 0;
  uint64_t unruled_fields = 0, unknown_frames = 0;
  std::set<std::string> unruled_names;
};

class Anonymizer {
 public:
  Anonymizer(const AnonOptions& o, AnonMap& m) : o_(o), m_(m) {}

  void apply(gp::Message* msg) {
    const gp::Reflection* refl = msg->GetReflection();
    std::vector<const gp::FieldDescriptor*> fields;
    refl->ListFields(*msg, &fields);
    for (const gp::FieldDescriptor* fd : fields) {
      auto it = rules().find(fd->full_name());
      if (it == rules().end()) {
        refl->ClearField(msg, fd);
        ++c.unruled_fields;
        c.unruled_names.insert(fd->full_name());
        continue;
      }
      field(msg, refl, fd, it->second);
    }
    if (!refl->GetUnknownFields(*msg).empty()) {
      refl->MutableUnknownFields(msg)->Clear();
      ++c.unruled_fields;
      c.unruled_names.insert(msg->GetDescriptor()->full_name() + " (fields of a newer format)");
    }
  }

  // false: the frame is dropped (a kind this ck does not know).
  bool frame(pb::Frame* f) {
    if (f->body_case() == pb::Frame::BODY_NOT_SET) {
      ++c.unknown_frames;
      return false;
    }
    if (f->has_pages()) {
      pb::PageRun* p = f->mutable_pages();
      if (p->has_payload()) {
        p->set_has_payload(false);
        p->set_dropped(true);
        ++c.dropped_runs;
        c.dropped_pages += p->npages();
      }
    }
    apply(f);
    return true;
  }

  Counts c;

 private:
  // Maps a string or bytes field, singular or repeated.
  template <class F>
  void strings(gp::Message* msg, const gp::Reflection* refl, const gp::FieldDescriptor* fd, F fn) {
    if (fd->is_repeated()) {
      for (int i = 0; i < refl->FieldSize(*msg, fd); ++i)
        refl->SetRepeatedString(msg, fd, i, fn(refl->GetRepeatedString(*msg, fd, i)));
    } else {
      refl->SetString(msg, fd, fn(refl->GetString(*msg, fd)));
    }
  }

  void field(gp::Message* msg, const gp::Reflection* refl, const gp::FieldDescriptor* fd, Rule rule) {
    switch (rule) {
      case Rule::kKeep:
        return;
      case Rule::kDrop:
        refl->ClearField(msg, fd);
        return;
      case Rule::kRecurse:
        if (fd->is_repeated())
          for (int i = 0; i < refl->FieldSize(*msg, fd); ++i) apply(refl->MutableRepeatedMessage(msg, fd, i));
        else
          apply(refl->MutableMessage(msg, fd));
        return;
      case Rule::kPath:
        strings(msg, refl, fd, [&](const std::string& s) { ++c.paths; return m_.path(s); });
        return;
      case Rule::kWord:
        strings(msg, refl, fd, [&](const std::string& s) { ++c.words; return m_.word(s); });
        return;
      case Rule::kHostname:
        if (!o_.keep_hostname) strings(msg, refl, fd, [&](const std::string& s) { return m_.word(s); });
        return;
      case Rule::kZero:
        strings(msg, refl, fd, [&](const std::string& s) { ++c.zeroed; return std::string(s.size(), '\0'); });
        return;
      case Rule::kZero64:
        refl->ClearField(msg, fd);
        ++c.zeroed;
        return;
      case Rule::kFill:
        strings(msg, refl, fd, [&](const std::string& s) { return fill(s); });
        return;
      case Rule::kSigInfo:
        strings(msg, refl, fd, [&](const std::string& s) {
          std::string r(s.size(), '\0');
          std::copy_n(s.begin(), std::min<size_t>(s.size(), 12), r.begin());  // si_signo, si_errno, si_code
          ++c.zeroed;
          return r;
        });
        return;
      case Rule::kCmdline:
        strings(msg, refl, fd, [&](const std::string& s) { return split0(s, [&](const std::string& a) { return arg(a); }); });
        return;
      case Rule::kEnviron:
        strings(msg, refl, fd, [&](const std::string& s) { return split0(s, [&](const std::string& e) { return env(e); }); });
        return;
      case Rule::kUnixName:
        strings(msg, refl, fd, [&](const std::string& s) { ++c.paths; return m_.unix_name(s); });
        return;
      case Rule::kSockAddr:
        strings(msg, refl, fd, [&](const std::string& s) { ++c.paths; return m_.sock_addr(s, o_.addresses, o_.ports); });
        return;
      case Rule::kIp:
        if (o_.addresses) strings(msg, refl, fd, [&](const std::string& s) { ++c.ips; return m_.ip(s); });
        return;
      case Rule::kPort:
        if (o_.ports && fd->cpp_type() == gp::FieldDescriptor::CPPTYPE_UINT32 && !fd->is_repeated())
          refl->SetUInt32(msg, fd, m_.port(refl->GetUInt32(*msg, fd)));
        return;
      case Rule::kCgroupV1:
        strings(msg, refl, fd, [&](const std::string& s) {
          size_t a = s.find(':'), b = a == std::string::npos ? a : s.find(':', a + 1);
          if (b == std::string::npos) return m_.word(s);
          return s.substr(0, b + 1) + m_.path(s.substr(b + 1));
        });
        return;
      case Rule::kNoteText:
        // ck-memread's notes ("fresh PID RANGES") hold addresses of the
        // layout, which image chains need; any other text is free text.
        if (refl->GetString(*msg, msg->GetDescriptor()->FindFieldByName("stage")) != "ck-memread")
          strings(msg, refl, fd, [&](const std::string&) { return std::string("(text removed by ck-anon)"); });
        return;
    }
  }

  std::string fill(const std::string& s) {
    std::string r = s;
    for (char& ch : r)
      if (ch) ch = 'x';  // zero bytes stay: holes and padding keep their shape
    c.filled_bytes += s.size();
    return r;
  }

  template <class F>
  std::string split0(const std::string& s, F fn) {
    std::string out;
    size_t i = 0;
    while (i < s.size()) {
      size_t j = s.find('\0', i);
      if (j == std::string::npos) j = s.size();
      out += fn(s.substr(i, j - i));
      if (j < s.size()) out += '\0';
      i = j + 1;
    }
    return out;
  }

  std::string arg(const std::string& a) {
    ++c.words;
    return a.find('/') != std::string::npos ? m_.path(a) : m_.word(a);
  }

  std::string value(const std::string& v) {
    if (v.find('/') == std::string::npos) return m_.word(v);
    std::string out;  // a list of paths (PATH=/a:/b): each one a path
    size_t i = 0;
    for (;;) {
      size_t j = v.find(':', i);
      out += m_.path(v.substr(i, j == std::string::npos ? std::string::npos : j - i));
      if (j == std::string::npos) break;
      out += ':';
      i = j + 1;
    }
    return out;
  }

  std::string env(const std::string& e) {
    ++c.words;
    size_t eq = e.find('=');
    if (eq == std::string::npos) return m_.word(e);
    std::string name = e.substr(0, eq);
    bool keep = o_.env == "values" || known_env_names().count(name);
    return (keep ? name : m_.word(name)) + "=" + value(e.substr(eq + 1));
  }

  const AnonOptions& o_;
  AnonMap& m_;
};

// Non-printable bytes of an original as \xHH (names may hold anything).
std::string escape(const std::string& s) {
  std::string r;
  for (unsigned char ch : s) {
    if (ch < 0x20 || ch >= 0x7f || ch == '\\')
      r += strf("\\x%02x", ch);
    else
      r += static_cast<char>(ch);
  }
  return r;
}

// The output file: written under a temporary name, renamed in place only
// once the stream is complete; removed otherwise.
class OutFile {
 public:
  explicit OutFile(const std::string& path) : path_(path), tmp_(path + ".ck-anon-tmp") {
    fd_.reset(::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd_.valid()) throw_errno("unable to create '" + tmp_ + "'");
  }
  ~OutFile() {
    if (!done_) ::unlink(tmp_.c_str());
  }
  int fd() const { return fd_.get(); }
  void commit() {
    if (::fsync(fd_.get()) < 0) throw_errno("unable to write '" + tmp_ + "'");
    if (::rename(tmp_.c_str(), path_.c_str()) < 0) throw_errno("unable to rename '" + tmp_ + "' to '" + path_ + "'");
    done_ = true;
  }

 private:
  std::string path_, tmp_;
  ScopedFd fd_;
  bool done_ = false;
};

// --zstd: the stream goes through a pipe to a thread that compresses it
// (libzstd, streaming, bounded buffers) onto the output.  finish() ends
// the frame and reports the thread's error; destroyed without it, the
// output is a cut zstd frame, which zstd -d refuses.
class ZstdPipe {
 public:
  explicit ZstdPipe(int out_fd) : out_(out_fd) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) throw_errno("unable to create a pipe");
    r_.reset(p[0]);
    w_.reset(p[1]);
    t_ = std::thread([this] { run(); });
  }
  ~ZstdPipe() {
    w_.reset();
    if (t_.joinable()) t_.join();
  }
  int fd() const { return w_.get(); }
  void finish() {
    w_.reset();
    t_.join();
    if (!err_.empty()) fail("compressing the output: " + err_);
  }

 private:
  void run() {
    ZSTD_CCtx* c = ZSTD_createCCtx();
    try {
      if (!c) fail("out of memory");
      ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 3);
      std::vector<char> in(ZSTD_CStreamInSize()), out(ZSTD_CStreamOutSize());
      for (;;) {
        ssize_t n = ::read(r_.get(), in.data(), in.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("unable to read the stream's pipe");
        const bool last = n == 0;
        ZSTD_inBuffer ib{in.data(), static_cast<size_t>(n), 0};
        for (;;) {
          ZSTD_outBuffer ob{out.data(), out.size(), 0};
          size_t rem = ZSTD_compressStream2(c, &ob, &ib, last ? ZSTD_e_end : ZSTD_e_continue);
          if (ZSTD_isError(rem)) fail(ZSTD_getErrorName(rem));
          write_full(out_, out.data(), ob.pos);
          if (last ? rem == 0 : ib.pos == ib.size) break;
        }
        if (last) break;
      }
    } catch (const std::exception& e) {
      err_ = e.what();
      r_.reset();  // the writer then fails too (EPIPE)
    }
    ZSTD_freeCCtx(c);
  }

  int out_;
  ScopedFd r_, w_;
  std::thread t_;
  std::string err_;
};

void write_map(const std::string& file, const AnonMap& m) {
  std::string out = "# ck-anon mapping table: kind, replacement, original (keep it private)\n";
  for (const auto& [kind, t] : m.table())
    for (const auto& [orig, repl] : t) out += kind + "\t" + escape(repl) + "\t" + escape(orig) + "\n";
  OutFile f(file);
  write_full(f.fd(), out.data(), out.size());
  f.commit();
}

}  // namespace

std::set<std::string> anon_rule_names() {
  std::set<std::string> s;
  for (const auto& [k, v] : rules()) s.insert(k);
  return s;
}

std::set<std::string> frame_field_names() {
  std::set<std::string> out;
  std::vector<const gp::Descriptor*> todo = {pb::Frame::descriptor()};
  std::set<const gp::Descriptor*> seen;
  while (!todo.empty()) {
    const gp::Descriptor* d = todo.back();
    todo.pop_back();
    if (!seen.insert(d).second) continue;
    for (int i = 0; i < d->field_count(); ++i) {
      const gp::FieldDescriptor* fd = d->field(i);
      out.insert(fd->full_name());
      if (fd->message_type()) todo.push_back(fd->message_type());
    }
  }
  return out;
}

int run_anon(const AnonOptions& o, int in_fd, int out_fd) {
  if (o.env != "all" && o.env != "values") usage_error("--env is all or values");
  std::string key = o.key_file.empty() ? random_key() : read_key(o.key_file);
  AnonMap map(key, o.all_paths);
  key.assign(key.size(), '\0');
  Anonymizer a(o, map);
  std::unique_ptr<OutFile> file;
  if (!o.output.empty()) {
    file = std::make_unique<OutFile>(o.output);
    out_fd = file->fd();
  }
  // A stream on stdin, or an image set read in place (no pipe between).
  std::unique_ptr<crit::Source> src;
  if (o.dir.empty()) {
    if (::isatty(in_fd)) usage_error("no stream on stdin and no -D DIR (see ck-anon --help)");
    src = crit::stream_source(in_fd);
  } else {
    src = crit::open_source(o.dir);
  }
  pb::Frame hf;
  if (!src->next(&hf) || !hf.has_header()) bad_input("the input does not start with a header");
  a.apply(&hf);
  pb::Header h = hf.header();
  h.add_writers(std::string("ck-anon ") + kVersion);
  auto* an = h.mutable_anonymized();
  an->set_by(std::string("ck-anon ") + kVersion);
  an->set_env(o.env);
  an->set_addresses(o.addresses);
  an->set_ports(o.ports);
  an->set_keyed(!o.key_file.empty());
  std::unique_ptr<ZstdPipe> z;
  if (o.zstd) {
    if (::isatty(out_fd)) usage_error("refusing to write a compressed stream to a terminal");
    z = std::make_unique<ZstdPipe>(out_fd);
    out_fd = z->fd();
  }
  std::string facts;
  if (!o.note_file.empty()) {
    ScopedFd nf(::open(o.note_file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!nf.valid()) throw_errno("unable to open '" + o.note_file + "'");
    facts.resize(1 << 20);
    facts.resize(read_full(nf.get(), facts.data(), facts.size()));
  }
  StreamWriter w(out_fd);
  w.header(h);
  // Every payload is still checked against its digest, so that a corrupt
  // input is refused even though none of it goes out: a stream reader
  // checks the payloads it skips, an image set checks them all (and its
  // checksum) in verify(), before the trailer is written.
  pb::Frame f;
  while (src->next(&f)) {
    if (f.has_header()) continue;
    if (a.frame(&f)) w.frame(f);
  }
  src->verify();
  const Counts& c = a.c;
  std::string text = strf("dropped %" PRIu64 " page runs (%" PRIu64 " pages); replaced %" PRIu64 " paths, %" PRIu64
                          " names and arguments, %" PRIu64 " IP addresses, %" PRIu64 " bytes of queued data; zeroed %" PRIu64
                          " registers, addresses and signal records; dropped %" PRIu64 " fields and %" PRIu64
                          " frames it has no rule for",
                          c.dropped_runs, c.dropped_pages, c.paths, c.words, c.ips, c.filled_bytes, c.zeroed,
                          c.unruled_fields, c.unknown_frames);
  pb::Frame note;
  note.mutable_note()->set_stage("ck-anon");
  note.mutable_note()->set_text(text);
  w.frame(note);
  if (!o.note_file.empty()) {  // the caller's text, as it is (ck-report's facts)
    pb::Frame nf;
    nf.mutable_note()->set_stage(o.note_stage);
    nf.mutable_note()->set_text(facts);
    w.frame(nf);
  }
  w.finish();
  if (z) z->finish();
  if (file) file->commit();
  if (!o.map_out.empty()) write_map(o.map_out, map);
  for (const auto& n : c.unruled_names) LOG_WARN("dropped %s: no anonymization rule for it", n.c_str());
  if (c.unknown_frames) LOG_WARN("dropped %" PRIu64 " frames of kinds this ck does not know", c.unknown_frames);
  if (o.summary) std::fprintf(stderr, "ck-anon: %s\n", text.c_str());
  return 0;
}

}  // namespace ck
