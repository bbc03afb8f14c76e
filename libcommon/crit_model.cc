// load(): an image's records in memory in one pass, page contents left
// out (runs only), for x, diff and show.
#include "crit.h"

namespace crit {

namespace pb = ck::pb;

const Task* Model::task(uint32_t pid) const {
  auto it = tasks.find(pid);
  return it == tasks.end() ? nullptr : &it->second;
}

Model load(Source& s, const PayloadHook& on_payload) {
  Model m;
  pb::Frame f;
  auto task = [&](uint32_t pid) -> Task& {
    auto it = m.tasks.find(pid);
    if (it != m.tasks.end()) return it->second;
    m.order.push_back(pid);
    Task& t = m.tasks[pid];
    t.pid = pid;
    return t;
  };
  while (s.next(&f)) {
    switch (f.body_case()) {
      case pb::Frame::kHeader: m.header = f.header(); break;
      case pb::Frame::kProcess: {
        Task& t = task(f.process().pid());
        t.has_process = true;
        t.proc = f.process();
        break;
      }
      case pb::Frame::kThread: task(f.thread().pid()).threads.push_back(f.thread()); break;
      case pb::Frame::kFile: m.files[f.file().id()] = f.file(); break;
      case pb::Frame::kFd: task(f.fd().pid()).fds.push_back(f.fd()); break;
      case pb::Frame::kMm: {
        Task& t = task(f.mm().pid());
        t.has_mm = true;
        t.vmas.assign(f.mm().vmas().begin(), f.mm().vmas().end());
        break;
      }
      case pb::Frame::kPages: {
        const auto& p = f.pages();
        Task& t = task(p.pid() ? p.pid() : f.pid());
        if (p.file()) {
          t.file_pages += p.npages();
        } else {
          Run r;
          r.addr = p.addr();
          r.npages = p.npages();
          r.data = p.has_payload();
          r.dropped = p.dropped();
          r.round = p.round();
          r.shmid = p.shmid();
          r.pid = t.pid;
          (r.shmid ? m.shared[r.shmid] : t.runs).push_back(r);
        }
        if (p.has_payload() && on_payload) on_payload(f, s);
        break;
      }
      case pb::Frame::kSocket: m.socks[f.socket().desc()] = f.socket(); break;
      case pb::Frame::kNetlock: m.locks.push_back(f.netlock()); break;
      case pb::Frame::kCgroup: m.cgroups.push_back(f.cgroup()); break;
      case pb::Frame::kNote: m.notes.push_back(f.note()); break;
      default: ++m.unknown; break;
    }
  }
  s.verify();
  m.trailer = s.trailer();
  return m;
}

}  // namespace crit
