// decode (stream -> JSON) and encode (JSON -> stream), and the frame sources.
//
// The JSON document:
//   {"format": "ck-json 1",
//    "frames": [
//      {"frame": {...}},                        a frame as protobuf JSON
//      {"frame": {...}, "payload": "BASE64"},   a PageRun with its pages
//      {"frame": {...}, "raw": "BASE64"},       a frame JSON cannot carry exactly
//      ...],
//    "trailer": {...}}                          ignored by encode (recomputed)
// In a 1.1 document (header minor >= 1) every page run with payload has its
// "digest"; encode keeps a digest that is there (even a wrong one: that is
// how a corrupt stream is made on purpose) and computes one that is missing
// from the payload (a hand-written or edited document).  Frames given as
// "raw" go out exactly as they are.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/type_resolver_util.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cstring>
#include <vector>

#include "crit.h"
#include "error.h"
#include "fd.h"
#include "image.h"
#include "stream.h"

namespace crit {

using ck::bad_input;
using ck::strf;
namespace pb = ck::pb;
namespace pu = google::protobuf::util;

// ---- sources --------------------------------------------------------------

namespace {

class StreamSource : public Source {
 public:
  StreamSource(int fd, const std::string& name) : r_(fd, name) {}
  bool next(pb::Frame* f) override { return r_.next(f); }
  const std::string& raw() const override { return r_.raw(); }
  uint64_t payload_left() const override { return r_.payload_left(); }
  void read_payload(void* dst, size_t len) override { r_.read_payload(dst, len); }
  const pb::Trailer& trailer() const override { return r_.trailer(); }

 private:
  ck::StreamReader r_;
};

// An image set.  Its checksum needs every frame and every payload checked:
// when the caller read every payload itself (through read_payload, which
// checks each against its digest), the frame checksum is summed on the way
// and verify() does not read the pages a second time (diff, mem, decode
// of a 1.1 or later image that is not a chain); otherwise ImageSet::verify
// reads the whole image.
class ImageSource : public Source {
 public:
  explicit ImageSource(const std::string& dir) : im_(ck::ImageSet::open(dir)) {
    on_the_way_ = im_.chain_length() == 1 && ck::has_digests(im_.header());
    sum_.update(ck::kMagic, sizeof ck::kMagic);
  }
  bool next(pb::Frame* f) override {
    if (im_.payload_left()) on_the_way_ = false;  // a payload the caller skipped
    bool ok = im_.next(f);
    if (ok) {
      uint32_t n = static_cast<uint32_t>(im_.raw().size());
      unsigned char le[4] = {static_cast<unsigned char>(n), static_cast<unsigned char>(n >> 8),
                             static_cast<unsigned char>(n >> 16), static_cast<unsigned char>(n >> 24)};
      sum_.update(le, 4);
      sum_.update(im_.raw().data(), im_.raw().size());
    } else {
      done_ = true;
    }
    return ok;
  }
  const std::string& raw() const override { return im_.raw(); }
  uint64_t payload_left() const override { return im_.payload_left(); }
  void read_payload(void* dst, size_t len) override { im_.read_payload(dst, len); }
  const pb::Trailer& trailer() const override { return im_.trailer(); }
  void verify() override {
    if (!on_the_way_ || !done_) return im_.verify();
    if (sum_.digest() != im_.trailer().checksum())
      ck::bad_input("image '" + im_.dir() + "' is corrupt: checksum mismatch (page or frame data changed)");
  }

 private:
  ck::ImageSet im_;
  ck::Ck64 sum_;
  bool on_the_way_ = false, done_ = false;
};

void out(const std::string& s) { ck::write_full(1, s.data(), s.size()); }

// Map entries in key order, so that decode and encode agree on the bytes.
std::string serialize(const pb::Frame& f) {
  std::string s;
  {
    google::protobuf::io::StringOutputStream sos(&s);
    google::protobuf::io::CodedOutputStream cos(&sos);
    cos.SetSerializationDeterministic(true);
    f.SerializeToCodedStream(&cos);
  }
  return s;
}

}  // namespace

std::unique_ptr<Source> open_source(const std::string& dir) {
  if (!dir.empty() && dir != "-") return std::make_unique<ImageSource>(dir);
  if (isatty(0)) ck::usage_error("refusing to read a stream from a terminal (pipe one in, or use -D DIR)");
  return stream_source(0);
}

std::unique_ptr<Source> stream_source(int fd, const std::string& name) { return std::make_unique<StreamSource>(fd, name); }

// ---- decode ---------------------------------------------------------------

int decode(Source& s) {
  pu::JsonPrintOptions po;
  po.preserve_proto_field_names = true;
  pb::Frame f, back;
  std::unique_ptr<pu::TypeResolver> resolver(pu::NewTypeResolverForDescriptorPool(
      "type.googleapis.com", google::protobuf::DescriptorPool::generated_pool()));
  const std::string kFrameType = "type.googleapis.com/" + pb::Frame::descriptor()->full_name();
  std::string json, text;
  std::vector<char> chunk;
  uint64_t n = 0;
  // The document goes out frame by frame: memory stays bounded by one frame
  // (and a 3 MiB piece of its payload).
  std::string buf = "{\"format\": \"ck-json 1\",\n \"frames\": [";
  while (s.next(&f)) {
    // From the bytes as they are, so that map entries keep their wire order
    // and the document does not depend on hash seeds.
    json.clear();
    auto st = pu::BinaryToJsonString(resolver.get(), kFrameType, s.raw(), &json, po);
    if (!st.ok()) {
      json.clear();
      st = pu::MessageToJsonString(f, &json, po);
    }
    if (!st.ok()) bad_input(strf("frame %" PRIu64 ": unable to convert to JSON: %s", n, st.ToString().c_str()));
    buf += n ? ",\n" : "\n";
    buf += "  {\"frame\": " + json;
    // Keep the exact bytes when the JSON does not give them back (unknown
    // fields or kinds, map order).
    back.Clear();
    if (!pu::JsonStringToMessage(json, &back).ok() || serialize(back) != s.raw())
      buf += ", \"raw\": \"" + base64(s.raw().data(), s.raw().size()) + "\"";
    if (f.has_pages() && f.pages().has_payload()) {
      buf += ", \"payload\": \"";
      out(buf);
      buf.clear();
      if (chunk.empty()) chunk.resize(3 << 20);
      while (s.payload_left()) {
        size_t k = std::min<uint64_t>(s.payload_left(), chunk.size());
        s.read_payload(chunk.data(), k);
        out(base64(chunk.data(), k));
      }
      buf += "\"";
    }
    buf += "}";
    ++n;
    if (buf.size() > (1 << 20)) {
      out(buf);
      buf.clear();
    }
  }
  s.verify();
  json.clear();
  pu::MessageToJsonString(s.trailer(), &json, po);
  buf += "\n ],\n \"trailer\": " + json + "}\n";
  out(buf);
  return 0;
}

// ---- encode ---------------------------------------------------------------

namespace {

constexpr size_t kMaxValue = size_t{1} << 32;  // one JSON value (a payload)

// A streaming reader of just enough JSON for the document above.
class JsonIn {
 public:
  explicit JsonIn(int fd) : fd_(fd), buf_(1 << 16) {}

  int peek() {
    if (pos_ == end_) {
      ssize_t n;
      do n = ::read(fd_, buf_.data(), buf_.size());
      while (n < 0 && errno == EINTR);
      if (n < 0) ck::throw_errno("stdin: unable to read");
      if (n == 0) return -1;
      pos_ = 0;
      end_ = static_cast<size_t>(n);
    }
    return static_cast<unsigned char>(buf_[pos_]);
  }
  int get() {
    int c = peek();
    if (c >= 0) {
      ++pos_;
      ++off_;
    }
    return c;
  }
  int ws() {
    int c;
    while ((c = peek()) == ' ' || c == '\n' || c == '\t' || c == '\r') get();
    return c;
  }
  [[noreturn]] void bad(const std::string& why) { bad_input(strf("stdin: bad JSON at byte %" PRIu64 ": ", off_) + why); }
  void expect(char want) {
    int c = ws();
    if (c != want) bad(c < 0 ? strf("ends early, expected '%c'", want) : strf("expected '%c'", want));
    get();
  }
  // A string value, unescaped.
  std::string string() {
    expect('"');
    std::string s;
    for (;;) {
      int c = get();
      if (c < 0) bad("ends inside a string");
      if (c == '"') return s;
      if (c < 0x20) bad("control character in a string");
      if (s.size() >= kMaxValue) bad("string too long");
      if (c != '\\') {
        s += static_cast<char>(c);
        continue;
      }
      c = get();
      switch (c) {
        case '"': case '\\': case '/': s += static_cast<char>(c); break;
        case 'b': s += '\b'; break;
        case 'f': s += '\f'; break;
        case 'n': s += '\n'; break;
        case 'r': s += '\r'; break;
        case 't': s += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xd800 && cp < 0xdc00) {
            if (get() != '\\' || get() != 'u') bad("lone surrogate");
            uint32_t lo = hex4();
            if (lo < 0xdc00 || lo >= 0xe000) bad("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else if (cp >= 0xdc00 && cp < 0xe000) {
            bad("lone surrogate");
          }
          utf8(cp, &s);
          break;
        }
        default: bad("bad escape in a string");
      }
    }
  }
  // The text of any value, as it is (for protobuf's JSON parser).
  std::string capture() {
    std::string s;
    int c = ws();
    if (c == '"') {
      raw_string(&s);
      return s;
    }
    if (c == '{' || c == '[') {
      int depth = 0;
      do {
        c = peek();
        if (c < 0) bad("ends inside a value");
        if (c == '"') {
          raw_string(&s);
          continue;
        }
        get();
        s += static_cast<char>(c);
        if (c == '{' || c == '[') ++depth;
        if (c == '}' || c == ']') --depth;
        if (s.size() > kMaxValue) bad("value too long");
      } while (depth > 0);
      return s;
    }
    while ((c = peek()) >= 0 && (std::isalnum(c) || c == '-' || c == '+' || c == '.')) {
      s += static_cast<char>(get());
      if (s.size() > 64) bad("value too long");
    }
    if (s.empty()) bad("expected a value");
    return s;
  }

 private:
  uint32_t hex4() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      int c = get();
      int d = std::isdigit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
      if (d < 0) bad("bad \\u escape");
      v = v << 4 | static_cast<uint32_t>(d);
    }
    return v;
  }
  static void utf8(uint32_t cp, std::string* s) {
    if (cp < 0x80) {
      *s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *s += static_cast<char>(0xc0 | cp >> 6);
      *s += static_cast<char>(0x80 | (cp & 63));
    } else if (cp < 0x10000) {
      *s += static_cast<char>(0xe0 | cp >> 12);
      *s += static_cast<char>(0x80 | ((cp >> 6) & 63));
      *s += static_cast<char>(0x80 | (cp & 63));
    } else {
      *s += static_cast<char>(0xf0 | cp >> 18);
      *s += static_cast<char>(0x80 | ((cp >> 12) & 63));
      *s += static_cast<char>(0x80 | ((cp >> 6) & 63));
      *s += static_cast<char>(0x80 | (cp & 63));
    }
  }
  void raw_string(std::string* s) {
    *s += static_cast<char>(get());  // the quote
    for (;;) {
      int c = get();
      if (c < 0) bad("ends inside a string");
      *s += static_cast<char>(c);
      if (s->size() > kMaxValue) bad("value too long");
      if (c == '"') return;
      if (c == '\\') {
        c = get();
        if (c < 0) bad("ends inside a string");
        *s += static_cast<char>(c);
      }
    }
  }

  int fd_;
  std::vector<char> buf_;
  size_t pos_ = 0, end_ = 0;
  uint64_t off_ = 0;
};

}  // namespace

int encode(int in_fd, int out_fd) {
  if (isatty(in_fd)) ck::usage_error("refusing to read JSON from a terminal (pipe it in)");
  JsonIn in(in_fd);
  ck::RawStreamOut w(out_fd);
  uint64_t n = 0;
  bool seen_frames = false;
  bool digests = false;  // the header says 1.1
  auto element = [&] {
    std::string frame_json, raw, payload;
    bool has_frame = false, has_raw = false, has_payload = false;
    in.expect('{');
    if (in.ws() == '}') in.bad(strf("frame %" PRIu64 " is empty", n));
    for (;;) {
      std::string key = in.string();
      in.expect(':');
      if (key == "frame" && !has_frame) {
        frame_json = in.capture();
        has_frame = true;
      } else if (key == "raw" && !has_raw) {
        if (!unbase64(in.string(), &raw)) bad_input(strf("frame %" PRIu64 ": raw is not valid base64", n));
        has_raw = true;
      } else if (key == "payload" && !has_payload) {
        if (!unbase64(in.string(), &payload)) bad_input(strf("frame %" PRIu64 ": payload is not valid base64", n));
        has_payload = true;
      } else {
        in.bad(strf("frame %" PRIu64 ": unexpected key '%s'", n, key.c_str()));
      }
      if (in.ws() == ',') {
        in.get();
        continue;
      }
      in.expect('}');
      break;
    }
    pb::Frame f;
    if (has_raw) {
      if (raw.size() > ck::kMaxFrame) bad_input(strf("frame %" PRIu64 ": over the %u byte limit", n, ck::kMaxFrame));
      if (!f.ParseFromString(raw)) bad_input(strf("frame %" PRIu64 ": raw does not parse", n));
    } else if (has_frame) {
      auto st = pu::JsonStringToMessage(frame_json, &f);
      if (!st.ok()) bad_input(strf("frame %" PRIu64 ": %s", n, st.ToString().c_str()));
      raw = serialize(f);
    } else {
      bad_input(strf("frame %" PRIu64 ": neither \"frame\" nor \"raw\"", n));
    }
    if (n == 0) {
      if (!f.has_header()) bad_input("the first frame is not a header");
      digests = ck::has_digests(f.header());
      w.magic();
    } else if (f.has_header()) {
      bad_input(strf("frame %" PRIu64 ": a second header", n));
    }
    if (f.has_trailer()) bad_input(strf("frame %" PRIu64 ": a trailer among the frames (encode computes it)", n));
    bool wants = f.has_pages() && f.pages().has_payload();
    if (wants && !has_payload) bad_input(strf("frame %" PRIu64 ": page run without its payload", n));
    if (!wants && has_payload) bad_input(strf("frame %" PRIu64 ": payload on a frame that carries none", n));
    if (f.has_pages()) {
      if (f.pages().npages() == 0) bad_input(strf("frame %" PRIu64 ": page run of zero pages", n));
      if (f.pages().addr() % ck::kPageSize) bad_input(strf("frame %" PRIu64 ": page run address not page aligned", n));
    }
    if (wants && payload.size() != uint64_t{f.pages().npages()} * ck::kPageSize)
      bad_input(strf("frame %" PRIu64 ": payload of %zu bytes, the run needs %" PRIu64, n, payload.size(),
                     uint64_t{f.pages().npages()} * ck::kPageSize));
    if (wants && digests && !has_raw && !f.pages().has_digest()) {
      f.mutable_pages()->set_digest(ck::ck64(payload.data(), payload.size()));
      raw = serialize(f);
    }
    if (raw.size() > ck::kMaxFrame) bad_input(strf("frame %" PRIu64 ": over the %u byte limit", n, ck::kMaxFrame));
    w.frame(raw);
    if (wants) w.payload(payload.data(), payload.size());
    ++n;
  };

  in.expect('{');
  if (in.ws() == '}') {
    in.get();
  } else {
    for (;;) {
      std::string key = in.string();
      in.expect(':');
      if (key == "frames" && !seen_frames) {
        seen_frames = true;
        in.expect('[');
        if (in.ws() == ']') {
          in.get();
        } else {
          for (;;) {
            element();
            if (in.ws() == ',') {
              in.get();
              continue;
            }
            in.expect(']');
            break;
          }
        }
      } else if (key == "frames") {
        in.bad("a second \"frames\"");
      } else {
        in.capture();  // "format", "trailer": informative only
      }
      if (in.ws() == ',') {
        in.get();
        continue;
      }
      in.expect('}');
      break;
    }
  }
  if (in.ws() >= 0) in.bad("data after the JSON document");
  if (n == 0) bad_input("stdin: no frames (a stream needs at least a header)");
  w.finish();
  return 0;
}

}  // namespace crit
