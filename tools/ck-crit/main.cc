#include "tool.h"
int main(int argc, char** argv) {
  CLI::App app{"ck-crit: explore ck streams and image sets"};
  ck::CommonOptions o;
  ck::add_common_options(app, o);
  return ck::run_tool("ck-crit", app, o, argc, argv, [] { return 0; });
}
