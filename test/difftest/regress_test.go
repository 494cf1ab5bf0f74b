package difftest

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// regressions replays fixed cases found by TestDifferential. A case gives
// its stack as text (or, when stack is empty, the stack generated from
// seed) and its ops as text, one a line. fixed says what a case found
// once the bug is fixed; such a case must not diverge. open marks a bug
// not fixed yet:
// the case then skips while it still diverges (fails with -strict), and
// says so once it passes, so the mark can be removed. unskip names the
// temporary "BUG-" entry of KnownDiffs that would hide the case; it is
// disabled for the case (the other skips stay, so that one open bug does
// not mask another's case).
var regressions = []struct {
	name   string
	seed   uint64
	open   string // the open bug, while it is not fixed
	fixed  string // what the case found, once fixed
	unskip string
	stack  string
	ops    string
}{
	{
		name:  "create-drops-suid",
		seed:  229,
		fixed: "create with S_ISUID/S_ISGID loses the bits (node.own chowns after creating)",
		stack: `
layers=2
`,
		ops: `
create c mode=4755 len=0 pat=691
stat c
`,
	},
	{
		name:  "readdir-d_ino",
		seed:  3,
		fixed: "readdir d_ino of a copied-up entry is the upper inode, st_ino the origin's",
		stack: `
layers=2
L2 file f mode=0444 uid=0 gid=0 size=20 pat=318
L1 dir h mode=0700 uid=1000 gid=0 opaque=xattr x=user.a=v55 x=user.b=v0
`,
		ops: `
rmdir h
write f off=344 len=264 pat=180 flags=rdwr
readdir .
`,
	},
	{
		name:  "hardlink-copyup-keeps-origin-ino",
		seed:  1,
		fixed: "BUG (intermittent): copy-up of one name of a lower hard link: the node made while it was lower keeps reporting the lower st_ino, shared with the other name",
		stack: `
layers=4
L1 file g mode=0644 uid=0 gid=0 size=249 pat=313 x=user.c=v43
L1 hardlink h target=g
`,
		ops: `
utimes g time=978321207
`,
	},
	{
		name:  "hardlink-copies-share-node",
		seed:  100,
		fixed: "BUG (intermittent): as hardlink-copyup-keeps-origin-ino, for two copied-up names (was: one name showed the other's data)",
		stack: `
layers=3
L1 dir e mode=0755 uid=0 gid=0 x=user.a=v81
L1 file e/e mode=0644 uid=0 gid=1000 size=214 pat=19
L1 dir e/c mode=0700 uid=0 gid=0 x=user.b=v31
L1 hardlink e/c/h target=e/e
`,
		ops: `
rocopyup e/c/h off=0 len=244 pat=751
truncate e/e size=0 flags=otrunc
`,
	},
	{
		name:  "link-then-rename-over-truncates-other-file",
		seed:  56,
		fixed: "after link a h/d and rename g h/d, the node of a still resolves through the stale name h/d: truncating a truncates g",
		stack: `
layers=2
L2 dir h mode=1777 uid=0 gid=0
L1 file g mode=0640 uid=0 gid=1000 size=272 pat=985
L1 file a mode=0644 uid=1000 gid=1001 size=175 pat=818
`,
		ops: `
link a h/d
rename g h/d flags=plain
truncate a size=0 flags=otrunc
readdir h
read h/d
`,
	},
	{
		name:  "rename-estale",
		seed:  141,
		fixed: "node identity of copied-up dirs changes; a lookup inside rename must move a dir alias: ESTALE",
		stack: `
layers=2
L2 file b mode=0640 uid=0 gid=1001 size=93 pat=919
L2 dir d mode=0755 uid=1001 gid=0 x=user.b=v59
L2 dir d/a mode=0755 uid=1000 gid=1001 opaque=wh x=user.b=v27
L2 dir d/a/e mode=0755 uid=1000 gid=0 opaque=wh x=user.c=v21
L1 dir g mode=0700 uid=1000 gid=0 opaque=user x=user.a=v21 x=user.b=v2
L1 symlink g/d target=f/../../g uid=1000 gid=0
`,
		ops: `
rename g/d d/a/g flags=plain
rename d/a/e d flags=plain
rename b d/a/e flags=plain
`,
	},
	{
		name:  "rename-onto-ancestor",
		seed:  36,
		fixed: "after copy-up the ancestor dentry differs, so rename e/c/d -> e reaches layerfs (EISDIR) instead of the VFS's ENOTEMPTY",
		stack: `
layers=4
L3 dir e mode=1777 uid=1000 gid=0
L3 dir e/c mode=0755 uid=1001 gid=0
L3 file e/c/d mode=0640 uid=1001 gid=1001 size=8110 pat=134
L3 hardlink e/c/f target=e/c/d
`,
		ops: `
chmod e/c/f mode=0600
rename e/c/d e flags=plain
`,
	},
	{
		name:  "rename-exdev-before-enotempty",
		seed:  297,
		fixed: "rename of a lower dir onto a non-empty dir: kernel EXDEV, layerfs ENOTEMPTY",
		stack: `
layers=3
L2 dir h mode=0775 uid=1001 gid=1000 x=user.a=v14
L2 file h/f mode=0644 uid=0 gid=1001 size=8 pat=355 x=user.b=v7 x=user.c=v12
L1 dir c mode=0755 uid=0 gid=0 x=user.b=v49
`,
		ops: `
rename c h flags=plain
`,
	},
	{
		name:  "link-append-stale-size",
		seed:  157,
		fixed: "link returns the target's node, a lookup of the new name makes a second node; its cached size is stale after a truncate through the first, and O_APPEND writes at the stale size",
		stack: `
layers=2
L1 dir g mode=0700 uid=0 gid=0 x=user.c=v47
L1 file g/h mode=0640 uid=1001 gid=0 size=275 pat=159
`,
		ops: `
link g/h n3
symlink g/h target=.
truncate g/h size=138 flags=fd
append n3 len=32 pat=37
rocopyup g/h off=85 len=23 pat=447
`,
	},
	{
		name:  "link-append-stale-size-2",
		seed:  167,
		fixed: "three names of one file after two links; an append through the third name writes at the size its own (second) node cached, overwriting the first append",
		stack: `
layers=4
L3 dir g mode=0755 uid=1000 gid=1000
L1 file b mode=2755 uid=1000 gid=1001 size=300 pat=345 x=user.a=v68 x=user.b=v48
`,
		ops: `
link b a
mkdir g/n1 mode=0755
link a g/n1/c
readdir g/n1
append a len=279 pat=98
append g/n1/c len=51 pat=166
`,
	},
	{
		name:  "link-then-write-stale-read",
		seed:  275,
		fixed: "BUG: after link b f/n2 and a write through b, reading f/n2 shows the old data (the two names are two FUSE inodes; f/n2's page cache is stale)",
		stack: `
layers=4
L4 dir f mode=0755 uid=1000 gid=0 x=user.a=v15 x=user.c=v15
L2 dir e mode=0775 uid=0 gid=1000
L2 file e/a mode=0644 uid=1000 gid=0 size=1158831 pat=328 sparse
L2 hardlink b target=e/a
`,
		ops: `
link b f/n2
rocopyup b off=0 len=227 pat=87
read f/n2
`,
	},
	{
		name:  "link-rename-over-stale-nlink",
		seed:  18,
		fixed: "after link a/e d/c and rename d/b a/e, stat d/c shows nlink 2 (a second node for the same file)",
		stack: `
layers=2
L2 dir a mode=0700 uid=1000 gid=1000 x=user.a=v51
L2 file a/e mode=2755 uid=1000 gid=1001 size=111 pat=464
L1 dir d mode=0700 uid=1000 gid=0 x=user.a=v92
L1 file d/b mode=4755 uid=0 gid=0 size=0 pat=240 x=user.a=v57
`,
		ops: `
link a/e d/c
rename d/b a/e flags=plain
stat d/c
`,
	},
	{
		name:  "link-stale-name-eloop",
		seed:  225,
		fixed: "the node of f keeps the name d/n5 after a symlink was renamed over it; append f opens the symlink (ELOOP)",
		stack: `
layers=4
L2 file f mode=2755 uid=1000 gid=0 size=141 pat=20 x=user.c=v31
L2 dir d mode=0755 uid=0 gid=1000 x=user.a=v44
L1 dir a mode=1777 uid=0 gid=0
L1 symlink a/c target=/nonexistent/x uid=1001 gid=1001
`,
		ops: `
link f d/n5
rename a/c d/n5 flags=plain
append f len=130 pat=952
`,
	},
	{
		name:  "same-name-rename-enxio",
		seed:  1096,
		fixed: "after copy-up a lookup returns a new node id, so rename g g reaches layerfs; go-fuse's MvChild then loses the node and the renamed file still resolves to g (now a whiteout): ENXIO",
		stack: `
layers=2
L2 file g mode=0444 uid=1001 gid=1000 size=229 pat=533 x=user.c=v83
`,
		ops: `
truncate g size=1642 flags=fd
rename g g flags=plain
rename g a flags=plain
write a off=1642 len=210 pat=940 flags=rdwr
`,
	},
	{
		name:  "same-name-rename-exchange-enoent",
		seed:  53,
		fixed: "as same-name-rename-enxio; after an exchange and unlink the file at b/d has no name (ENOENT)",
		stack: `
layers=3
L2 dir b mode=1777 uid=0 gid=0 opaque=wh x=user.b=v17
L2 file b/d mode=0755 uid=1000 gid=1000 size=60648 pat=416
L2 dir e mode=0700 uid=1000 gid=0
L2 file e/b mode=0640 uid=1000 gid=1001 size=194057 pat=185 sparse
`,
		ops: `
rename e/b n5 flags=plain
rename n5 n5 flags=plain
rename b/d n5 flags=exchange
unlink n5
removexattr b/d name=user.c
`,
	},
	{
		name:  "moved-dir-not-opaque",
		seed:  60,
		fixed: "upper format: a pure-upper dir renamed into a merged dir is not marked opaque (the kernel marks it)",
		stack: `
layers=3
L1 dir h mode=1777 uid=0 gid=0
L1 dir h/h mode=0755 uid=1000 gid=1000
`,
		ops: `
mkdir h/h/b mode=0700
mkdir h/h/b/e mode=1777
rename h/h/b/e h/h/g flags=plain
`,
	},
	{
		name:  "copyup-changes-parent-mtime",
		seed:  5,
		fixed: "copy-up changes the parent directory's mtime; the kernel restores it",
		stack: `
layers=2
L2 dir g mode=0755 uid=0 gid=0
L2 file g/f mode=0644 uid=0 gid=0 size=10 pat=1
`,
		ops: `
chmod g/f mode=0600
`,
	},
	{
		name:  "redirect-through-whiteout",
		seed:  5031,
		fixed: "an absolute redirect was followed through a whiteout in a middle layer (d in L2), merging L3's d/c into the moved directory",
		stack: `
layers=3
L3 dir d mode=0755 uid=1001 gid=0
L3 dir d/c mode=0775 uid=0 gid=1000
L3 dir d/c/g mode=1777 uid=1000 gid=1000 x=user.c=v54
L2 whiteout d form=chr
L1 dir d mode=1777 uid=1000 gid=1000
L1 dir d/c mode=0700 uid=0 gid=0
`,
		ops: `
create n2 mode=0644 len=295 pat=269
rename n2 d/c flags=exchange
dropcaches .
`,
	},
	{
		name:  "rmdir-notempty-copies-up",
		seed:  175,
		fixed: "upper only: a failing rmdir (ENOTEMPTY) copies the parents up first; the kernel checks emptiness first",
		stack: `
layers=3
L2 dir e mode=0775 uid=0 gid=1000 x=user.c=v50
L2 dir e/h mode=0775 uid=0 gid=0 x=user.b=v19
L2 dir e/h/f mode=0755 uid=1000 gid=0 opaque=xattr x=user.a=v18
L2 file e/h/f/h mode=0644 uid=0 gid=1000 size=5 pat=134 x=user.c=v42
`,
		ops: `
rmdir e/h/f
`,
	},
	{
		name:  "link-rename-rocopyup-eio",
		seed:  173,
		fixed: "the node of a resolves through a stale hard link name (n3, renamed to b/a): EIO",
		stack: `
layers=3
L3 file a mode=0644 uid=0 gid=0 size=1644081 pat=763 sparse x=user.b=v40
L3 dir b mode=0775 uid=1001 gid=1000
`,
		ops: `
link a n3
rename n3 b/a flags=plain
readdir b
chmod b mode=0775
write b/g off=94 len=209 pat=632 flags=rdwr
rocopyup a off=1645455 len=182 pat=192
`,
	},
	{
		name:  "exchange-into-upper-dir-d_ino",
		seed:  114,
		fixed: "BUG: RENAME_EXCHANGE moves a copied-up file into pure-upper c; readdir c gives its upper inode as d_ino, stat the origin's",
		stack: `
layers=3
L3 dir a mode=0775 uid=0 gid=0 opaque=user
L3 file a/g mode=4755 uid=0 gid=1000 size=166 pat=973
`,
		ops: `
mkdir c mode=0755
mkdir c/b mode=0700
rename c/b a/g flags=exchange
readdir c
`,
	},
	{
		name:  "failed-rename-leaves-kernel-opaque",
		seed:  79,
		fixed: "BUG (upper format only): a failing rename (ENOTEMPTY) of a pure-upper dir inside a merged dir leaves the kernel's source dir opaque; layerfs's not",
		stack: `
layers=2
L1 dir h mode=0755 uid=1000 gid=0 x=user.c=v95
`,
		ops: `
mkdir h/b mode=0700
mkdir h/n0 mode=1777
mkdir h/b/a mode=0755
rename h/n0 h/b flags=plain
`,
	},
	{
		name:  "lower-hardlink-copyup-new-node",
		seed:  226,
		fixed: "BUG: a lower hard link's node (generation salted with its name) is not the node its upper copy gets (origin hash): a read-only fd opened before a second fd writes reads stale pages",
		stack: `
layers=2
L2 file b mode=0644 uid=1001 gid=1000 size=279 pat=261 x=user.c=v97
L2 dir e mode=0775 uid=0 gid=0 opaque=user
L2 hardlink e/c target=b
L1 whiteout e form=chr
`,
		ops: `
write b off=2577 len=112 pat=930 flags=wronly
rocopyup b off=1344 len=68 pat=464
`,
	},
	{
		name:  "hardlink-exchange-unlink-enoent",
		seed:  1,
		fixed: "BUG: a file with several names moved by RENAME_EXCHANGE and renames; after link b n2/d and unlink n2/d, write b fails ENOENT (its node resolves through a name it no longer has)",
		stack: `
layers=4
L1 file g mode=0644 uid=0 gid=0 size=249 pat=313 x=user.c=v43
L1 hardlink h target=g
L1 file b mode=0640 uid=1000 gid=1000 size=228 pat=66 x=user.c=v2
`,
		ops: `
mkdir n2 mode=0755
rename g a flags=plain
symlink n2/f target=.
link a n2/g
rename a n2/f flags=exchange
rename b n2/f flags=exchange
create n2/g mode=0644 len=218 pat=619
rename n2/g g flags=plain
link b n2/d
unlink n2/d
write b off=0 len=2 pat=745 flags=wronly
`,
	},
	{
		name:  "sgid-kept-on-nonmember-write",
		seed:  3,
		fixed: "BUG: a write by the owner, not in the file's group, keeps S_ISGID on a 2644 file; the kernel drops it (setattr_should_drop_sgid: S_ISGID without S_IXGRP goes when the writer is not in the group). FUSE's fuse_setattr recomputes the kill with the pre-6.x rule (S_ISGID only with S_IXGRP) unless the server handles killpriv. The same for truncate, open with O_TRUNC and chown (the later ops, each on a file of its own)",
		stack: `
layers=2
L1 file e mode=2644 uid=1001 gid=1001 size=147 pat=144 x=user.b=v89 x=user.c=v18
L1 file a mode=2646 uid=1001 gid=1001 size=10 pat=1
L1 file b mode=2646 uid=1001 gid=1001 size=10 pat=1
L1 file c mode=2646 uid=1001 gid=1001 size=10 pat=1
L1 file d mode=2666 uid=1001 gid=1001 size=10 pat=1
`,
		ops: `
rocopyup e off=118 len=176 pat=199 as=1001:1000
stat e
truncate a size=3 flags=path as=1002:1002
stat a
chown b uid=-1 gid=1000 as=1001:1000
stat b
truncate c size=0 flags=otrunc as=1002:1002
stat c
write d off=0 len=3 pat=3 flags=wronly as=1002:1002
stat d
`,
	},
	{
		name:  "acl-keeps-sgid",
		seed:  19,
		fixed: "BUG: the owner, outside the dir's group, sets an access ACL on a setgid dir: the kernel drops S_ISGID, layerfs keeps it (no FUSE_SETXATTR_EXT, so no FUSE_SETXATTR_ACL_KILL_SGID; the ACL is set as root)",
		stack: `
layers=3
L2 dir a mode=0775 uid=1002 gid=0 x=user.b=v83
L2 dir a/d mode=2775 uid=1000 gid=1002 x=user.a=v48
L2 dir a/d/a mode=2770 uid=1000 gid=1000
`,
		ops: `
setacl a/d/a flags=access acl=u::rwx,g::rwx,o::--- as=1000:1002
`,
	},
	{
		name:  "trusted-xattr-names-listed",
		seed:  0,
		fixed: "BUG: a user without CAP_SYS_ADMIN lists the trusted.* xattrs of a file through layerfs (and reading one then says ENODATA); the kernel hides them from such callers",
		stack: `
layers=2
L1 file a mode=0644 uid=1001 gid=1001 size=10 pat=1 x=trusted.t=v0
`,
		ops: `
getxattr a as=1001:1001
`,
	},
	{
		name:  "metacopy-data-drops-caps",
		seed:  700,
		fixed: "BUG: a metadata-only copy (setcap, chmod) of a lower file loses security.capability when layerfs copies its data up for a rename or link: the data write into the upper file drops it (killpriv), the kernel sets it again after the copy",
		stack: `
layers=3
L2 file a mode=0600 uid=1002 gid=1001 size=66 pat=725
L2 file c mode=0755 uid=1001 gid=1001 size=10 pat=1 x=security.capability=0x0100000200040000000000000000000000000000
`,
		ops: `
setcap a
rename a g flags=plain
chmod c mode=0750
link c c2
getxattr c2
`,
	},
	{
		name:  "link-into-upper-dir-d_ino",
		seed:  269,
		fixed: "BUG: names linked into a pure-upper dir (n4) to lower entries list d_ino = the upper inode once the nodes are forgotten (dropcaches); stat gives the origin's, as the kernel's d_ino does (found by the mount fuzzer: seed 269, 73 ops, under eviction by the other worker)",
		stack: `
layers=2
L2 fifo h mode=0644 uid=0 gid=1002
L2 file f mode=0644 uid=0 gid=0 size=10 pat=1
L2 symlink s target=x uid=0 gid=0
`,
		ops: `
mkdir n4 mode=0755
link h n4/e
link f n4/f
link s n4/s
dropcaches .
readdir n4
`,
	},
}

func TestRegressions(t *testing.T) {
	requireEnv(t)
	for i, c := range regressions {
		t.Run(fmt.Sprintf("%02d-%s", i, c.name), func(t *testing.T) {
			stack := GenStack(seqRng(c.seed))
			if c.stack != "" {
				var err error
				if stack, err = ParseStack(c.stack); err != nil {
					t.Fatal(err)
				}
			}
			ops, err := ParseOps(c.ops)
			if err != nil {
				t.Fatal(err)
			}
			r := &Run{Dir: filepath.Join(t.TempDir(), "run"), Seed: c.seed, Stack: stack, Ops: ops, Unskip: c.unskip}
			d, err := r.Execute()
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case d != nil && c.open != "" && !*flagStrict:
				t.Skipf("open bug (%s) still diverges:\n%s", c.open, d)
			case d != nil:
				t.Errorf("diverges:\n%s", d.Report())
			case c.open != "":
				t.Logf("case marked open (%s) passes now: clear its open field", c.open)
			}
		})
	}
}

// TestFormats checks that stacks and ops read back as written, so that
// printed repros can be pasted into the regressions table.
func TestFormats(t *testing.T) {
	for seed := uint64(1); seed <= 50; seed++ {
		rng := seqRng(seed)
		s := GenStack(rng)
		s2, err := ParseStack(s.String())
		if err != nil {
			t.Fatal(err)
		}
		if s.String() != s2.String() {
			t.Fatalf("seed %d: stack does not read back:\n%s\n---\n%s", seed, s, s2)
		}
		v := &View{Paths: []string{"a", "d", "d/x"}, Type: map[string]uint32{"a": 0o100000, "d": 0o40000, "d/x": 0o100000}, Size: map[string]int64{"a": 10}, Xattrs: map[string][]string{"a": {"user.a"}},
			Uid: map[string]int{"": 0, "a": 1000, "d": 1001, "d/x": 0}, Gid: map[string]int{"": 0, "a": 1000, "d": 1002, "d/x": 1001}, Mode: map[string]uint32{"": 0o755, "a": 0o644, "d": 0o2775, "d/x": 0o600}}
		for i := 0; i < 100; i++ {
			o := GenOp(rng, v, s)
			o2, err := ParseOp(o.String())
			if err != nil {
				t.Fatal(err)
			}
			if o.String() != o2.String() {
				t.Fatalf("op %q reads back as %q", o, o2)
			}
			if o.Kind == "setacl" {
				b, err := aclBinary(o.Value)
				if err != nil || aclText(b) != o.Value {
					t.Fatalf("acl %q reads back as %q (%v)", o.Value, aclText(b), err)
				}
			}
		}
	}
	// Old cases have no credential: they run as root in the tester.
	o, err := ParseOp("chmod a mode=0600")
	if err != nil || o.As != nil || o.Umask != 0 {
		t.Fatalf("op without as=: %+v, %v", o, err)
	}
	o, err = ParseOp("create d/n mode=0666 len=0 pat=1 umask=0022 as=1001:1002+0+1000")
	if err != nil || o.As == nil || o.As.Uid != 1001 || o.As.Gid != 1002 || fmt.Sprint(o.As.Groups) != "[0 1000]" || o.Umask != 0o22 {
		t.Fatalf("op with as=: %+v, %v", o, err)
	}
}

// TestHelpers checks the helper processes: each runs as its credential
// exactly, and permission checks see it.
func TestHelpers(t *testing.T) {
	requireEnv(t)
	dir := t.TempDir()
	if err := traversable(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "private"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(dir, "f"), 0, 1002); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cred  *Cred
		op    string
		errno syscall.Errno
	}{
		{&Cred{}, "stat private", 0},
		{&Cred{Uid: 1000, Gid: 1000}, "stat private/x", syscall.EACCES},
		{&Cred{Uid: 1001, Gid: 1001}, "read f", syscall.EACCES},
		{&Cred{Uid: 1001, Gid: 1001, Groups: []int{1002}}, "read f", 0},
		{&Cred{Uid: 1002, Gid: 1002}, "access f flags=w", syscall.EACCES},
		{&Cred{Uid: 1000, Gid: 1000, Groups: []int{0, 1001}}, "stat f", 0},
	} {
		o, err := ParseOp(c.op)
		if err != nil {
			t.Fatal(err)
		}
		h, err := helpers.get(c.cred)
		if err != nil {
			t.Fatal(err)
		}
		r, err := h.do(dir, o, 0)
		if err != nil {
			t.Fatal(err)
		}
		helpers.put(h)
		if r.Errno != c.errno {
			t.Errorf("as %s: %s: %v, want %v", c.cred, c.op, r, c.errno)
		}
	}
	// The umask travels with the op.
	h, err := helpers.get(&Cred{Uid: 1000, Gid: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer helpers.put(h)
	os.Chmod(dir, 0o777)
	if r, err := h.do(dir, Op{Kind: "mkdir", Path: "m", Mode: 0o777}, 0o027); err != nil || r.Errno != 0 {
		t.Fatal(r, err)
	}
	st, err := os.Stat(filepath.Join(dir, "m"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o750 || st.Sys().(*syscall.Stat_t).Uid != 1000 {
		t.Errorf("mkdir as 1000 with umask 027: %v uid %d", st.Mode(), st.Sys().(*syscall.Stat_t).Uid)
	}
}

var (
	flagReplay      = flag.String("replay", "", "file with a stack, a line \"ops:\" and ops, for TestReplay")
	flagReplayKeep  = flag.Bool("replaykeep", true, "TestReplay keeps the layers and upper dirs (false: to replay many times, with -test.count)")
	flagReplayQuiet = flag.Bool("replayquiet", false, "TestReplay traces only the ops that differ")
)

// TestReplay runs one case from a file (the printed repro format: stack
// lines, then "ops:", then op lines), traces every op on both sides and
// keeps the layers and upper dirs for inspection.
func TestReplay(t *testing.T) {
	if *flagReplay == "" {
		t.Skip("no -replay file")
	}
	requireEnv(t)
	b, err := os.ReadFile(*flagReplay)
	if err != nil {
		t.Fatal(err)
	}
	st, ops, _ := strings.Cut(string(b), "ops:")
	stack, err := ParseStack(st)
	if err != nil {
		t.Fatal(err)
	}
	list, err := ParseOps(ops)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "difftest-replay")
	if err != nil {
		t.Fatal(err)
	}
	r := &Run{Dir: dir, Stack: stack, Ops: list, Keep: *flagReplayKeep, NoBugSkips: !*flagBugSkips, Trace: func(i int, o Op, k, l Result) {
		mark := "  "
		if k != l {
			mark = "!="
		} else if *flagReplayQuiet {
			return
		}
		t.Logf("%s %-50s kernel: %s; layerfs: %s", mark, o, k, l)
	}}
	d, err := r.Execute()
	if err != nil {
		t.Fatal(err)
	}
	if *flagReplayKeep {
		t.Logf("layers and upper dirs kept in %s (k/ kernel, l/ layerfs)", dir)
	}
	if d != nil {
		t.Errorf("diverges:\n%s", d)
	}
}
