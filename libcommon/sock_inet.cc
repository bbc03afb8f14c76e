// Dump side of TCP, UDP and ping sockets (IPv4 and IPv6).
#include "error.h"
#include "log.h"
#include "sock_impl.h"

CK_LOG_MODULE("sock");

namespace ck {

void check_inet(std::vector<SockItem*>& items, SockDumpCtx& ctx) {
  for (SockItem* it : items) fail(strf("unable to dump %s: not supported", it->who.c_str()));
}

void dump_inet(std::vector<SockItem*>& items, SockDumpCtx& ctx) {}

void udp_recork(int fd, int nflog_fd, const pb::Undo& u) { fail("corked UDP sockets are not supported"); }

}  // namespace ck
