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
      "Without -t: reads a stream on stdin, forwards it and appends the memory of every process in it.\n"
      "Pre-dump rounds: --track arms write tracking and copies everything (round 1); each --dirty copies\n"
      "what was written since a round known to be stored: the one named by --since (the id ck-store put\n"
      "printed for it), else the newest one confirmed so far (also inside ck-freeze, for the last round)."};
  ck::CommonOptions o;
  ck::MemreadOptions m;
  size_t buffer_kib = m.buffer_bytes >> 10;
  app.add_option("-t,--target", m.pid, "dump this pid (alone, not in a pipeline)")->check(CLI::PositiveNumber);
  app.add_flag("--tree", m.tree, "with -t: every descendant of PID too");
  app.add_option("--buffer-kib", buffer_kib, "size of the page buffer in KiB (default 4096)")
      ->check(CLI::Range(4, 1 << 20));
  app.add_flag("--no-parasite", m.no_parasite,
               "in a pipeline under ck-freeze: copy pages with process_vm_readv, not through the page parasite");
  auto* track = app.add_flag("--track", m.track, "with -t: arm write tracking (brief freeze), then copy every page");
  auto* dirty = app.add_flag("--dirty", m.dirty, "copy only pages written since a round known to be stored (--since)");
  app.add_option("--since", m.since,
                 "with --dirty: the round this one builds on, as ck-store put printed it (DUMP:N) or its number; "
                 "it is taken as stored (default: the newest round confirmed stored, 1 at first)")
      ->needs(dirty);
  auto* untrack = app.add_flag("--untrack", m.untrack, "with -t: end write tracking of PID");
  track->excludes(dirty)->excludes(untrack);
  dirty->excludes(untrack);
  app.add_option("--state-dir", m.state_dir, "tracking state directory (default $CK_TRACK_DIR or /run/ck/track)");
  app.add_option("--stats", m.stats_file, "with --track/--dirty: append a line of round figures to FILE");
  ck::add_common_options(app, o);
  return ck::run_tool("ck-memread", app, o, argc, argv, [&] {
    if (m.tree && !m.pid) ck::usage_error("--tree needs -t PID");
    if ((m.track || m.untrack) && !m.pid) ck::usage_error(m.track ? "--track needs -t PID" : "--untrack needs -t PID");
    m.buffer_bytes = buffer_kib << 10;
    return ck::run_memread(m, STDIN_FILENO, STDOUT_FILENO);
  });
}
