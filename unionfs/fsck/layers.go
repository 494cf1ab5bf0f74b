package fsck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/layerfs/layerfs/unionfs/stack"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// ErrInUse is returned (wrapped) when a change is asked for while a live
// union uses the upper or work dir.
var ErrInUse = errors.New("in use")

// resolve checks that every named layer is a directory and resolves
// symlinks once (container engines pass links to layer dirs), so that
// what is reported and changed is the real directory. l.Upper may be ""
// to look at the lowers only, l.Work "" to leave the work dir out.
func resolve(l layout.Layers) (layout.Layers, error) {
	if len(l.Lowers) == 0 && l.Upper == "" {
		return l, errors.New("no layers given")
	}
	// As a mount: an upper or work dir that is (or holds, or sits in) a
	// lower would have a tool change the lower.
	if err := layout.ValidateLayers(l); err != nil {
		return l, err
	}
	one := func(what, p string) (string, error) {
		r, err := filepath.EvalSymlinks(p)
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", what, p, err)
		}
		r, err = filepath.Abs(r)
		if err != nil {
			return "", err
		}
		var st unix.Stat_t
		if err := unix.Stat(r, &st); err != nil {
			return "", fmt.Errorf("%s %s: %w", what, p, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return "", fmt.Errorf("%s %s: not a directory", what, p)
		}
		return r, nil
	}
	var out layout.Layers
	var err error
	for _, p := range l.Lowers {
		r, err := one("lowerdir", p)
		if err != nil {
			return l, err
		}
		out.Lowers = append(out.Lowers, r)
	}
	if l.Upper != "" {
		if out.Upper, err = one("upperdir", l.Upper); err != nil {
			return l, err
		}
	}
	if l.Work != "" {
		if out.Work, err = one("workdir", l.Work); err != nil {
			return l, err
		}
	}
	return out, nil
}

// lock refuses when a live union uses the upper or work dir, then holds
// the work dir's lock (the one a layerfs server takes) until unlock, so
// that no layerfs mount starts while layers are being changed. Kernel
// overlay takes no such lock: a kernel mount started meanwhile is not
// prevented.
func lock(l layout.Layers) (unlock func(), err error) {
	if who, busy := layout.InUse(l); busy {
		return nil, fmt.Errorf("%w by %s", ErrInUse, who)
	}
	if l.Upper == "" && l.Work == "" {
		return func() {}, nil // lowers only: nothing is changed
	}
	if l.Work == "" {
		// The work dir's lock is how a layerfs server in another mount
		// namespace is seen: without it, changing is not safe.
		return nil, errors.New("changing the upper dir needs the workdir too (its lock tells whether a layerfs server uses the union)")
	}
	fd, err := unix.Open(l.Work, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := layout.LockWork(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%w by a layerfs server (it holds the lock on %s)", ErrInUse, l.Work)
	}
	return func() { unix.Close(fd) }, nil
}

// InUseWarning says, for read-only runs, who uses the layers ("" when
// nobody does): results may then be racy.
func InUseWarning(l layout.Layers) string {
	who, busy := layout.InUse(l)
	if !busy {
		return ""
	}
	return "the union is in use by " + who + ": results may be racy"
}

// stackFrom returns the stack whose top layer is dirs[0].
func stackFrom(dirs []string) *stack.Stack {
	return &stack.Stack{Layers: append([]string(nil), dirs...)}
}

// readNames lists a directory, sorted, without touching its atime where
// the caller may ask for that.
func readNames(dir string) ([]string, error) {
	fd, err := openNoAtime(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	names, err := at.ReadNames(fd)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// openNoAtime opens p with O_NOATIME (reading a layer must not change
// it, atime included), falling back where the caller does not own p.
func openNoAtime(p string, flags int) (int, error) {
	fd, err := unix.Open(p, flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Open(p, flags, 0)
	}
	return fd, err
}

// xattrs reads every xattr of l (not following a final symlink), split
// into the union's private ones and the user-visible rest.
func xattrs(l at.Loc) (private, visible map[string][]byte, err error) {
	names, err := at.ListXattrs(l)
	if err != nil && !errors.Is(err, unix.ENOTSUP) {
		return nil, nil, err
	}
	private, visible = map[string][]byte{}, map[string][]byte{}
	for _, n := range names {
		v, err := at.GetXattr(l, n)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, nil, err
		}
		if whiteout.IsPrivateXattr(n) {
			private[n] = v
		} else {
			visible[n] = v
		}
	}
	return private, visible, nil
}

// keepingTimes runs change, which adds or removes entries of directory
// dir, and puts the directory's atime and mtime back: the merged view
// shows an upper directory's times, and repairs must not change them.
func keepingTimes(dir string, change func() error) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return err
	}
	if err := change(); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dir, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

// isEmptyFile reports whether st is what a marker file must be.
func isEmptyFile(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0
}

// sameLocs reports whether two lists of layer directories are the same.
func sameLocs(a, b []stack.Loc) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// errNotExist reports whether err means "the stack shows nothing there".
func errNotExist(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}
