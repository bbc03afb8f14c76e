// ck-anon: a stream stage that rewrites a stream so that it keeps its
// shape and its relations and loses its secrets.  See man/ck-anon.1.
//
// Every field of every frame goes through a rule (anon.cc, kRules): kept,
// replaced through a keyed 1:1 mapping (names, path components, IP
// addresses), replaced keeping its size (queued data, registers), or
// zeroed.  A field that has no rule (one a later format adds) and a frame
// of a kind ck-anon does not know are dropped and counted, never passed
// on: unlike every other stage, ck-anon forwards nothing it does not
// understand.  Page payloads are dropped; their runs stay, marked
// PageRun.dropped, so the layout and the number and placement of pages
// are kept.  The header gets Header.anonymized, which ck-restore refuses.
//
// The mappings are keyed (HMAC-SHA256 of a key): the same key maps the same
// input to the same output, so two reports from one site can be compared;
// without a key file a fresh random key is drawn.  The key never enters
// the output.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "ck.pb.h"

namespace ck {

struct AnonOptions {
  std::string key_file;   // empty: a random key
  std::string env = "all";  // "all": names and values replaced; "values": names kept
  bool addresses = true;  // IP addresses mapped (prefix-preserving)
  bool ports = false;     // ports mapped too
  bool keep_hostname = false;
  bool all_paths = false;  // replace the well-known system components too (/usr, /dev, ...)
  std::string map_out;    // write the mapping table here (for the reporter alone)
  std::string dir;        // read this image set (ck-store's) instead of in_fd
  std::string output;     // write the stream here (renamed in place at the end); empty: out_fd
  bool summary = false;   // a summary of what was removed on stderr
  bool zstd = false;      // compress the output (one zstd frame, libzstd)
  std::string note_file;  // append its text, unchanged, as a Note of note_stage
  std::string note_stage = "ck-report";
};

// Reads a stream from in_fd, writes its anonymized copy to out_fd (or
// o.output).  Bad input (a cut, corrupt or unparsable stream) is status 3
// and leaves no output file; the stream written to out_fd then has no
// trailer, which every reader refuses.
int run_anon(const AnonOptions& o, int in_fd, int out_fd);

// ---- the keyed mappings (anon_map.cc) ---------------------------------------

// SHA-256 and HMAC-SHA256 (FIPS 180-4, RFC 2104).
void sha256(const void* data, size_t len, unsigned char out[32]);
void hmac_sha256(const std::string& key, const std::string& msg, unsigned char out[32]);

class AnonMap {
 public:
  // key: the secret every mapping is derived from (any length).
  explicit AnonMap(const std::string& key, bool all_paths = false);

  // A word (a path component, a process name, an environment name or
  // value) to its replacement: "x" and lower-case base32, 11 characters,
  // the same for the same word, different for different words (a clash of
  // the hash gets a longer name).  "" stays "".
  std::string word(const std::string& w);
  // A path, component by component: "/home/al/a.txt" -> "/home/xq3.../x7...".
  // "." and ".." and, unless all_paths, a short list of system names
  // (usr, dev, proc, ...) are kept.  Kernel names with no path in them
  // ("pipe:[123]", "anon_inode:[eventfd]", "[heap]") stay; a trailing
  // " (deleted)" stays; "/memfd:NAME" keeps its prefix.
  std::string path(const std::string& p);
  // A unix socket name (sun_path bytes): a leading NUL (abstract) is kept,
  // the rest mapped as a path.
  std::string unix_name(const std::string& n);
  // An IP address, 4 or 16 bytes in network order, prefix-preserving
  // (Crypto-PAn's construction with HMAC-SHA256 as its function): two
  // addresses that share their first k bits are mapped to two that share
  // their first k bits, and no more.  The unspecified address (all zeros)
  // stays; a v4-mapped v6 address keeps its ::ffff: prefix.
  std::string ip(const std::string& addr);
  uint32_t port(uint32_t p);  // 1:1 on 1..65535 (a keyed permutation); 0 stays 0
  // "127.0.0.1:8000", "[::1]:80", "/run/x.sock", "@abstract": as a
  // FileDesc.socket_addr names an address.
  std::string sock_addr(const std::string& s, bool addresses, bool ports);

  // Every mapping made, original -> replacement, by kind ("word", "ip",
  // "port"), for --map-out.
  const std::map<std::string, std::map<std::string, std::string>>& table() const { return table_; }

 private:
  bool prf_bit(const std::string& domain, const unsigned char* bits, unsigned nbits);
  std::string ip_bits(const std::string& domain, const std::string& a);

  std::string k_word_, k_ip_, k_port_;
  bool all_paths_;
  std::map<std::string, std::string> words_;      // original -> replacement
  std::map<std::string, std::string> taken_;      // replacement -> original
  std::map<std::string, std::string> ips_;
  std::vector<uint16_t> perm_;                    // port permutation, built when first asked
  std::map<std::string, std::map<std::string, std::string>> table_;
};

// ---- the rules (anon.cc) ----------------------------------------------------

// The full name of every field ck-anon has a rule for ("ck.pb.Process.comm").
std::set<std::string> anon_rule_names();
// Every field of every message a Frame can hold, by full name.
std::set<std::string> frame_field_names();

}  // namespace ck
