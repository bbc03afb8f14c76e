// ck-sockdump: the sockets of a frozen tree, as stream frames.  See man/ck-sockdump.1.
#include <unistd.h>

#include "sock.h"
#include "tool.h"

int main(int argc, char** argv) {
  CLI::App app{
      "ck-sockdump: dump the sockets of a process tree.\n"
      "Reads a stream on stdin (under ck-freeze), forwards it and adds the state of every socket of the tree\n"
      "(unix, TCP, UDP) before the first memory layout. With --unlock: lifts the network locks a stream names."};
  ck::CommonOptions co;
  ck::SockdumpOptions o;
  app.add_option("--external", o.external,
                 "keep unix sockets whose peer is outside the tree: unix (all), unix:INODE or unix:NAME of the peer; "
                 "the restored socket connects to the peer's name again");
  app.add_flag("--unlock", o.unlock, "lift the network locks named by the stream on stdin (no restore will follow)");
  app.add_option("--netns", o.netns, "with --unlock: in this network namespace (a path such as /run/netns/NAME)");
  ck::add_common_options(app, co);
  return ck::run_tool("ck-sockdump", app, co, argc, argv, [&] { return ck::run_sockdump(o, STDIN_FILENO, STDOUT_FILENO); });
}
