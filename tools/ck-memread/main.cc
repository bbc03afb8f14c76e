// ck-memread: memory layout and page contents of a process tree, as stream
// frames.  See man/ck-memread.1.
#include <unistd.h>

#include "error.h"
#include "memread.h"
#include "tool.h"

int main(int argc, char** argv) {
  CLI::App app{
      "ck-memread: dump memory layouts and page contents.\n"
      "With -t PID: writes a stream of its own for PID (and with --tree its descendants); the target keeps\n"
      "running, so its memory may change while it is read (freeze it with ck-freeze for a consistent image).\n"
      "Without -t: reads a stream on stdin, forwards it and appends the memory of every process in it."};
  ck::CommonOptions o;
  ck::MemreadOptions m;
  size_t buffer_kib = m.buffer_bytes >> 10;
  app.add_option("-t,--target", m.pid, "dump this pid (alone, not in a pipeline)")->check(CLI::PositiveNumber);
  app.add_flag("--tree", m.tree, "with -t: every descendant of PID too");
  app.add_option("--buffer-kib", buffer_kib, "size of the page buffer in KiB (default 4096)")
      ->check(CLI::Range(4, 1 << 20));
  ck::add_common_options(app, o);
  return ck::run_tool("ck-memread", app, o, argc, argv, [&] {
    if (m.tree && !m.pid) ck::usage_error("--tree needs -t PID");
    m.buffer_bytes = buffer_kib << 10;
    return ck::run_memread(m, STDIN_FILENO, STDOUT_FILENO);
  });
}
