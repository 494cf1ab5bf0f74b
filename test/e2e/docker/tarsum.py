#!/usr/bin/env python3
"""Lists a tarball's members, sorted: name, type, mode, uid:gid, size,
link target and the md5 of the content; not mtimes (they legitimately
differ between two runs of the same container).

usage: tarsum.py FILE.tar
"""
import hashlib, sys, tarfile

rows = []
with tarfile.open(sys.argv[1]) as t:
    for m in t:
        md5 = "-"
        if m.isreg():
            md5 = hashlib.md5(t.extractfile(m).read()).hexdigest()
        link = m.linkname if (m.issym() or m.islnk()) else "-"
        rows.append(f"{m.name.rstrip('/')} {m.type.decode()} {m.mode:o} {m.uid}:{m.gid} {m.size} {link} {md5}")
print("\n".join(sorted(rows)))
