// The store service's protocol and its client side (ck-store put/get/ls/rm
// without -D, ck-restore --from).  Messages are StoreRequest and StoreReply
// of formats/ck.proto, each sent as a u32 little-endian length and its
// bytes, on a unix stream socket:
//   PUT     request, the ck stream (or the stream as one zstd frame, told
//           by its magic), the client shuts its side down; reply
//   GET     request; reply; with status 0 the stored stream follows, byte
//           for byte as it was put, and the service closes
//   LIST    request; reply (the caller's images)
//   REMOVE  request; reply (held_bytes: what was freed)
// A reply with a status other than 0 carries the message the client prints
// and the exit status it takes.
#pragma once
#include <cstdint>
#include <string>

#include "ck.pb.h"
#include "fd.h"

namespace ck {

constexpr char kDefaultStoreSocket[] = "/run/ck/store.sock";
constexpr uint32_t kMaxStoreMsg = 16u << 20;

// Where the service is: flag (--socket) if set, else $CK_STORE_SOCKET, else
// /run/ck/store.sock (for a uid other than root with $XDG_RUNTIME_DIR set:
// $XDG_RUNTIME_DIR/ck/store.sock).
std::string store_socket_path(const std::string& flag);

// Sends m framed.  Returns false if the peer is gone (EPIPE, ECONNRESET);
// throws on other errors.
bool send_store_msg(int fd, const google::protobuf::MessageLite& m);
// Reads one framed message.  Returns false at a clean end (no byte);
// status 3 when cut short or unparsable.
bool recv_store_msg(int fd, google::protobuf::MessageLite* m);
// A name the service takes for an image: 1 to 100 of [A-Za-z0-9._+@-], not
// starting with '.' or '-'.  Usage error (status 2) otherwise.
void check_store_name(const std::string& name);

// A connection to the service at path.  No service there: status 1, "no
// store service at PATH", unless start, which then starts one (ck-store
// serve, detached, in a session of its own) and says so on stderr.
ScopedFd store_connect(const std::string& path, bool start = false);

// The client calls.  A reply with a non-zero status is thrown as Error
// with that status and message; a service that closes without a reply is
// status 1.
// put: the stream on in_fd into image name (empty: the service picks one),
// starting a service if none runs; compress > 0: sent as a zstd frame of
// that level (the service takes a zstd frame wherever a stream goes, by its
// magic).  Returns the reply (its name).
pb::StoreReply store_client_put(const std::string& path, const std::string& name, bool force, int in_fd,
                                int compress = 0);
// get: the stored stream of name to out_fd.
void store_client_get(const std::string& path, const std::string& name, int out_fd);
// The stored stream of name, on a socket positioned at its first byte (for
// ck-restore --from, which reads it as a stream).
ScopedFd store_client_open(const std::string& path, const std::string& name);
pb::StoreReply store_client_list(const std::string& path, const std::string& name);
pb::StoreReply store_client_remove(const std::string& path, const std::string& name);

}  // namespace ck
