package difftest

import (
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// KernelOptions are the kernel overlay features the oracle is mounted
// with: the ones layerfs implements (directory renames by redirect,
// metadata-only copy-up, hard links through the index, xino; the
// generated layers share one filesystem, where xino changes no number).
const KernelOptions = "redirect_dir=on,metacopy=on,index=on,xino=on"

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
	// SkipOn selects ops that are run on neither side by what their
	// target (o.Path) is on the kernel's side before the op (nil: it
	// does not exist).
	SkipOn func(o Op, st *unix.Stat_t) bool
	// Op accepts a difference between the kernel's and layerfs's result
	// of o.
	Op func(o Op, k, l Result) bool
	// OpOn is Op knowing o's target (o.Path) as it was on the kernel's
	// side before the op (nil: it did not exist).
	OpOn func(o Op, pre *unix.Stat_t, k, l Result) bool
	// Taint names paths where o (with those results on both sides) may
	// have left differences in the upper dirs that Tainted accepts at the
	// final comparison: side effects of a failed op, say.
	Taint   func(o Op, pre *unix.Stat_t, k, l Result) []string
	Tainted func(d TreeDiff) bool
	// Norm takes this entry's difference out of the kernel's and
	// layerfs's description of an entry (unchanged when it has none), so
	// that differences of several open bugs in one entry are accepted
	// together. where: "merged" (a merged tree entry) or an op's kind.
	Norm func(where, k, l string) (string, string)
	// Stop: when Op accepted a difference where one side succeeded and
	// the other failed, the two states differ, so the sequence ends there
	// without a final comparison.
	Stop bool
	// Tree accepts one difference of the final trees.
	Tree func(d TreeDiff) bool
	// TreeIn accepts one difference of the final trees in view of all
	// of them.
	TreeIn func(d TreeDiff, all []TreeDiff) bool
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
			if o.Kind == "tmpfile" {
				return false // the unnamed file is made on both sides (below)
			}
			for _, p := range o.newNames() {
				if strings.HasPrefix(path.Base(p), ".wh.") {
					return true
				}
			}
			return false
		},
		// A tmpfile is made (its directory copied up) before its name
		// is refused; the run stops there.
		Op: func(o Op, k, l Result) bool {
			return o.Kind == "tmpfile" && strings.HasPrefix(path.Base(o.Path), ".wh.") &&
				k.Errno == 0 && l.Errno == unix.EINVAL && strings.HasSuffix(l.Out, " link")
		},
		Stop: true,
	},
	{
		Name: "kernel-acl-removal-drops-sgid",
		Reason: `kernel overlay drops S_ISGID when a user outside the entry's ` +
			`group removes its access ACL (ovl_set_or_remove_acl applies ` +
			`posix_acl_update_mode's rule to removal too), copying the entry up ` +
			`to do so, after which removing an ACL that is not there succeeds ` +
			`(the upper filesystem's answer) instead of ENODATA. Removing an ACL ` +
			`changes no mode on any other filesystem (ext4, tmpfs and xfs keep ` +
			`S_ISGID) nor on layerfs. Such ops are run on neither side.`,
		SkipOn: func(o Op, st *unix.Stat_t) bool {
			return o.Kind == "delacl" && o.Flags != "default" && o.As != nil && st != nil &&
				st.Mode&unix.S_ISGID != 0 && !o.As.inGroup(int(st.Gid)) && o.As.Uid != 0
		},
	},
	{
		Name: "kernel-acl-removal-upper",
		Reason: `removing an ACL that is not there: kernel overlay answers ENODATA ` +
			`for an entry still in a lower layer (it looks before it copies up) ` +
			`and the upper filesystem's answer for one in the upper dir (ext4 ` +
			`and tmpfs say 0). layerfs answers the same way, but which entries ` +
			`are in its upper dir may differ (index-names, metacopy-moved), so ` +
			`0 and ENODATA are accepted for each other when there was no ACL ` +
			`on either side; nothing changes either way.`,
		Op: func(o Op, k, l Result) bool {
			return o.Kind == "delacl" && k.Out == "none" && l.Out == "none" &&
				(k.Errno == 0 || k.Errno == unix.ENODATA) && (l.Errno == 0 || l.Errno == unix.ENODATA)
		},
	},
	{
		Name: "index-names",
		Reason: `upper format: which names of a hard-linked file (one inode in ` +
			`W/index) are linked into the upper dir. The kernel links the name an ` +
			`operation used; a FUSE server learns only the inode for I/O, chmod ` +
			`and the like, so layerfs links the name it knows the inode by. Both ` +
			`keep the data in the index and show the same merged view.`,
		TreeIn: func(d TreeDiff, all []TreeDiff) bool {
			if d.Where != "upper" {
				return false
			}
			hl := func(s string) bool { return strings.HasSuffix(s, " hl") }
			absent := func(s string) bool { return s == "<absent>" }
			if (hl(d.Kernel) || hl(d.Layerfs)) && (hl(d.Kernel) || absent(d.Kernel)) && (hl(d.Layerfs) || absent(d.Layerfs)) {
				return true
			}
			// The directories copied up to hold such a name.
			if !(d.Kernel == "dir" && absent(d.Layerfs)) && !(absent(d.Kernel) && d.Layerfs == "dir") {
				return false
			}
			for _, o := range all {
				if o.Where == "upper" && strings.HasPrefix(o.Path, d.Path+"/") && (hl(o.Kernel) || hl(o.Layerfs)) {
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
		Name: "metacopy-redirect-too-long",
		Reason: `a consequence of metacopy-moved: the kernel renames or links a ` +
			`lower file metadata-only and names its data with an absolute ` +
			`redirect, which may be at most 256 bytes (redirect_max), so a file ` +
			`whose path is longer answers EXDEV; layerfs copies the data and ` +
			`needs no redirect. (Directories have the same limit on both sides.) ` +
			`The run stops there, as the two sides now differ.`,
		OpOn: func(o Op, pre *unix.Stat_t, k, l Result) bool {
			// The path a file had in its lower layer is not known here;
			// a non-directory gets EXDEV from nothing else.
			file := pre != nil && pre.Mode&unix.S_IFMT != unix.S_IFDIR
			return (o.Kind == "link" || o.Kind == "rename") && file && k.Errno == unix.EXDEV && l.Errno == 0
		},
		Stop: true,
	},
	{
		Name: "failed-rename-copies-up",
		Reason: `a rename of a lower directory that fails (ENOTEMPTY, EXDEV ` +
			`and the like, on both sides) leaves the kernel's source copied up ` +
			`with its parents, an impure mark and a redirect, and its parent's ` +
			`mtime changed: the kernel copies up and prepares before it finds ` +
			`the target unfit. layerfs checks first and changes nothing (as in ` +
			`failed-rename-opaque). Accepts, at the source and the directories ` +
			`above it, upper dirs only the kernel has and the parents' times.`,
		Taint: func(o Op, pre *unix.Stat_t, k, l Result) []string {
			if o.Kind == "rename" && k.Errno != 0 && k.Errno == l.Errno && pre != nil && pre.Mode&unix.S_IFMT == unix.S_IFDIR {
				return ancestors(o.Path)
			}
			return nil
		},
		Tainted: func(d TreeDiff) bool {
			return d.Where == "upper" && strings.HasPrefix(d.Kernel, "dir") && d.Layerfs == "<absent>" ||
				d.Where == "dir-mtime"
		},
	},
	{
		Name: "kernel-readdir-ino-quirk",
		Reason: `with index=on the kernel lists some entries of a directory with ` +
			`d_ino != st_ino (seen for regular files after copy-ups and exchanges); ` +
			`layerfs lists d_ino == st_ino, which is what readdir promises. The ` +
			`kernel's marker is dropped for regular files; layerfs's markers, ` +
			`directories and symlinks stay strictly checked.`,
		Op: func(o Op, k, l Result) bool {
			return o.Kind == "readdir" && k.Errno == l.Errno &&
				strings.ReplaceAll(k.Out, ":reg:d_ino!=st_ino", ":reg") == l.Out
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

// normed applies the Norm of every active entry to k and l in turn and
// returns the first entry that changed them, when they then agree.
func normed(where, k, l string, s skips) *Known {
	var first *Known
	for i := range KnownDiffs {
		kn := &KnownDiffs[i]
		if kn.Norm == nil || !kn.active(s) {
			continue
		}
		nk, nl := kn.Norm(where, k, l)
		if (nk != k || nl != l) && first == nil {
			first = kn
		}
		k, l = nk, nl
	}
	if first != nil && k == l {
		return first
	}
	return nil
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

// skipped returns the entry that leaves o out; stat gives o's target on
// the kernel's side, for SkipOn.
func skipped(o Op, stat func() *unix.Stat_t, s skips) *Known {
	for i := range KnownDiffs {
		if f := KnownDiffs[i].Skip; f != nil && KnownDiffs[i].active(s) && f(o) {
			return &KnownDiffs[i]
		}
		if f := KnownDiffs[i].SkipOn; f != nil && KnownDiffs[i].active(s) && f(o, stat()) {
			return &KnownDiffs[i]
		}
	}
	return nil
}

func knownOp(o Op, pre *unix.Stat_t, k, l Result, s skips) *Known {
	for i := range KnownDiffs {
		if f := KnownDiffs[i].Op; f != nil && KnownDiffs[i].active(s) && f(o, k, l) {
			return &KnownDiffs[i]
		}
		if f := KnownDiffs[i].OpOn; f != nil && KnownDiffs[i].active(s) && f(o, pre, k, l) {
			return &KnownDiffs[i]
		}
	}
	if k.Errno == l.Errno {
		return normed(o.Kind, k.Out, l.Out, s)
	}
	return nil
}

// taints records in t the paths o taints, by entry.
func taints(t map[string]*Known, o Op, pre *unix.Stat_t, k, l Result, s skips) {
	for i := range KnownDiffs {
		if f := KnownDiffs[i].Taint; f != nil && KnownDiffs[i].active(s) {
			for _, p := range f(o, pre, k, l) {
				t[p] = &KnownDiffs[i]
			}
		}
	}
}

// untainted drops the diffs that the entry tainting their path accepts.
func untainted(diffs []TreeDiff, t map[string]*Known) []TreeDiff {
	var out []TreeDiff
	for _, d := range diffs {
		if k := t[d.Path]; k != nil && k.Tainted(d) {
			continue
		}
		out = append(out, d)
	}
	return out
}

// ancestors returns p and the directories above it ("" for the root).
func ancestors(p string) []string {
	out := []string{p}
	for p != "" {
		p = parentOf(p)
		out = append(out, p)
	}
	return out
}

func filterTree(diffs []TreeDiff, s skips) []TreeDiff {
	var out []TreeDiff
next:
	for _, d := range diffs {
		for _, k := range KnownDiffs {
			if k.Tree != nil && k.active(s) && k.Tree(d) {
				continue next
			}
			if k.TreeIn != nil && k.active(s) && k.TreeIn(d, diffs) {
				continue next
			}
		}
		if d.Where == "merged" && normed(d.Where, d.Kernel, d.Layerfs, s) != nil {
			continue
		}
		out = append(out, d)
	}
	return out
}
