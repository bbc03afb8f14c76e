// ck-uffd-serve: serve the page faults of a lazily restored tree.
#include "tool.h"
#include "uffd_serve.h"

int main(int argc, char** argv) {
  CLI::App app{"ck-uffd-serve: serve the page faults of a lazily restored tree (ck-restore --lazy) from an image set"};
  ck::CommonOptions common;
  ck::UffdServeOptions o;
  ck::add_common_options(app, common);
  app.add_option("-D,--images-dir", o.dir, "image set the pages come from (a pre-dump chain included)");
  app.add_option("--uffd", o.uffds, "PID:FD: inherited fd FD is the userfaultfd of image pid PID; repeat")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_flag("--progress", o.progress, "a line on stderr per run placed: pages in, faults seen");
  return ck::run_tool("ck-uffd-serve", app, common, argc, argv, [&] { return ck::uffd_serve(o); });
}
