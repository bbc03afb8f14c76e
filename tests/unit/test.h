// A minimal unit-test harness: CHECK records a failure and goes on; main()
// runs every TEST and prints "ok"/"not ok" lines (TAP) for tests/run-all.
#pragma once
#include <fcntl.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

struct UnitTest {
  const char* name;
  std::function<void()> fn;
};
inline std::vector<UnitTest>& unit_tests() {
  static std::vector<UnitTest> t;
  return t;
}
inline int& unit_failures() {
  static int n = 0;
  return n;
}
struct UnitReg {
  UnitReg(const char* n, std::function<void()> f) { unit_tests().push_back({n, std::move(f)}); }
};
#define TEST(name)                                  \
  static void name();                               \
  static UnitReg name##_reg(#name, name);           \
  static void name()
#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::printf("#   %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);   \
      ++unit_failures();                                                         \
    }                                                                            \
  } while (0)
#define CHECK_EQ(a, b) CHECK((a) == (b))
#define CHECK_THROWS(expr, want_status, substr)                                       \
  do {                                                                           \
    bool thrown_ = false;                                                        \
    try {                                                                        \
      expr;                                                                      \
    } catch (const ck::Error& e_) {                                              \
      thrown_ = true;                                                            \
      CHECK_EQ(e_.status(), want_status);                                             \
      if (std::string(e_.what()).find(substr) == std::string::npos) {            \
        std::printf("#   message was: %s\n", e_.what());                         \
        std::printf("#   %s:%d: message lacks %s\n", __FILE__, __LINE__,         \
                    std::string(substr).c_str());                                \
        ++unit_failures();                                                       \
      }                                                                          \
    }                                                                            \
    CHECK(thrown_);                                                              \
  } while (0)

inline int run_unit_tests() {
  // CI may start us with stdin or stderr closed; tests count the fds their
  // children inherit, so give 0..2 a file as a shell would (open takes the
  // lowest free number, so this fills exactly the closed ones).
  for (int fd = 0; fd < 3; ++fd)
    if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0) return 2;
  int i = 0, failed = 0;
  std::printf("1..%zu\n", unit_tests().size());
  for (auto& t : unit_tests()) {
    int before = unit_failures();
    try {
      t.fn();
    } catch (const std::exception& e) {
      std::printf("#   unexpected exception: %s\n", e.what());
      ++unit_failures();
    }
    bool ok = unit_failures() == before;
    failed += !ok;
    std::printf("%s %d %s\n", ok ? "ok" : "not ok", ++i, t.name);
  }
  return failed ? 1 : 0;
}
#define UNIT_MAIN() \
  int main() { return run_unit_tests(); }
