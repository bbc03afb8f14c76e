// The image directory: a stream stored in a directory so that page runs can
// be read at random (pread) or mmapped.  See man/ck-store.1.
//
//   DIR/frames.img  the stream with every page payload cut out: the magic,
//                   then each frame as on the wire (u32 LE length + bytes),
//                   the trailer frame last.  Byte-exact copies of the input.
//   DIR/pages.img   the page payloads, concatenated in stream order.  Each is
//                   a whole number of pages, so each starts page-aligned; the
//                   offset of a run is the sum of the payloads before it.
//   DIR/manifest    written last; an image without it does not exist:
//                     ck-image 1
//                     frames.img SIZE CK64
//                     pages.img SIZE
//                     checksum CK64          (the stream trailer's checksum)
//
// Put writes temporary files and renames them in place only after the whole
// input stream (its trailer checksum included) has been verified.
//
// Incremental image sets (pre-dump rounds): `ck-store put --parent PREV`
// also writes DIR/parent (before the manifest), one line: PREV's absolute
// path.  Opening such a DIR opens the whole chain and presents it as one
// image: the frames of the newest round, and after each process's own page
// runs, the runs of older rounds that still count (inside the newest
// layout, not carried by a newer round, not in a range a newer round marked
// "fresh" with a ck-memread Note, not past a round where the process did
// not exist or a round that is not incremental).  Those runs keep their
// PageRun.round; their payloads come from the older rounds' pages.img
// (pages_fd() and payload_offset() name the current run's file).
//
// Every link of a chain is checked when it is opened (and by put --parent):
// each round names the round it was computed against and the dump (the
// tracking) it belongs to (Header.round, format 1.3), and must lie on a
// chain that holds that round, on older rounds of the same dump only.  A
// chain whose rounds name nothing (stored by a 1.2 or older writer) is refused.
//
// Frames are kept as they came, so a 1.1 or later image holds the digest of
// each payload in its PageRun frame and a 1.0 image (stored as it was put,
// not converted) none.  A chain presents itself in the version of its
// newest image, as a whole image (not incremental, computed against no
// round).  A run of an older round that is presented whole keeps its stored
// digest; one presented in part (a newer round replaced some of its pages)
// gets the digest of each part, computed in one read of the whole stored
// run that first checks the stored digest (status 3 if it does not match),
// when next() returns its first part.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ck.pb.h"
#include "ck64.h"
#include "fd.h"
#include "stream.h"

namespace ck {

constexpr char kFramesFile[] = "frames.img";
constexpr char kPagesFile[] = "pages.img";
constexpr char kManifestFile[] = "manifest";
constexpr uint32_t kImageVersion = 1;

// Stores the stream read from r into dir (created if missing, mode 0700).
// Refuses (status 1) when dir already holds an image unless replace.  On any
// error nothing is left in dir but what was there before.
// parent: the image this one is a round on top of (empty: none).
// Returns the stream's header.  With parent, the stream must be a pre-dump
// round that fits on parent's chain (check_round_link); without, it must not
// be an incremental one.
pb::Header stream_to_image(StreamReader& r, const std::string& dir, bool replace = false, const std::string& parent = "");
constexpr char kParentFile[] = "parent";

// ck-store put (store_tool.cc): stream_to_image of the stream on in_fd,
// through the restorability check (restorable.h): a dump that ck-restore
// would refuse fails (status 1, naming what) and stores nothing.  Returns
// the stream's header, as stream_to_image.
pb::Header store_put(int in_fd, const std::string& dir, bool replace = false, const std::string& parent = "");
// The same check in front of any sink (the store service's, store_service.cc):
// sink reads the stream from the reader, which has the restorability check
// set as its inspector (frames it refuses throw out of next()).
pb::Header store_put_checked(int in_fd, const std::function<pb::Header(StreamReader&)>& sink);
// Fails as put would on dir (it holds an image and !replace, it is no
// directory, it cannot be written or created), reading nothing: a
// pipeline checks first, before it freezes anything.
void check_image_dir(const std::string& dir, bool replace);
constexpr int kMaxChain = 256;

// Pre-dump rounds (format 1.3).  names_round: h names its round (1.3 or
// later, Header.round set).  round_name: "round 3 of dump 5f2c9a1e7b3d4c08";
// round_id: "5f2c9a1e7b3d4c08:3", what ck-store put prints and ck-memread
// --since takes.
bool names_round(const pb::Header& h);
std::string round_name(const pb::Header& h);
std::string round_id(const pb::Header& h);
// Refuses (status 3, naming both rounds) a round `child` ("the stream",
// "image 'DIR'") with header h on the chain of parent, whose headers are
// chain (the parent's first): h must be an incremental round of the same
// dump, newer than the parent, computed against a round of that chain.
void check_round_link(const std::string& child, const pb::Header& h, const std::string& parent,
                      const std::vector<pb::Header>& chain);

// Writes the stream stored in dir to out_fd, byte-identical to the one that
// was put.  A corrupt image gives status 3; the trailer is then not written,
// so a reader downstream sees a truncated stream too.
void image_to_stream(const std::string& dir, int out_fd);

// An image set opened for reading; validated on open (status 3 when not an
// image, corrupt, or of a newer version).
class ImageSet {
 public:
  static ImageSet open(const std::string& dir);
  ImageSet(ImageSet&&) = default;
  ImageSet& operator=(ImageSet&&) = default;
  ~ImageSet();
  // Images in the chain (1: not incremental), newest first.
  size_t chain_length() const { return 1 + parents_.size(); }
  const std::string& chain_dir(size_t i) const { return i ? parents_[i - 1]->dir_ : dir_; }
  const pb::Header& chain_header(size_t i) const { return i ? parents_[i - 1]->header_ : header_; }

  // Frames in stream order, header first, the trailer not included.
  bool next(pb::Frame* f);
  void rewind();
  const std::string& raw() const { return raw_; }  // the last frame, serialized
  // For the last PageRun with payload returned by next(): where its payload
  // starts in pages.img, and its length in bytes.
  uint64_t payload_offset() const { return payload_off_; }
  uint64_t payload_size() const { return payload_len_; }
  // Sequential reading of that payload, like StreamReader::read_payload:
  // the read that takes its last byte checks the payload against the run's
  // digest (status 3 when it differs).
  void read_payload(void* dst, size_t len);
  uint64_t payload_left() const { return payload_left_; }
  // pread of pages.img, exact or status 3.
  void read_pages(void* dst, size_t len, uint64_t off) const;

  int pages_fd() const { return cur_fd_ >= 0 ? cur_fd_ : pages_.get(); }
  // The image whose pages.img that is (a parent's, for a run of an older round).
  const std::string& payload_dir() const { return cur_dir_ ? *cur_dir_ : dir_; }
  uint64_t pages_size() const { return pages_size_; }
  const pb::Header& header() const { return header_; }
  const pb::Trailer& trailer() const { return trailer_; }
  const std::string& trailer_raw() const { return trailer_raw_; }
  const std::string& dir() const { return dir_; }

  // Reads every page and recomputes the stream checksum with the semantics
  // of the image's version (1.1: frames only, each payload against its
  // digest; 1.0: frames and payloads); status 3 when something does not
  // match (each image of a chain against its own trailer).  Rewinds.
  void verify();

 private:
  ImageSet() = default;
  static ImageSet open_one(const std::string& dir);
  bool next_own(pb::Frame* f);
  void end_block();  // queues the older rounds' runs of block_pid_
  struct Saved {
    std::string raw;
    uint64_t off, len, left;
    pb::PageRun run;        // the run of a frame with payload (else empty)
    int partial = -1;       // a part of a stored run: its partials_ entry
    int part = 0;           // and which part
  };
  // A stored run of an older round that goes out in parts.
  struct Partial {
    size_t level = 0;
    pb::PageRun stored;     // as it was stored (for messages)
    uint64_t off = 0;       // in that round's pages.img
    bool has_digest = false;
    uint64_t digest = 0;
    std::vector<std::pair<uint64_t, uint64_t>> parts;  // (offset in the run, length)
    std::vector<uint64_t> part_digests;
    bool checked = false;
  };
  struct RunRef {
    uint64_t addr, npages, off;
    uint32_t round;
    bool payload;
    bool has_digest;
    uint64_t digest;
  };
  void set_current(const Saved& sv);
  void check_partial(Partial& pt);
  struct Level {  // what an older round holds, per pid
    bool incremental = false;
    std::map<uint32_t, std::vector<RunRef>> runs;
    std::map<uint32_t, std::vector<std::pair<uint64_t, uint64_t>>> fresh;
    std::set<uint32_t> has_mm;
  };
  std::vector<std::unique_ptr<ImageSet>> parents_;
  std::vector<Level> levels_;
  int cur_fd_ = -1;
  const std::string* cur_dir_ = nullptr;
  std::vector<Partial> partials_;  // of the block being presented
  bool have_look_ = false, look_ok_ = false;
  pb::Frame look_;
  Saved look_saved_;
  uint32_t block_pid_ = 0;
  std::vector<pb::Vma> block_vmas_;
  std::map<uint64_t, uint64_t> covered_;
  std::vector<std::pair<pb::Frame, Saved>> pending_;
  size_t pending_at_ = 0;
  std::vector<size_t> pending_level_;
  bool read_frame(std::string* out);  // false at end of frames.img
  void fill(void* dst, size_t len, const char* where);
  [[noreturn]] void corrupt(const std::string& why) const;

  std::string dir_;
  ScopedFd frames_, pages_;
  uint64_t frames_size_ = 0, pages_size_ = 0;
  ReadBuffer in_{256 << 10};  // over frames.img
  uint64_t off_ = 0;  // read offset in frames.img
  std::string raw_, trailer_raw_;
  pb::Header header_;
  pb::Trailer trailer_;
  uint64_t frames_read_ = 0;
  bool done_ = false;
  uint64_t next_payload_ = 0;  // offset of the next payload in pages.img
  uint64_t payload_off_ = 0, payload_len_ = 0, payload_left_ = 0;
  bool digests_ = false;  // the header says 1.1: payload runs carry digests
  pb::PageRun run_;       // the current payload's run
  bool check_run_ = false;
  Ck64 run_sum_;
  std::vector<char> dbuf_;  // for check_partial
  bool checked_whole_ = false;  // verify() passed (a 1.0 round of a chain)
};

// Writes a stream from raw parts, byte-exact: the magic, serialized frames,
// page payloads, and either a computed trailer or a stored one.  The
// checksum follows the version the first frame (the header) names: 1.1
// leaves payloads out, 1.0 takes them in.  Digests are the caller's.
class RawStreamOut {
 public:
  explicit RawStreamOut(int fd);  // refuses (status 2) a terminal
  void magic();
  void frame(const std::string& raw);
  void payload(const void* p, size_t n);
  void finish();                                   // a trailer from the counts
  void finish_with(const std::string& raw_trailer);  // a stored trailer frame
  uint64_t frames() const { return frames_; }
  uint64_t payload_bytes() const { return payload_; }
  uint64_t checksum() const { return sum_.digest(); }

 private:
  void put(const void* p, size_t n, bool sum = true);
  void flush();
  int fd_;
  std::vector<char> buf_;
  size_t len_ = 0;
  uint64_t frames_ = 0, payload_ = 0;
  bool payload_in_sum_ = false;
  Ck64 sum_;
};

}  // namespace ck
