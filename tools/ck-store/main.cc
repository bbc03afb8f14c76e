// ck-store: puts a stream into an image directory, gets it back, lists it.
#include "store_tool.h"
#include "tool.h"

int main(int argc, char** argv) {
  CLI::App app{"ck-store: the image store: put a stream into an image directory, get it back, list it"};
  ck::CommonOptions co;
  ck::add_common_options(app, co);
  app.require_subcommand(1);
  ck::StoreOptions o;
  auto* put = app.add_subcommand("put", "read a stream on stdin, store it in DIR; a pre-dump round's id goes to stdout");
  put->add_option("-D,--dir", o.dir, "image directory (created if missing)");
  put->add_flag("-f,--force", o.force, "replace an image already in DIR");
  put->add_flag("--check-dir", o.check_only, "only check that DIR can take an image (as put would), read nothing");
  put->add_option("--parent", o.parent,
                  "store a pre-dump round on top of the image in PREV (its chain must hold the round this one was "
                  "computed against)");
  put->add_option("--name", o.name, "store in the in-memory store service (not supported yet)");
  auto* get = app.add_subcommand("get", "write the stream stored in DIR to stdout");
  get->add_option("-D,--dir", o.dir, "image directory");
  get->add_option("--name", o.name, "get from the in-memory store service (not supported yet)");
  auto* ls = app.add_subcommand("ls", "one line per task of the image in DIR");
  ls->add_option("-D,--dir", o.dir, "image directory");
  ls->add_option("--name", o.name, "list the in-memory store service (not supported yet)");
  return ck::run_tool("ck-store", app, co, argc, argv, [&] {
    o.cmd = put->parsed() ? ck::StoreOptions::kPut : get->parsed() ? ck::StoreOptions::kGet : ck::StoreOptions::kLs;
    return ck::run_store(o);
  });
}
