// ck-anon: an anonymized copy of a stream, fit for a public bug report.  See man/ck-anon.1.
#include <unistd.h>

#include "anon.h"
#include "tool.h"

int main(int argc, char** argv) {
  CLI::App app{
      "ck-anon: read a stream on stdin, write an anonymized copy on stdout: page payloads dropped (runs kept),\n"
      "paths, names, arguments and environment replaced through a keyed 1:1 mapping, registers zeroed, queued\n"
      "data replaced keeping its size, IP addresses mapped prefix-preserving. ck-restore refuses the result."};
  ck::CommonOptions co;
  ck::AnonOptions o;
  bool keep_addresses = false;
  app.add_option("--key", o.key_file, "derive every mapping from this file (at least 16 bytes): same key, same output")
      ->check(CLI::ExistingFile);
  app.add_option("--env", o.env, "environment: 'all' replaces names and values (a few well-known names kept), "
                                 "'values' keeps every name")
      ->check(CLI::IsMember({"all", "values"}));
  app.add_flag("--ports", o.ports, "map ports too (a keyed permutation)");
  app.add_flag("--keep-addresses", keep_addresses, "keep IP addresses as they are");
  app.add_flag("--keep-hostname", o.keep_hostname, "keep the header's hostname");
  app.add_flag("--all-paths", o.all_paths, "replace well-known system path components (usr, dev, ...) too");
  app.add_option("--map-out", o.map_out, "write the mapping table (replacement -> original) to FILE, for yourself alone");
  app.add_option("-D,--dir", o.dir, "read the image set in DIR (as ck-store put wrote it) instead of stdin");
  app.add_option("-o,--output", o.output, "write the stream to FILE (complete or not at all) instead of stdout");
  app.add_flag("--summary", o.summary, "print what was removed on stderr");
  app.add_flag("--zstd", o.zstd, "compress the output with zstd (read it with zstd -d | ck-crit show)");
  app.add_option("--note", o.note_file, "append FILE's text, as it is, as a note (ck-report's host facts)")
      ->check(CLI::ExistingFile);
  ck::add_common_options(app, co);
  return ck::run_tool("ck-anon", app, co, argc, argv, [&] {
    o.addresses = !keep_addresses;
    return ck::run_anon(o, STDIN_FILENO, STDOUT_FILENO);
  });
}
