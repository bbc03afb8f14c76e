#!/usr/bin/env python3
"""maps_vs_image.py MAPS IMAGE_JSON PID: every line of a /proc/PID/maps copy
is a VMA of PID in the decoded image (same start, end, protection, offset,
path).  Exits 1 and says what differs otherwise."""
import json
import sys

maps, image, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
want = []
for line in open(maps):
    f = line.split(None, 5)
    start, end = (int(x, 16) for x in f[0].split("-"))
    path = f[5].strip() if len(f) > 5 else ""
    want.append((start, end, f[1][:3], int(f[2], 16), path))

doc = json.load(open(image))
frames = doc["frames"] if isinstance(doc, dict) else doc
got = []
for item in frames:
    fr = item.get("frame", item)
    mm = fr.get("mm")
    if not mm or int(mm.get("pid", fr.get("pid", 0))) != pid:
        continue
    for v in mm.get("vmas", []):
        prot = int(v.get("prot", 0))
        perms = ("r" if prot & 1 else "-") + ("w" if prot & 2 else "-") + ("x" if prot & 4 else "-")
        got.append((int(v["start"]), int(v["end"]), perms, int(v.get("pgoff", 0)), v.get("path", "")))
if want != got:
    for w in want:
        if w not in got:
            print("missing in image:", w)
    for g in got:
        if g not in want:
            print("not in maps:", g)
    sys.exit(1)
print(f"{len(want)} VMAs match")
