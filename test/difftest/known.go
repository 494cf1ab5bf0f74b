package difftest

import (
	"path"
	"strconv"
	"strings"
	"syscall"
)

// Known is an intended difference between layerfs and kernel overlayfs
// (kernel defaults: redirect_dir=off, index=off, xino=off, metacopy=off).
// Every entry says why the difference is intended. Keep this list short:
// anything not here is a divergence, and the kernel is the oracle.
type Known struct {
	Name   string
	Reason string
	// LayerfsOnly selects ops that are not run on the kernel at all:
	// layerfs must refuse them (any errno) and leave no trace.
	LayerfsOnly func(o Op) bool
	// Skip selects ops that are run on neither side.
	Skip func(o Op) bool
	// Op accepts a difference between the kernel's and layerfs's result
	// of o.
	Op func(o Op, k, l Result) bool
	// Stop: when Op accepted a difference where one side succeeded and
	// the other failed, the two states differ, so the sequence ends there
	// without a final comparison.
	Stop bool
	// Tree accepts one difference of the final trees.
	Tree func(d TreeDiff) bool
}

// KnownDiffs is the list of intended differences.
var KnownDiffs = []Known{
	{
		Name: "wh-names",
		Reason: `layerfs refuses to create a name starting with ".wh." (EINVAL): ` +
			`it would read back as an OCI whiteout or opaque marker, since layerfs ` +
			`reads that form in every layer. The kernel, which only knows char 0/0 ` +
			`whiteouts, allows such names.`,
		LayerfsOnly: func(o Op) bool {
			for _, p := range o.newNames() {
				if strings.HasPrefix(path.Base(p), ".wh.") {
					return true
				}
			}
			return false
		},
	},
	{
		Name: "dir-redirect",
		Reason: `renaming a directory that exists in a lower layer: the kernel ` +
			`(redirect_dir=off) answers EXDEV; layerfs plans redirect-style renames ` +
			`(DESIGN.md §4). Today both answer EXDEV; once layerfs succeeds, the ` +
			`trees differ by design and the sequence ends there.`,
		Op: func(o Op, k, l Result) bool {
			return o.Kind == "rename" && k.Errno == syscall.EXDEV && l.Errno == 0
		},
		Stop: true,
	},

	// Temporary skips of open bugs, so that a run can explore past them.
	// Remove each entry once the bug is fixed.
	{
		Name: "BUG-readdir-d_ino",
		Reason: `BUG: readdir d_ino of a copied-up (or renamed copied-up) entry is the ` +
			`upper inode, while st_ino is the origin's (DESIGN.md §5 wants them equal; ` +
			`the kernel makes them equal).`,
		Op: func(o Op, k, l Result) bool {
			return o.Kind == "readdir" && k.Errno == l.Errno &&
				k.Out == strings.ReplaceAll(l.Out, ":d_ino!=st_ino", "")
		},
	},
	{
		Name: "BUG-create-drops-suid",
		Reason: `BUG: a file created with S_ISUID/S_ISGID loses them: layerfs chowns ` +
			`the new file to the caller after creating it (node.own), and chown ` +
			`clears suid/sgid of a non-directory.`,
		Op: func(o Op, k, l Result) bool {
			return o.Kind == "stat" && k.Errno == 0 && l.Errno == 0 && onlySuidDiffers(k.Out, l.Out)
		},
		Tree: func(d TreeDiff) bool {
			return d.Where == "merged" && onlySuidDiffers(d.Kernel, d.Layerfs)
		},
	},
	{
		Name: "BUG-rename-exdev-order",
		Reason: `BUG: renaming a lower/merged directory onto a non-empty directory: ` +
			`the kernel answers EXDEV (checked first), layerfs ENOTEMPTY (it checks ` +
			`the target before the source).`,
		Op: func(o Op, k, l Result) bool {
			return o.Kind == "rename" && k.Errno == syscall.EXDEV && l.Errno == syscall.ENOTEMPTY
		},
	},
	{
		Name: "BUG-moved-dir-not-opaque",
		Reason: `BUG (upper format only): a pure-upper directory renamed into a merged ` +
			`directory is marked opaque by the kernel whether or not a lower layer has ` +
			`the name; layerfs marks it only when a lower layer has the name.`,
		Tree: func(d TreeDiff) bool {
			return d.Where == "upper" && d.Kernel == "dir opaque" && d.Layerfs == "dir"
		},
	},
	{
		Name: "BUG-hardlink-origin-ino",
		Reason: `BUG: after copy-up of one name of a lower hard link (nlink > 1), ` +
			`layerfs keeps reporting the lower (origin) st_ino, so two different files ` +
			`share one st_ino; the kernel (index=off) reports the upper inode then.`,
		Tree: func(d TreeDiff) bool {
			return d.Where == "ino" && strings.HasPrefix(d.Kernel, "st_ino changed") && strings.HasPrefix(d.Layerfs, "st_ino same") ||
				d.Where == "ino-shared" && len(d.Layerfs) > len(d.Kernel)
		},
	},
	{
		Name: "BUG-copyup-parent-mtime",
		Reason: `BUG: copying an entry up changes the mtime of its (upper) parent ` +
			`directory; the kernel restores the parent's times after a copy-up, as ` +
			`a copy-up is no change the user made.`,
		Tree: func(d TreeDiff) bool {
			k, _ := strconv.ParseInt(d.Kernel, 10, 64)
			l, _ := strconv.ParseInt(d.Layerfs, 10, 64)
			return d.Where == "dir-mtime" && fixedTime(k) && !fixedTime(l)
		},
	},
	{
		Name: "BUG-rmdir-copyup-first",
		Reason: `BUG (upper only): rmdir of a non-empty lower directory copies its ` +
			`parents up before it finds ENOTEMPTY; the kernel checks emptiness first ` +
			`and leaves the upper dir alone.`,
		Tree: func(d TreeDiff) bool {
			return d.Where == "upper" && d.Kernel == "<absent>" && d.Layerfs == "dir"
		},
	},
	{
		Name: "BUG-same-name-rename",
		Reason: `BUG: once an entry was copied up, a lookup gives it a new node id, so ` +
			`rename(X, X) reaches layerfs as a rename between two inodes; layerfs ` +
			`answers 0 and go-fuse's MvChild(X, X) then drops the node: later ops on ` +
			`the file fail (ENOENT) or reach a stale name (ENXIO on a whiteout).`,
		Skip: func(o Op) bool { return o.Kind == "rename" && o.Path == o.Path2 },
	},
	{
		Name: "BUG-node-identity-estale",
		Reason: `BUG: a directory's FUSE node identity changes when it is copied up ` +
			`(StableAttr.Gen is the btime of the top copy), so a later lookup returns ` +
			`the unchanged child directory under a new parent node; the kernel must ` +
			`move the dentry and fails with ESTALE inside rename, and its ancestor ` +
			`checks (rename into own subtree) see different dentries.`,
		Op: func(o Op, k, l Result) bool {
			if l.Errno == syscall.ESTALE {
				return true
			}
			return o.Kind == "rename" && k.Errno != 0 && l.Errno != 0 && related(o.Path, o.Path2)
		},
		Stop: true,
	},
}

// skips says which entries of KnownDiffs apply to a run.
type skips struct {
	noBugs bool   // leave out every temporary skip of an open bug ("BUG-")
	unskip string // leave out this one entry
}

func (k *Known) active(s skips) bool {
	if k.Name == s.unskip {
		return false
	}
	return !s.noBugs || !strings.HasPrefix(k.Name, "BUG-")
}

func layerfsOnly(o Op, s skips) *Known {
	for i := range KnownDiffs {
		if f := KnownDiffs[i].LayerfsOnly; f != nil && KnownDiffs[i].active(s) && f(o) {
			return &KnownDiffs[i]
		}
	}
	return nil
}

func skipped(o Op, s skips) *Known {
	for i := range KnownDiffs {
		if f := KnownDiffs[i].Skip; f != nil && KnownDiffs[i].active(s) && f(o) {
			return &KnownDiffs[i]
		}
	}
	return nil
}

func knownOp(o Op, k, l Result, s skips) *Known {
	for i := range KnownDiffs {
		if f := KnownDiffs[i].Op; f != nil && KnownDiffs[i].active(s) && f(o, k, l) {
			return &KnownDiffs[i]
		}
	}
	return nil
}

func filterTree(diffs []TreeDiff, s skips) []TreeDiff {
	var out []TreeDiff
next:
	for _, d := range diffs {
		for _, k := range KnownDiffs {
			if k.Tree != nil && k.active(s) && k.Tree(d) {
				continue next
			}
		}
		out = append(out, d)
	}
	return out
}

// onlySuidDiffers reports whether two descriptions differ only in their
// second field, a mode, and only by the suid/sgid bits the kernel has.
func onlySuidDiffers(k, l string) bool {
	kf, lf := strings.Fields(k), strings.Fields(l)
	if len(kf) != len(lf) || len(kf) < 2 || kf[0] != "reg" {
		return false
	}
	for i := range kf {
		if i != 1 && kf[i] != lf[i] {
			return false
		}
	}
	km, err1 := strconv.ParseUint(kf[1], 8, 32)
	lm, err2 := strconv.ParseUint(lf[1], 8, 32)
	return err1 == nil && err2 == nil && km != lm && km&^0o6000 == lm
}

// related reports whether one path is the other or below it.
func related(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}
