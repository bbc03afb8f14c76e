#!/usr/bin/env python3
"""image_diff.py A.json B.json: compares two decoded images (ck-crit decode)
in everything but time: processes, threads (not registers), fd tables and
file descriptions, memory layouts and which pages carry data.  Prints the
differences and exits 1 if there are any."""
import json
import sys

VOLATILE = {
    "header": {"created_ns"},
    "process": {"start_brk"},  # kept below; nothing time-like in it besides itimers/timers
    "thread": {"gpregs", "xsave", "pending"},
    "file": {"timer_value_ns", "timer_ticks", "ino", "pipe_id", "dev", "mtime_ns", "atime_ns", "size"},
}


def load(path):
    doc = json.load(open(path))
    out = {}
    root = int(doc["frames"][0]["frame"]["header"].get("root_pid", 0))
    # Restored sockets have new inodes: number them in frame order instead.
    sock_no = {}
    for item in doc["frames"]:
        u = item["frame"].get("socket", {}).get("unix_sk")
        if u and "ino" in u:
            sock_no.setdefault(u["ino"], f"#{len(sock_no)}")
    def renumber(u):
        for k in ("ino", "peer_ino"):
            if k in u:
                u[k] = sock_no.get(u[k], "outside")
        if "icons" in u:
            u["icons"] = [sock_no.get(i, "outside") for i in u["icons"]]
        u.pop("external_id", None)
    for item in doc["frames"]:
        f = item["frame"]
        kind = next(k for k in f if k != "pid")
        body = dict(f[kind])
        if kind == "pages":
            body = {k: body.get(k) for k in ("pid", "addr", "npages", "shmid", "file")}
        if kind == "socket":
            body.pop("netns", None)
            if "unix_sk" in body:
                renumber(body["unix_sk"])
        if kind == "file" and str(body.get("path", "")).startswith("socket:["):
            body["path"] = "socket:[]"
        for k in VOLATILE.get(kind, ()):
            if kind != "process":
                body.pop(k, None)
        if kind == "process":
            if int(body.get("pid", 0)) == root:
                body.pop("ppid", None)  # the root's parent is whoever restored it
            for t in body.get("itimers", []):
                t.pop("value_us", None)
            for t in body.get("posix_timers", []):
                t.pop("value_ns", None)
                t.pop("overrun", None)
        if kind == "mm":
            for v in body.get("vmas", []):
                if v.get("dev") == "1" or v.get("kind") == "VMA_SHARED_ANON":
                    v.pop("ino", None)  # a new shmem object
                    v.pop("shmid", None)
        if kind == "file" and body.get("deleted"):
            body.pop("path", None)
        if kind == "file" and str(body.get("path", "")).startswith(("pipe:[", "anon_inode:")):
            body["path"] = body["path"].split("[")[0]  # a new pipe has a new inode
        if kind == "mm":
            for v in body.get("vmas", []):
                # "ac" (accounted): ck maps private file memory writable while
                # filling it, and the kernel keeps the accounting flag
                v["vmflags"] = " ".join(x for x in v.get("vmflags", "").split() if x != "ac")
        out.setdefault(kind, []).append(json.dumps(body, sort_keys=True))
    return out


a, b = load(sys.argv[1]), load(sys.argv[2])
bad = 0
for kind in sorted(set(a) | set(b)):
    if kind == "pages":
        continue  # contents move on with the program; layouts are compared in mm
    la, lb = a.get(kind, []), b.get(kind, [])
    if sorted(la) != sorted(lb):
        bad += 1
        print(f"{kind}: differ")
        oa, ob = sorted(set(la) - set(lb)), sorted(set(lb) - set(la))
        if len(oa) == 1 and len(ob) == 1:
            ja, jb = json.loads(oa[0]), json.loads(ob[0])
            for k in sorted(set(ja) | set(jb)):
                if ja.get(k) == jb.get(k):
                    continue
                if isinstance(ja.get(k), list) and isinstance(jb.get(k), list):
                    xa = {json.dumps(x, sort_keys=True) for x in ja[k]}
                    xb = {json.dumps(x, sort_keys=True) for x in jb[k]}
                    print(f"  {k}: {len(ja[k])} -> {len(jb[k])} entries")
                    for x in sorted(xa - xb):
                        print("    only in first: ", x[:400])
                    for x in sorted(xb - xa):
                        print("    only in second:", x[:400])
                else:
                    print(f"  {k}: {str(ja.get(k))[:300]} -> {str(jb.get(k))[:300]}")
            continue
        for x in oa:
            print("  only in first: ", x[:400])
        for x in ob:
            print("  only in second:", x[:400])
sys.exit(1 if bad else 0)
