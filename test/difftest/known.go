package difftest

import (
	"path"
	"strings"
)

// KernelOptions are the kernel overlay features the oracle is mounted
// with: the ones layerfs implements (directory renames by redirect,
// metadata-only copy-up).
const KernelOptions = "redirect_dir=on,metacopy=on"

// Known is an intended difference between layerfs and kernel overlayfs
// (mounted with KernelOptions; otherwise kernel defaults: index=off,
// xino=off, metacopy=off).
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
		Name: "metacopy-moved",
		Reason: `upper format: the kernel keeps a renamed or hard-linked metacopy ` +
			`file metadata-only (a redirect on the file names its data); layerfs ` +
			`copies the data up before it renames or links such a file, so it ` +
			`writes no redirects on files. The merged views agree.`,
		Tree: func(d TreeDiff) bool {
			k, _, ok1 := strings.Cut(d.Kernel, " metacopy")
			size, _, ok2 := strings.Cut(d.Layerfs, " sha=")
			return d.Where == "upper" && ok1 && ok2 && k == size
		},
	},
	{
		Name: "hardlink-copyup-ino",
		Reason: `after copy-up of one name of a lower hard link (nlink > 1) the kernel ` +
			`(index=off) reports the upper inode at once; layerfs writes no origin for ` +
			`it, so it does after a remount, but within the mount its node keeps the ` +
			`lower inode number: a new kernel inode for the same file would split the ` +
			`page cache between its names and the files already open on it. Proper ` +
			`hard-link identity (kernel index) is issue 6.`,
		Tree: func(d TreeDiff) bool {
			return d.Where == "ino" && strings.HasPrefix(d.Kernel, "st_ino changed") && strings.HasPrefix(d.Layerfs, "st_ino same") ||
				d.Where == "ino-shared" // either way: which names share a number
		},
		// Where the kernel forgot the node (drop_caches) a new lookup
		// gives the copy its own number while a listing may still carry
		// the old one: accepted for regular files only (hard links are
		// files); directories and symlinks stay strictly checked.
		Op: func(o Op, k, l Result) bool {
			// (The kernel itself lists some such copies with d_ino !=
			// st_ino; the marker is dropped on both sides.)
			return o.Kind == "readdir" && k.Errno == l.Errno &&
				strings.ReplaceAll(k.Out, ":reg:d_ino!=st_ino", ":reg") == strings.ReplaceAll(l.Out, ":reg:d_ino!=st_ino", ":reg")
		},
	},
	{
		Name: "failed-rename-opaque",
		Reason: `upper format only, the merged view is the same: a rename of a ` +
			`pure-upper directory into a merged directory that then fails (ENOTEMPTY) ` +
			`leaves the kernel's source directory marked opaque, because the kernel ` +
			`sets the mark before it renames; layerfs checks first and changes nothing ` +
			`on a failed rename. (The regression case moved-dir-not-opaque guards the ` +
			`successful rename.)`,
		Tree: func(d TreeDiff) bool {
			return d.Where == "upper" && d.Kernel == "dir opaque" && d.Layerfs == "dir"
		},
	},
}

// skips says which entries of KnownDiffs apply to a run.
type skips struct {
	none   bool   // leave out every entry (self check: kernel on both sides)
	noBugs bool   // leave out every temporary skip of an open bug ("BUG-")
	unskip string // leave out this one entry
}

func (k *Known) active(s skips) bool {
	if s.none || k.Name == s.unskip {
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
