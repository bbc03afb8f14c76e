// /proc/PID/maps and smaps parsing: every field, every kind, VmFlags, and
// malformed input refused with status 3; read_vmas on a live child of this process.
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "error.h"
#include "fd.h"
#include "test.h"
#include "vma.h"

using namespace ck;

static const char kSmaps[] =
    "55fc6a2d8000-55fc6a2d9000 r--p 00000000 fe:00 5308593                    /work/bin/counter\n"
    "Size:                  4 kB\n"
    "Rss:                   4 kB\n"
    "VmFlags: rd mr mw me sd \n"
    "55fc6a2dc000-55fc6a2dd000 rw-p 00003000 fe:00 5308593                    /work/bin/counter\n"
    "VmFlags: rd wr mr mw me ac sd\n"
    "55fc6b000000-55fc6b021000 rw-p 00000000 00:00 0                          [heap]\n"
    "7f0000000000-7f0000400000 rw-s 00000000 00:01 1234                       /dev/zero (deleted)\n"
    "7f0000400000-7f0000500000 rw-s 00000000 00:01 2048                       /SYSV00000000 (deleted)\n"
    "7f0000500000-7f0000600000 rw-s 00001000 00:01 77                         /memfd:buf (deleted)\n"
    "7f0000600000-7f0000700000 rw-p 00000000 00:00 0 \n"
    "7f0000700000-7f0000701000 ---p 00000000 00:00 0                          [anon:guard]\n"
    "7f0000800000-7f0000900000 rw-s 00000000 08:02 99                         /tmp/a file with spaces\n"
    "7ffd1000000-7ffd1021000 rw-p 00000000 00:00 0                            [stack]\n"
    "7ffd2000000-7ffd2004000 r--p 00000000 00:00 0                            [vvar]\n"
    "7ffd2004000-7ffd2006000 r--p 00000000 00:00 0                            [vvar_vclock]\n"
    "7ffd2006000-7ffd2008000 r-xp 00000000 00:00 0                            [vdso]\n"
    "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n";

TEST(parses_every_field) {
  auto v = parse_maps(kSmaps);
  CHECK_EQ(v.size(), 14u);
  if (v.size() != 14) return;
  CHECK_EQ(v[0].start(), 0x55fc6a2d8000u);
  CHECK_EQ(v[0].end(), 0x55fc6a2d9000u);
  CHECK_EQ(v[0].prot(), static_cast<uint32_t>(PROT_READ));
  CHECK_EQ(v[0].flags(), static_cast<uint32_t>(MAP_PRIVATE));
  CHECK_EQ(v[0].dev(), makedev(0xfe, 0));
  CHECK_EQ(v[0].ino(), 5308593u);
  CHECK_EQ(v[0].path(), "/work/bin/counter");
  CHECK_EQ(v[0].kind(), pb::VMA_FILE_PRIVATE);
  CHECK_EQ(v[0].vmflags(), "rd mr mw me sd");
  CHECK_EQ(v[1].pgoff(), 0x3000u);
  CHECK_EQ(v[1].prot(), static_cast<uint32_t>(PROT_READ | PROT_WRITE));
  CHECK_EQ(v[1].vmflags(), "rd wr mr mw me ac sd");
  CHECK_EQ(v[2].kind(), pb::VMA_HEAP);
  CHECK_EQ(v[2].vmflags(), "");
  CHECK_EQ(v[3].kind(), pb::VMA_SHARED_ANON);
  CHECK_EQ(v[3].flags(), static_cast<uint32_t>(MAP_SHARED));
  CHECK_EQ(v[3].dev(), makedev(0, 1));
  CHECK_EQ(v[4].kind(), pb::VMA_SYSV_SHM);
  CHECK_EQ(v[5].kind(), pb::VMA_MEMFD);
  CHECK_EQ(v[5].pgoff(), 0x1000u);
  CHECK_EQ(v[6].kind(), pb::VMA_ANON);
  CHECK_EQ(v[6].path(), "");
  CHECK_EQ(v[7].kind(), pb::VMA_ANON);
  CHECK_EQ(v[7].prot(), 0u);
  CHECK_EQ(v[8].kind(), pb::VMA_FILE_SHARED);
  CHECK_EQ(v[8].path(), "/tmp/a file with spaces");
  CHECK_EQ(v[9].kind(), pb::VMA_STACK);
  CHECK_EQ(v[10].kind(), pb::VMA_VVAR);
  CHECK_EQ(v[11].kind(), pb::VMA_VVAR_VCLOCK);
  CHECK_EQ(v[12].kind(), pb::VMA_VDSO);
  CHECK_EQ(v[13].kind(), pb::VMA_VSYSCALL);
  CHECK_EQ(v[13].start(), 0xffffffffff600000u);
  CHECK_EQ(v[13].prot(), static_cast<uint32_t>(PROT_EXEC));
  CHECK_EQ(format_vma(v[0]), "55fc6a2d8000-55fc6a2d9000 r--p 00000000 fe:00 5308593 /work/bin/counter");
  CHECK_EQ(format_vma(v[6]), "7f0000600000-7f0000700000 rw-p 00000000 00:00 0");
}

TEST(which_vmas_have_contents) {
  auto v = parse_maps(kSmaps);
  CHECK_EQ(v.size(), 14u);
  if (v.size() != 14) return;
  CHECK(vma_has_private_pages(v[0]));   // file private: COW pages
  CHECK(vma_has_private_pages(v[2]));   // heap
  CHECK(!vma_has_private_pages(v[3]));  // shared anon: as an object
  CHECK(vma_is_shmem_object(v[3]));
  CHECK(vma_is_shmem_object(v[4]));
  CHECK(vma_is_shmem_object(v[5]));
  CHECK(!vma_is_shmem_object(v[8]));    // a shared file: its pages are the file's
  CHECK(!vma_has_private_pages(v[8]));
  for (int i = 10; i <= 13; ++i) CHECK(!vma_has_private_pages(v[i]) && !vma_is_shmem_object(v[i]));
}

TEST(malformed_input_is_bad_input) {
  CHECK_EQ(parse_maps("Rss: 4 kB\nzzzz-1000 rw-p 0 00:00 0\n").size(), 0u);  // not headers: skipped
  CHECK_THROWS(parse_maps("1000-2000 rw-p\n"), 3, "too few fields");
  CHECK_THROWS(parse_maps("2000-1000 rw-p 0 00:00 0\n"), 3, "bad address range");
  CHECK_THROWS(parse_maps("1000-2000 rw 0 00:00 0\n"), 3, "bad permissions");
  CHECK_THROWS(parse_maps("1000-2000 rw-p 0 0000 0\n"), 3, "bad device");
  CHECK_THROWS(parse_maps("1000-2000 rw-p 0 00:00 x1\n"), 3, "bad inode");
  CHECK_THROWS(parse_maps("VmFlags: rd\n"), 3, "VmFlags before any mapping");
  CHECK_EQ(parse_maps("").size(), 0u);
}

TEST(reads_a_live_process) {
  void* p = mmap(nullptr, 3 * 4096, PROT_READ, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CHECK(p != MAP_FAILED);
  // A child of this process, blocked in read(2): its mappings stay as they
  // are while it is read.  (This process's own would not: each read
  // allocates, and ASan's allocator maps and unmaps as it goes.)
  int go[2];
  CHECK(pipe(go) == 0);
  pid_t child = fork();
  if (child == 0) {
    char c;
    close(go[1]);
    _exit(read(go[0], &c, 1) < 0 ? 1 : 0);
  }
  close(go[0]);
  std::string maps = read_file(strf("/proc/%d/maps", child));
  auto v = read_vmas(child);
  std::string after = read_file(strf("/proc/%d/maps", child));
  close(go[1]);
  int st;
  waitpid(child, &st, 0);
  CHECK(maps == after);
  size_t lines = 0;
  for (char c : maps) lines += c == '\n';
  CHECK_EQ(v.size(), lines);
  bool found = false, exe = false;
  for (auto& x : v) {
    CHECK(!x.vmflags().empty());
    if (x.start() == reinterpret_cast<uint64_t>(p)) {
      found = true;
      CHECK_EQ(x.kind(), pb::VMA_SHARED_ANON);
      CHECK_EQ(x.end() - x.start(), 3u * 4096);
      CHECK(x.vmflags().find("sh") != std::string::npos);
    }
    if (x.kind() == pb::VMA_FILE_PRIVATE && x.path().find("vma_test") != std::string::npos) {
      exe = true;
      CHECK(x.file_size() > 0);
      CHECK(x.file_mtime_ns() > 0);
    }
  }
  CHECK(found);
  CHECK(exe);
  munmap(p, 3 * 4096);
}

TEST(missing_pid_names_it) { CHECK_THROWS(read_vmas(999999), 1, "pid 999999: no such process"); }

UNIT_MAIN()
