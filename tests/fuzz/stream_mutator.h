// A structure-aware mutator for ck streams, shared by the fuzz targets that
// read them (LLVMFuzzerCustomMutator).  Random bytes rarely survive the
// framing, and a mutated frame never survives the checksums, so a plain
// byte mutator spends its time in the first hundred lines of the reader.
// This one parses the input into frames and payloads, changes the structure
// (a field of one frame set to an edge value, a frame dropped, duplicated
// or moved, a payload resized or flipped, a run's page count changed), and
// writes it back as a well-formed stream: lengths, digests and the trailer
// recomputed most of the time, so that the reader under test gets to the
// meaning of the frames.  Inputs that do not parse get libFuzzer's own
// byte mutations.
#pragma once
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/reflection.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ck.pb.h"
#include "ck64.h"
#include "stream.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace ckfuzz {

struct Item {
  ck::pb::Frame frame;
  std::string payload;  // PageRun with has_payload: npages * 4096 bytes (or what was there)
};

// Parses as much of a stream as is well-formed.  False when not even the
// magic and one frame are there.
inline bool parse_stream(const uint8_t* data, size_t size, std::vector<Item>* out) {
  if (size < 8 || std::memcmp(data, ck::kMagic, 8) != 0) return false;
  size_t at = 8;
  while (at + 4 <= size) {
    uint32_t len;
    std::memcpy(&len, data + at, 4);
    at += 4;
    if (len > size - at) break;
    Item it;
    if (!it.frame.ParseFromArray(data + at, static_cast<int>(len))) break;
    at += len;
    if (it.frame.has_pages() && it.frame.pages().has_payload()) {
      uint64_t want = uint64_t{it.frame.pages().npages()} * ck::kPageSize;
      size_t n = static_cast<size_t>(std::min<uint64_t>(want, size - at));
      it.payload.assign(reinterpret_cast<const char*>(data + at), n);
      at += n;
    }
    out->push_back(std::move(it));
  }
  return !out->empty();
}

// Writes items back.  fix: page counts follow payload sizes, digests and
// the trailer are recomputed (the trailer always comes last); otherwise the
// frames go out exactly as they are, wrong sums and all.
inline std::string write_stream(std::vector<Item>& items, bool fix) {
  std::string out(ck::kMagic, 8);
  ck::Ck64 sum;
  sum.update(ck::kMagic, 8);
  uint64_t frames = 0, payload = 0;
  bool v11 = true;
  auto put_frame = [&](const std::string& raw) {
    uint32_t len = static_cast<uint32_t>(raw.size());
    out.append(reinterpret_cast<const char*>(&len), 4);
    out += raw;
    sum.update(&len, 4);
    sum.update(raw.data(), raw.size());
  };
  for (auto& it : items) {
    if (fix && it.frame.has_trailer()) continue;
    if (it.frame.has_header()) v11 = ck::has_digests(it.frame.header());
    if (fix && it.frame.has_pages() && it.frame.pages().has_payload()) {
      it.payload.resize(it.payload.size() / ck::kPageSize * ck::kPageSize);
      if (it.payload.empty()) it.payload.assign(ck::kPageSize, '\x5a');
      auto* run = it.frame.mutable_pages();
      run->set_npages(static_cast<uint32_t>(it.payload.size() / ck::kPageSize));
      if (v11) run->set_digest(ck::ck64(it.payload.data(), it.payload.size()));
    }
    put_frame(it.frame.SerializeAsString());
    ++frames;
    if (!it.payload.empty()) {
      out += it.payload;
      payload += it.payload.size();
      if (!v11) sum.update(it.payload.data(), it.payload.size());
    }
  }
  if (fix) {
    ck::pb::Frame t;
    t.mutable_trailer()->set_frames(frames);
    t.mutable_trailer()->set_payload_bytes(payload);
    t.mutable_trailer()->set_checksum(sum.digest());
    put_frame(t.SerializeAsString());
  }
  return out;
}

// Edge values that readers get wrong: zero, one, the top of each width,
// page-size neighbours, and addresses beyond user space.
inline uint64_t edge_value(std::mt19937_64& rng) {
  static const uint64_t kEdge[] = {0,          1,          2,          0x7f,       0xff,        0xfff,
                                   0x1000,     0x1001,     0xffff,     0x10000,    0x7fffffff,  0x80000000,
                                   0xffffffff, 0x100000000, 0x7ffffffff000, 0x800000000000,
                                   0xffffffffffff, 0x7fffffffffffffff, 0x8000000000000000, ~0ull};
  if (rng() % 4 == 0) return rng() >> (rng() % 64);
  return kEdge[rng() % (sizeof kEdge / sizeof kEdge[0])];
}

inline std::string edge_string(std::mt19937_64& rng, const std::string& was) {
  static const char* kEdge[] = {"", "/", "..", "../../../../etc/passwd", "/proc/self/mem", "relative/path",
                                "/tmp/ck-fuzz\n/x", "[vdso]", "/dev/shm/x (deleted)", "anon_inode:[eventfd]",
                                "socket:[1]", "pipe:[1]"};
  switch (rng() % 4) {
    case 0: return kEdge[rng() % (sizeof kEdge / sizeof kEdge[0])];
    case 1: return was + was;
    case 2: return std::string(rng() % 70000, 'A');
    default: {
      std::string s = was;
      if (!s.empty()) s[rng() % s.size()] ^= static_cast<char>(1 << (rng() % 8));
      return s;
    }
  }
}

// Sets one field somewhere inside m (nested messages included) to an edge
// value, or adds or removes an element of a repeated field.
inline void mutate_message(google::protobuf::Message* m, std::mt19937_64& rng, int depth = 0) {
  using google::protobuf::FieldDescriptor;
  const auto* d = m->GetDescriptor();
  const auto* r = m->GetReflection();
  if (d->field_count() == 0) return;
  // A oneof (Frame's body): work inside the one that is set.
  std::vector<const FieldDescriptor*> fields;
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->containing_oneof() && !r->HasField(*m, f) && rng() % 8) continue;
    fields.push_back(f);
  }
  if (fields.empty()) return;
  const FieldDescriptor* f = fields[rng() % fields.size()];
  if (f->is_repeated()) {
    int n = r->FieldSize(*m, f);
    if (n && rng() % 3 == 0) {
      r->RemoveLast(m, f);
      return;
    }
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (n && rng() % 2 && depth < 4) {
        mutate_message(r->MutableRepeatedMessage(m, f, static_cast<int>(rng() % n)), rng, depth + 1);
      } else {
        google::protobuf::Message* e = r->AddMessage(m, f);
        if (n) e->CopyFrom(r->GetRepeatedMessage(*m, f, static_cast<int>(rng() % n)));
        if (depth < 4) mutate_message(e, rng, depth + 1);
      }
      return;
    }
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32: r->AddInt32(m, f, static_cast<int32_t>(edge_value(rng))); break;
      case FieldDescriptor::CPPTYPE_INT64: r->AddInt64(m, f, static_cast<int64_t>(edge_value(rng))); break;
      case FieldDescriptor::CPPTYPE_UINT32: r->AddUInt32(m, f, static_cast<uint32_t>(edge_value(rng))); break;
      case FieldDescriptor::CPPTYPE_UINT64: r->AddUInt64(m, f, edge_value(rng)); break;
      case FieldDescriptor::CPPTYPE_BOOL: r->AddBool(m, f, rng() & 1); break;
      case FieldDescriptor::CPPTYPE_ENUM: r->AddEnumValue(m, f, static_cast<int>(edge_value(rng) % 64)); break;
      case FieldDescriptor::CPPTYPE_STRING: r->AddString(m, f, edge_string(rng, "")); break;
      default: break;
    }
    return;
  }
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (depth < 4) mutate_message(r->MutableMessage(m, f), rng, depth + 1);
      break;
    case FieldDescriptor::CPPTYPE_INT32: r->SetInt32(m, f, static_cast<int32_t>(edge_value(rng))); break;
    case FieldDescriptor::CPPTYPE_INT64: r->SetInt64(m, f, static_cast<int64_t>(edge_value(rng))); break;
    case FieldDescriptor::CPPTYPE_UINT32: r->SetUInt32(m, f, static_cast<uint32_t>(edge_value(rng))); break;
    case FieldDescriptor::CPPTYPE_UINT64: r->SetUInt64(m, f, edge_value(rng)); break;
    case FieldDescriptor::CPPTYPE_BOOL: r->SetBool(m, f, !r->GetBool(*m, f)); break;
    case FieldDescriptor::CPPTYPE_ENUM: r->SetEnumValue(m, f, static_cast<int>(edge_value(rng) % 64)); break;
    case FieldDescriptor::CPPTYPE_STRING: r->SetString(m, f, edge_string(rng, r->GetString(*m, f))); break;
    default: break;
  }
}

// One structural mutation of items.
inline void mutate_items(std::vector<Item>& items, std::mt19937_64& rng) {
  size_t i = rng() % items.size();
  switch (rng() % 8) {
    case 0:
    case 1:
    case 2: mutate_message(&items[i].frame, rng); break;
    case 3:
      if (items.size() > 1) items.erase(items.begin() + static_cast<long>(i));
      break;
    case 4: items.insert(items.begin() + static_cast<long>(rng() % items.size()), items[i]); break;
    case 5: std::swap(items[i], items[rng() % items.size()]); break;
    case 6:  // a payload grows, shrinks or changes
      if (!items[i].payload.empty()) {
        if (rng() % 2)
          items[i].payload.resize(ck::kPageSize * (1 + rng() % 3));
        else
          items[i].payload[rng() % items[i].payload.size()] ^= 1;
      }
      break;
    default: {  // a frame's serialized bytes through the byte mutator
      std::string raw = items[i].frame.SerializeAsString();
      raw.resize(raw.size() + 16);
      size_t n = LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(&raw[0]), raw.size() - 16, raw.size());
      ck::pb::Frame f;
      if (f.ParseFromArray(raw.data(), static_cast<int>(n))) items[i].frame = f;
      break;
    }
  }
}

inline size_t mutate_stream(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::vector<Item> items;
  if (rng() % 16 == 0 || !parse_stream(data, size, &items)) return LLVMFuzzerMutate(data, size, max_size);
  int rounds = 1 + static_cast<int>(rng() % 3);
  for (int k = 0; k < rounds; ++k) mutate_items(items, rng);
  std::string out = write_stream(items, rng() % 8 != 0);
  if (out.size() > max_size) return LLVMFuzzerMutate(data, size, max_size);
  std::memcpy(data, out.data(), out.size());
  return out.size();
}

}  // namespace ckfuzz
