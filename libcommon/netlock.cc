// The network lock (see netlock.h): nftables tables, made and removed with
// the nft tool run inside the sockets' network namespace.
#include "netlock.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cstring>

#include "error.h"
#include "log.h"
#include "sock.h"
#include "sock_impl.h"

CK_LOG_MODULE("netlock");

namespace ck {

namespace {

std::string addr_only(const pb::InetAddr& a) {
  char buf[INET6_ADDRSTRLEN] = "";
  inet_ntop(a.family() == AF_INET ? AF_INET : AF_INET6, a.addr().data(), buf, sizeof buf);
  return buf;
}

bool any_addr(const pb::InetAddr& a) { return a.addr().find_first_not_of('\0') == std::string::npos; }

}  // namespace

std::string NetLock::new_name(pid_t root) {
  uint32_t r = 0;
  if (::getrandom(&r, sizeof r, 0) != sizeof r) r = static_cast<uint32_t>(::getpid()) * 2654435761u;
  return strf("ck_lock_%d_%08x", root, r);
}

void NetLock::add(const pb::Socket& s) {
  if ((s.family() != AF_INET && s.family() != AF_INET6) || s.type() != SOCK_STREAM) return;
  uint32_t st = s.inet().tcp().state();
  if (st == TCP_LISTEN)
    add_listener(s.inet().local());
  else if (st != TCP_CLOSE)
    add_connection(s.inet().local(), s.inet().remote());
}

void NetLock::add_connection(const pb::InetAddr& l, const pb::InetAddr& r) {
  // A v4-mapped IPv6 pair travels as IPv4 on the wire.
  pb::InetAddr ll = unmapped(l), rr = unmapped(r);
  bool v4 = ll.family() == AF_INET && rr.family() == AF_INET;
  if (!v4) ll = l, rr = r;
  (v4 ? conns4_ : conns6_).push_back(strf("%s . %u . %s . %u", addr_only(ll).c_str(), ll.port(), addr_only(rr).c_str(), rr.port()));
}

void NetLock::add_listener(const pb::InetAddr& l) {
  // A listener on the wildcard address takes connections to any address
  // (an IPv6 one also IPv4, unless IPV6_V6ONLY: both are locked).
  if (any_addr(l)) {
    ports4_.push_back(strf("%u", l.port()));
    if (l.family() == AF_INET6) ports6_.push_back(strf("%u", l.port()));
    return;
  }
  pb::InetAddr ll = unmapped(l);
  (ll.family() == AF_INET ? listen4_ : listen6_).push_back(strf("%s . %u", addr_only(ll).c_str(), ll.port()));
}

void NetLock::lock() {
  // Incoming segments are matched with the addresses turned around.
  std::string s = strf("table inet %s {\n", table_.c_str());
  auto set = [&](const char* name, const char* type, const std::vector<std::string>& elems) {
    s += strf("  set %s { type %s; ", name, type);
    if (!elems.empty()) {
      s += "elements = { ";
      for (size_t i = 0; i < elems.size(); ++i) s += (i ? ", " : "") + elems[i];
      s += " }; ";
    }
    s += "}\n";
  };
  set("c4", "ipv4_addr . inet_service . ipv4_addr . inet_service", conns4_);
  set("c6", "ipv6_addr . inet_service . ipv6_addr . inet_service", conns6_);
  set("l4", "ipv4_addr . inet_service", listen4_);
  set("l6", "ipv6_addr . inet_service", listen6_);
  set("p4", "inet_service", ports4_);
  set("p6", "inet_service", ports6_);
  s += strf("  chain in { type filter hook input priority -300; policy accept;\n"
            "    meta mark 0x%08x accept\n"
            "    ip daddr . tcp dport . ip saddr . tcp sport @c4 drop\n"
            "    ip6 daddr . tcp dport . ip6 saddr . tcp sport @c6 drop\n"
            "    tcp flags & (syn | ack) == syn ip daddr . tcp dport @l4 drop\n"
            "    tcp flags & (syn | ack) == syn ip6 daddr . tcp dport @l6 drop\n"
            "    tcp flags & (syn | ack) == syn meta nfproto ipv4 tcp dport @p4 drop\n"
            "    tcp flags & (syn | ack) == syn meta nfproto ipv6 tcp dport @p6 drop\n"
            "  }\n"
            "  chain out { type filter hook output priority -300; policy accept;\n"
            "    meta mark 0x%08x accept\n"
            "    ip saddr . tcp sport . ip daddr . tcp dport @c4 drop\n"
            "    ip6 saddr . tcp sport . ip6 daddr . tcp dport @c6 drop\n"
            "    tcp flags & (syn | ack) == syn | ack ip saddr . tcp sport @l4 drop\n"
            "    tcp flags & (syn | ack) == syn | ack ip6 saddr . tcp sport @l6 drop\n"
            "    tcp flags & (syn | ack) == syn | ack meta nfproto ipv4 tcp sport @p4 drop\n"
            "    tcp flags & (syn | ack) == syn | ack meta nfproto ipv6 tcp sport @p6 drop\n"
            "  }\n"
            "}\n",
            kInjectMark, kInjectMark);
  run_nft(netns_, s);
  LOG_INFO("network lock '%s': %zu connections, %zu listening addresses", table_.c_str(), conns4_.size() + conns6_.size(),
           listen4_.size() + listen6_.size() + ports4_.size() + ports6_.size());
}

void run_nft(int netns, const std::string& script) {
  int in[2], err[2];
  if (::pipe2(in, O_CLOEXEC) < 0 || ::pipe2(err, O_CLOEXEC) < 0) throw_errno("unable to create a pipe");
  ScopedFd in_r(in[0]), in_w(in[1]), err_r(err[0]), err_w(err[1]);
  pid_t c = ::fork();
  if (c < 0) throw_errno("unable to fork");
  if (c == 0) {
    if (netns >= 0 && ::setns(netns, CLONE_NEWNET) < 0) {
      dprintf(err[1], "unable to enter the network namespace: %s", std::strerror(errno));
      _exit(126);
    }
    ::dup2(in[0], 0);
    ::dup2(err[1], 1);
    ::dup2(err[1], 2);
    execlp("nft", "nft", "-f", "-", static_cast<char*>(nullptr));
    dprintf(2, "unable to run 'nft': %s (the Debian package nftables)", std::strerror(errno));
    _exit(127);
  }
  in_r.reset();
  err_w.reset();
  ::signal(SIGPIPE, SIG_IGN);
  try {
    write_full(in_w.get(), script.data(), script.size());
  } catch (const Error&) {
  }
  in_w.reset();
  std::string msg;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(err_r.get(), buf, sizeof buf)) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    if (msg.size() < 8192) msg.append(buf, static_cast<size_t>(n));
  }
  int st = 0;
  while (::waitpid(c, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    size_t nl = msg.find('\n');  // nft's first line says what went wrong
    fail("nft failed: " + (msg.empty() ? strf("status %d", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st))
                                        : msg.substr(0, nl)));
  }
}

void netlock_remove(int netns, const std::string& table) {
  // "destroy" would not complain about a missing table, but needs nft 1.0.8;
  // Debian 12 has 1.0.6: add an empty one first, then delete.
  run_nft(netns, strf("add table inet %s\ndelete table inet %s\n", table.c_str(), table.c_str()));
  LOG_INFO("network lock '%s' lifted", table.c_str());
}

void netlock_remove_all(const std::vector<pb::NetLock>& locks, const std::string& netns_path) {
  ScopedFd ns;
  if (!netns_path.empty()) {
    ns.reset(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.valid()) throw_errno("unable to open '" + netns_path + "'");
  }
  for (const auto& l : locks) {
    const std::string& t = l.table();
    if (t.rfind("ck_lock_", 0) != 0 || t.size() > 64 || t.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
      bad_input("'" + t + "' is not the name of a ck network lock");
    netlock_remove(ns.get(), t);
  }
}

}  // namespace ck
