package fsck

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/layerfs/layerfs/unionfs/stack"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// VacuumOptions tune Vacuum.
type VacuumOptions struct {
	// DryRun only reports what would be removed.
	DryRun bool
	// Progress, when set, is called once per upper entry looked at.
	Progress func(bytes int64)
	// Removed, when set, is told of every entry removed (or, in a dry
	// run, that would be); bytes is the space it takes on disk.
	Removed func(path string, isDir bool, bytes int64)
}

// VacuumResult counts what Vacuum removed (or would remove).
type VacuumResult struct {
	Files   int   `json:"files"`
	Dirs    int   `json:"dirs"`
	Bytes   int64 `json:"bytes"` // disk space of what was removed
	Entries int64 `json:"entries"`
	// Errors are entries that could not be examined (and were kept).
	Errors []string `json:"errors"`
}

// Vacuum removes upper copies that are identical to what the lowers show
// at the same path, so that the upper shrinks and the merged view stays
// the same. Only regular files and symlinks are compared, then upper
// directories left empty that match the lower directory they cover.
// "Identical" is strict, and anything in doubt is kept: see sameFile and
// sameDir.
func Vacuum(l layout.Layers, opt VacuumOptions) (*VacuumResult, error) {
	l, err := resolve(l)
	if err != nil {
		return nil, err
	}
	if l.Upper == "" || len(l.Lowers) == 0 {
		return nil, errors.New("vacuum needs an upper dir and its lower dirs")
	}
	if name, mismatch := upperOriginMismatch(l); mismatch {
		return nil, fmt.Errorf("%s of the upper root does not name the top lower dir %s: give the lower dirs the upper was made with", name, l.Lowers[0])
	}
	if !opt.DryRun {
		unlock, err := lock(l)
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	v := &vacuumer{opt: opt, res: &VacuumResult{}, s: stackFrom(append([]string{l.Upper}, l.Lowers...))}
	for _, p := range v.s.Layers {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			v.closeRoots()
			return nil, err
		}
		v.roots = append(v.roots, fd)
	}
	defer v.closeRoots()
	root, err := v.s.Root()
	if err != nil {
		return nil, err
	}
	v.dir(root)
	return v.res, nil
}

type vacuumer struct {
	opt   VacuumOptions
	res   *VacuumResult
	s     *stack.Stack // upper first
	roots []int        // O_PATH fds of the layer roots, as in s
}

func (v *vacuumer) closeRoots() {
	for _, fd := range v.roots {
		unix.Close(fd)
	}
	v.roots = nil
}

func (v *vacuumer) errorf(format string, args ...any) {
	v.res.Errors = append(v.res.Errors, fmt.Sprintf(format, args...))
}

// dir vacuums the upper directory of the merged directory e and reports
// whether it is left (or in a dry run, would be left) empty.
func (v *vacuumer) dir(e *stack.Entry) bool {
	host := v.s.Real(e.Dirs[0])
	var before unix.Stat_t
	if err := unix.Lstat(host, &before); err != nil {
		v.errorf("%v", err)
		return false
	}
	names, err := readNames(host)
	if err != nil {
		v.errorf("%s: %v", host, err)
		return false
	}
	kept, removed := 0, false
	for _, n := range names {
		if v.entry(e, n) {
			removed = true
		} else {
			kept++
		}
	}
	if removed && !v.opt.DryRun {
		// The merged view shows this directory's times: removing
		// entries must not change them.
		ts := []unix.Timespec{before.Atim, before.Mtim}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, host, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			v.errorf("%s: restoring times: %v", host, err)
		}
	}
	return kept == 0
}

// entry vacuums name in the upper directory of e and reports whether it
// was (or would be) removed.
func (v *vacuumer) entry(e *stack.Entry, name string) bool {
	up := stack.Loc{Layer: 0, Path: path.Join(e.Dirs[0].Path, name)}
	host := v.s.Real(up)
	var st unix.Stat_t
	if err := unix.Lstat(host, &st); err != nil {
		v.errorf("%v", err)
		return false
	}
	v.res.Entries++
	if v.opt.Progress != nil {
		v.opt.Progress(st.Size)
	}
	parent := v.s.Real(e.Dirs[0])
	// Markers stay, and so does anything a marker speaks about.
	if whiteout.IsMarkerName(name) || stack.IsWhiteout(parent, name, &st) || stack.HasFileWhiteout(parent, name) {
		return false
	}
	lower, err := v.s.Child(&stack.Entry{Dirs: e.Dirs[1:]}, name)
	if errNotExist(err) {
		return false // only the upper has it
	}
	if err != nil {
		v.errorf("%s: looking up the layers below: %v", host, err)
		return false
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFLNK:
		same, err := v.sameFile(up, lower.Top)
		if err != nil {
			v.errorf("%s: %v", host, err)
		}
		return same && v.remove(up, false)
	case unix.S_IFDIR:
		if !lower.IsDir() || stack.Markers(host).Opaque {
			return false // the layers below do not show through
		}
		if len(readRedirects(host)) > 0 {
			return false // what shows below is not at this path
		}
		child, err := v.s.Child(e, name)
		if err != nil {
			v.errorf("%s: %v", host, err)
			return false
		}
		if !v.dir(child) {
			return false
		}
		same, err := v.sameDir(up, lower.Top)
		if err != nil {
			v.errorf("%s: %v", host, err)
		}
		return same && v.remove(up, true)
	}
	return false
}

// sameFile reports whether the upper regular file or symlink up shows
// exactly what the lower entry lo would show in its place: type, mode,
// owner, size, mtime, user-visible xattrs and content. Both must have one
// link (removing one name of several, or showing a lower file with
// several, changes st_nlink), and neither may carry union metadata other
// than an origin record naming lo itself and, for a metacopy file, the
// metacopy mark (a redirected file shows other data than its own).
func (v *vacuumer) sameFile(up, lo stack.Loc) (bool, error) {
	a, b, err := v.openPair(up, lo)
	if err != nil {
		return false, err
	}
	defer a.close()
	defer b.close()
	if !sameAttrs(&a.st, &b.st) || a.st.Size != b.st.Size || a.st.Nlink != 1 || b.st.Nlink != 1 {
		return false, nil
	}
	// A metacopy upper file (no redirect: sameXattrs allows none) reads
	// its data from the file the lowers show at its path, lo: only its
	// metadata can differ.
	meta := a.st.Mode&unix.S_IFMT == unix.S_IFREG && whiteout.IsMetacopy(a.Loc)
	allowed := []whiteout.Key{whiteout.Origin}
	if meta {
		allowed = append(allowed, whiteout.Metacopy)
	}
	if ok, err := sameXattrs(a, b, allowed...); !ok || err != nil {
		return false, err
	}
	if meta {
		return true, nil
	}
	if a.st.Mode&unix.S_IFMT == unix.S_IFLNK {
		ta, err := at.Readlink(a.Loc)
		if err != nil {
			return false, err
		}
		tb, err := at.Readlink(b.Loc)
		return err == nil && ta == tb, err
	}
	return sameContent(a, b)
}

// sameDir reports whether the (empty) upper directory up shows what the
// lower directory lo would: mode, owner, mtime, user-visible xattrs. The
// union metadata it may carry is an origin naming lo and the kernel's
// "impure" flag (which only speaks of entries, and it has none left).
func (v *vacuumer) sameDir(up, lo stack.Loc) (bool, error) {
	a, b, err := v.openPair(up, lo)
	if err != nil {
		return false, err
	}
	defer a.close()
	defer b.close()
	if !sameAttrs(&a.st, &b.st) {
		return false, nil
	}
	return sameXattrs(a, b, whiteout.Origin, whiteout.Impure)
}

// openPair opens the upper entry up and the lower entry lo it may equal.
func (v *vacuumer) openPair(up, lo stack.Loc) (a, b *ref, err error) {
	if a, err = v.open(up); err != nil {
		return nil, nil, err
	}
	if b, err = v.open(lo); err != nil {
		a.close()
		return nil, nil, err
	}
	return a, b, nil
}

func sameAttrs(a, b *unix.Stat_t) bool {
	return a.Mode == b.Mode && a.Uid == b.Uid && a.Gid == b.Gid && a.Mtim == b.Mtim
}

// sameXattrs compares the user-visible xattrs of a and b and checks that
// neither has union metadata beyond the keys allowed (a lower layer may
// be a former upper dir and carry some too). An origin record on a must
// name b's inode.
func sameXattrs(a, b *ref, allowed ...whiteout.Key) (bool, error) {
	privA, visA, err := xattrs(a.Loc)
	if err != nil {
		return false, err
	}
	privB, visB, err := xattrs(b.Loc)
	if err != nil {
		return false, err
	}
	if !onlyKeys(privA, allowed...) || !onlyKeys(privB, allowed...) || !sameMaps(visA, visB) {
		return false, nil
	}
	for name, val := range privA {
		if _, k, _ := whiteout.ParseKey(name); k == whiteout.Origin && !b.isOrigin(val) {
			return false, nil
		}
	}
	return true, nil
}

// onlyKeys reports whether every private xattr in m is one of the
// kernel's keys allowed.
func onlyKeys(m map[string][]byte, allowed ...whiteout.Key) bool {
	for name := range m {
		_, key, kernel := whiteout.ParseKey(name)
		ok := false
		for _, k := range allowed {
			ok = ok || kernel && key == k
		}
		if !ok {
			return false
		}
	}
	return true
}

func sameMaps(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || !bytes.Equal(va, vb) {
			return false
		}
	}
	return true
}

// sameContent compares two regular files byte by byte.
func sameContent(a, b *ref) (bool, error) {
	fa, err := a.openFile()
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := b.openFile()
	if err != nil {
		return false, err
	}
	defer fb.Close()
	bufA, bufB := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, errA := io.ReadFull(fa, bufA)
		nb, errB := io.ReadFull(fb, bufB)
		if !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		endA := errors.Is(errA, io.EOF) || errors.Is(errA, io.ErrUnexpectedEOF)
		endB := errors.Is(errB, io.EOF) || errors.Is(errB, io.ErrUnexpectedEOF)
		if errA != nil && !endA {
			return false, errA
		}
		if errB != nil && !endB {
			return false, errB
		}
		if endA || endB {
			return endA && endB, nil
		}
	}
}

// remove removes the upper entry up (unless this is a dry run) and counts
// it.
func (v *vacuumer) remove(up stack.Loc, isDir bool) bool {
	r, err := v.open(up)
	if err != nil {
		v.errorf("%v", err)
		return false
	}
	defer r.close()
	if !v.opt.DryRun {
		flags := 0
		if isDir {
			flags = unix.AT_REMOVEDIR
		}
		if err := unix.Unlinkat(r.Dir, r.Name, flags); err != nil {
			v.errorf("%s: %v", v.s.Real(up), err)
			return false
		}
	}
	size := r.st.Blocks * 512
	if isDir {
		v.res.Dirs++
	} else {
		v.res.Files++
	}
	v.res.Bytes += size
	if v.opt.Removed != nil {
		v.opt.Removed(v.s.Real(up), isDir, size)
	}
	return true
}

// ref is an entry held by a descriptor of its directory, opened beneath
// its layer root without following any symlink: the stack resolves by
// path, and a hostile layer must not lead a comparison outside.
type ref struct {
	at.Loc
	st unix.Stat_t
}

func (v *vacuumer) open(l stack.Loc) (*ref, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	dir, name := path.Split(l.Path)
	if dir == "" {
		dir = "."
	}
	fd, err := unix.Openat2(v.roots[l.Layer], dir, &how)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(v.s.Layers[l.Layer], dir), err)
	}
	r := &ref{Loc: at.Loc{Dir: fd, Name: name}}
	if err := at.Stat(r.Loc, &r.st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", v.s.Real(l), err)
	}
	return r, nil
}

func (r *ref) close() { unix.Close(r.Dir) }

// openFile opens the regular file for reading, without changing its atime
// where allowed, and checks it is the one looked at.
func (r *ref) openFile() (*os.File, error) {
	fd, err := at.Open(r.Loc, unix.O_RDONLY|unix.O_NOATIME)
	if errors.Is(err, unix.EPERM) {
		fd, err = at.Open(r.Loc, unix.O_RDONLY)
	}
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Ino != r.st.Ino || st.Dev != r.st.Dev {
		unix.Close(fd)
		return nil, fmt.Errorf("%s changed while it was compared", r.Name)
	}
	return os.NewFile(uintptr(fd), r.Name), nil
}

// isOrigin reports whether the origin record rec names r's inode: an
// empty (null) record names none in particular and is accepted; a record
// is compared by handle type and bytes (the uuid is left out: the kernel
// leaves it null when all layers share a filesystem).
func (r *ref) isOrigin(rec []byte) bool {
	if len(rec) == 0 {
		return true
	}
	want, ok := whiteout.OriginHandle(rec)
	if !ok {
		return false
	}
	h, _, err := unix.NameToHandleAt(r.Dir, r.Name, 0)
	return err == nil && want.Type() == h.Type() && bytes.Equal(want.Bytes(), h.Bytes())
}
