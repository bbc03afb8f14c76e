// ck-crit's output helpers (internal): a small JSON writer for `x --json`,
// and names of kinds without their enum prefix.
#pragma once
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "ck.pb.h"

namespace crit {

// Writes one JSON document; commas and nesting are its business.
// Addresses, flags and masks go out as "0x..." strings (hex()).
class Json {
 public:
  Json& begin_object() { sep(); out_ += '{'; first_.push_back(true); return *this; }
  Json& end_object() { first_.pop_back(); out_ += '}'; return *this; }
  Json& begin_array() { sep(); out_ += '['; first_.push_back(true); return *this; }
  Json& end_array() { first_.pop_back(); out_ += ']'; return *this; }
  Json& key(const std::string& k) { sep(); quote(k); out_ += ": "; keyed_ = true; return *this; }
  Json& str(const std::string& v) { sep(); quote(v); return *this; }
  Json& num(uint64_t v) { sep(); out_ += std::to_string(v); return *this; }
  Json& snum(int64_t v) { sep(); out_ += std::to_string(v); return *this; }
  Json& hex(uint64_t v) { char b[24]; std::snprintf(b, sizeof b, "\"0x%" PRIx64 "\"", v); sep(); out_ += b; return *this; }
  Json& boolean(bool v) { sep(); out_ += v ? "true" : "false"; return *this; }
  Json& null() { sep(); out_ += "null"; return *this; }
  // key and value at once
  Json& kstr(const std::string& k, const std::string& v) { return key(k).str(v); }
  Json& knum(const std::string& k, uint64_t v) { return key(k).num(v); }
  Json& ksnum(const std::string& k, int64_t v) { return key(k).snum(v); }
  Json& khex(const std::string& k, uint64_t v) { return key(k).hex(v); }
  Json& kbool(const std::string& k, bool v) { return key(k).boolean(v); }
  // The document so far, with a newline; clears it.
  std::string take() { std::string s; s.swap(out_); s += '\n'; return s; }

 private:
  void sep() {
    if (keyed_) { keyed_ = false; return; }
    if (first_.empty()) return;
    if (!first_.back()) out_ += ", ";
    first_.back() = false;
  }
  void quote(const std::string& s) {
    out_ += '"';
    for (unsigned char c : s) {
      switch (c) {
        case '"': out_ += "\\\""; break;
        case '\\': out_ += "\\\\"; break;
        case '\n': out_ += "\\n"; break;
        case '\t': out_ += "\\t"; break;
        default:
          if (c < 0x20 || c >= 0x7f) {  // bytes of a path are not UTF-8 by promise: escape them
            char b[8];
            std::snprintf(b, sizeof b, "\\u%04x", c);
            out_ += b;
          } else {
            out_ += static_cast<char>(c);
          }
      }
    }
    out_ += '"';
  }
  std::string out_;
  std::vector<bool> first_;
  bool keyed_ = false;
};

inline std::string file_kind(ck::pb::FileKind k) {
  std::string s = ck::pb::FileKind_Name(k);
  return s.rfind("FILE_", 0) == 0 ? s.substr(5) : s;
}
inline std::string vma_kind(ck::pb::VmaKind k) {
  std::string s = ck::pb::VmaKind_Name(k);
  return s.rfind("VMA_", 0) == 0 ? s.substr(4) : s;
}

}  // namespace crit
