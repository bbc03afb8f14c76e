// ck-store put, the stage driver: the stream goes into the image directory
// through the restorability check, so that a dump ck-restore would refuse
// fails here, before anything is committed (and, under ck-freeze, before
// the tree is killed).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "error.h"
#include "image.h"
#include "restorable.h"
#include "stream.h"

namespace ck {

void check_image_dir(const std::string& dir, bool replace) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) fail(strf("unable to use '%s' as an image directory: Not a directory", dir.c_str()));
    const std::string m = dir + "/" + kManifestFile;
    if (!replace && ::lstat(m.c_str(), &st) == 0) fail(strf("'%s' already holds an image (--force replaces it)", dir.c_str()));
    if (::access(dir.c_str(), W_OK | X_OK) != 0) throw_errno("unable to write into image directory '" + dir + "'");
    return;
  }
  if (errno != ENOENT) throw_errno("unable to use '" + dir + "' as an image directory");
  std::string parent = dir.substr(0, dir.find_last_not_of('/') + 1);
  size_t slash = parent.rfind('/');
  parent = slash == std::string::npos ? "." : slash == 0 ? "/" : parent.substr(0, slash);
  if (::access(parent.c_str(), W_OK | X_OK) != 0) throw_errno("unable to create image directory '" + dir + "'");
}

void store_put(int in_fd, const std::string& dir, bool replace, const std::string& parent) {
  StreamReader r(in_fd, "stdin");
  RestoreCheck check = RestoreCheck::for_sink();
  r.set_inspector(&check);
  stream_to_image(r, dir, replace, parent);
}

}  // namespace ck
