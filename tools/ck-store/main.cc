// ck-store: puts a stream into an image directory or the in-memory store
// service, gets it back, lists, removes; `serve` is the service.
#include "store_tool.h"
#include "tool.h"

int main(int argc, char** argv) {
  CLI::App app{"ck-store: the image store: put a stream into an image directory or the in-memory store service, "
               "get it back, list it"};
  ck::CommonOptions co;
  ck::add_common_options(app, co);
  app.require_subcommand(1);
  ck::StoreOptions o;
  const char* sock_help = "the store service's socket (default: $CK_STORE_SOCKET, then /run/ck/store.sock)";
  auto* put = app.add_subcommand(
      "put", "read a stream on stdin, store it in DIR or in the store service; a pre-dump round's id goes to stdout");
  put->add_option("-D,--dir", o.dir, "image directory (created if missing)");
  put->add_flag("-f,--force", o.force, "replace an image already in DIR (or of that NAME)");
  put->add_flag("--check-dir", o.check_only, "only check that DIR can take an image (as put would), read nothing");
  put->add_option("--parent", o.parent,
                  "store a pre-dump round on top of the image in PREV (its chain must hold the round this one was "
                  "computed against)");
  put->add_option("--name", o.name,
                  "without -D: the image's name in the store service (default: one it picks, printed on stdout); "
                  "a service is started if none runs");
  put->add_option("--socket", o.socket, sock_help);
  put->add_flag("-z,--compress", o.compress, "without -D: send the stream to the service zstd-compressed (level 1)");
  auto* get = app.add_subcommand("get", "write the stream stored in DIR (or the service's image NAME) to stdout");
  get->add_option("-D,--dir", o.dir, "image directory");
  get->add_option("--name", o.name, "an image of the store service");
  get->add_option("--socket", o.socket, sock_help);
  auto* ls = app.add_subcommand("ls", "one line per task of the image in DIR, or per image of the store service");
  ls->add_option("-D,--dir", o.dir, "image directory");
  ls->add_option("--name", o.name, "only this image of the store service");
  ls->add_option("--socket", o.socket, sock_help);
  auto* rm = app.add_subcommand("rm", "remove image NAME from the store service (its pages no other image holds are freed)");
  rm->add_option("NAME", o.name, "the image")->required();
  rm->add_option("--socket", o.socket, sock_help);
  auto* serve = app.add_subcommand("serve", "run the in-memory store service (until SIGTERM or SIGINT)");
  serve->add_option("--socket", o.socket, sock_help);
  serve->add_option("--ready-fd", o.ready_fd, "once listening, write the service's pid and a newline to fd N, close it");
  serve->add_option("--max-memory", o.max_memory, "page bytes the service may hold (K, M, G, T suffixes; default no cap)");
  return ck::run_tool("ck-store", app, co, argc, argv, [&] {
    o.cmd = put->parsed()   ? ck::StoreOptions::kPut
            : get->parsed() ? ck::StoreOptions::kGet
            : rm->parsed()  ? ck::StoreOptions::kRm
            : serve->parsed() ? ck::StoreOptions::kServe
                              : ck::StoreOptions::kLs;
    return ck::run_store(o);
  });
}
