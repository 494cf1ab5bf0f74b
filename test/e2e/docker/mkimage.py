#!/usr/bin/env python3
"""Writes a three-layer busybox image as a `docker save` tarball, offline.

usage: mkimage.py OUT.tar REPO:TAG BUSYBOX [BASE.tar]

Layer 1 is a busybox root with the files the e2e suite changes; layer 2
adds to it; layer 3 holds OCI whiteouts of a file of each lower layer
(.wh.gone, .wh.gone2) and makes /opq opaque (.wh..wh..opq), so that a
container must show /opq with layer 3's entry only. Every byte is fixed
(times, owners, order), so both daemons get the same image ID.
BASE.tar, if given, gets layer 1 alone (a root without any whiteout, for
docker import).
"""
import hashlib, io, json, subprocess, sys, tarfile

out, ref, busybox = sys.argv[1:4]
MTIME = 1577836800  # 2020-01-01


def layer(entries):
    """entries: (name, kind, data/target, mode[, uid, gid]) -> tar bytes"""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            name, kind, data, mode = e[:4]
            uid, gid = e[4:6] if len(e) > 4 else (0, 0)
            ti = tarfile.TarInfo(name)
            ti.mtime, ti.mode, ti.uid, ti.gid = MTIME, mode, uid, gid
            ti.uname = ti.gname = ""
            if kind == "d":
                ti.type = tarfile.DIRTYPE
                t.addfile(ti)
            elif kind == "l":
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                t.addfile(ti)
            else:
                data = data if isinstance(data, bytes) else data.encode()
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


with open(busybox, "rb") as f:
    bb = f.read()
applets = subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split()

l1 = [("bin", "d", None, 0o755), ("bin/busybox", "f", bb, 0o755)]
l1 += [("bin/" + a, "l", "busybox", 0o777) for a in sorted(applets) if a != "busybox"]
for d in ("dev", "proc", "sys", "root", "etc", "d", "opq", "dir-del", "dir-ren"):
    l1.append((d, "d", None, 0o755))
l1 += [
    ("tmp", "d", None, 0o1777),
    ("etc/motd", "f", "base\n", 0o644),
    ("etc/passwd", "f", "root:x:0:0:root:/root:/bin/sh\nu1000:x:1000:1000::/tmp:/bin/sh\n", 0o644),
    ("etc/group", "f", "root:x:0:\nu1000:x:1000:\n", 0o644),
    ("gone", "f", "gone\n", 0o644),
    ("opq/a", "f", "a\n", 0o644), ("opq/b", "f", "b\n", 0o644),
    ("d/keep", "f", "keep\n", 0o644), ("d/old", "f", "old\n", 0o644),
    ("dir-del/x", "f", "x\n", 0o644), ("dir-del/y", "f", "y\n", 0o644),
    ("dir-ren/p", "f", "p\n", 0o644), ("dir-ren/q", "f", "q\n", 0o640, 12, 34),
    ("link-src", "f", "link-src\n", 0o644),
    ("chmod-me", "f", "chmod-me\n", 0o644),
    ("append-me", "f", "append-me\n", 0o644),
    ("ro-file", "f", "root-owned 0644\n", 0o644),
]
l2 = [
    ("etc", "d", None, 0o755), ("etc/motd", "f", "base\nl2\n", 0o644),
    ("opq", "d", None, 0o755), ("opq/c", "f", "c\n", 0o644),
    ("gone2", "f", "gone2\n", 0o644), ("l2file", "f", "l2\n", 0o644),
]
l3 = [
    (".wh.gone", "f", "", 0o644), (".wh.gone2", "f", "", 0o644),
    ("opq", "d", None, 0o755), ("opq/.wh..wh..opq", "f", "", 0o644),
    ("opq/top", "f", "top\n", 0o644), ("l3file", "f", "l3\n", 0o644),
]
layers = [layer(l) for l in (l1, l2, l3)]
if len(sys.argv) > 4:
    with open(sys.argv[4], "wb") as f:
        f.write(layers[0])
diff_ids = ["sha256:" + hashlib.sha256(b).hexdigest() for b in layers]
created = "2020-01-01T00:00:00Z"
config = {
    "architecture": "amd64", "os": "linux", "created": created,
    "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
    "history": [
        {"created": created, "created_by": "layer 1: busybox root"},
        {"created": created, "created_by": "layer 2: motd, opq/c, gone2"},
        {"created": created, "created_by": "layer 3: whiteouts .wh.gone .wh.gone2, opaque opq"},
        {"created": created, "created_by": "CMD [\"/bin/sh\"]", "empty_layer": True},
    ],
}
cfg = json.dumps(config, sort_keys=True).encode()
cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
names = [hashlib.sha256(b).hexdigest() + "/layer.tar" for b in layers]
manifest = json.dumps([{"Config": cfg_name, "RepoTags": [ref], "Layers": names}]).encode()
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
    def add(name, data):
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.mode = len(data), MTIME, 0o644
        t.addfile(ti, io.BytesIO(data))
    add(cfg_name, cfg)
    for n, b in zip(names, layers):
        add(n, b)
    add("manifest.json", manifest)
