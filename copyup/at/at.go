// Package at names filesystem entries relative to directory descriptors
// and wraps the *at system calls on them, never following a final symlink:
// a symlink inside a layer is data. It is the one place for those call
// patterns (the /proc/self/fd path of a descriptor, the xattr retry
// loops, getdents), shared by the copier, the format and the node tree.
package at

import (
	"errors"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Loc is an entry named relative to a directory descriptor. An empty Name
// is the descriptor itself (often an O_PATH descriptor of a directory, or
// of a file that has no name). Dir may be unix.AT_FDCWD (see Cwd): Name is
// then a plain path.
type Loc struct {
	Dir  int
	Name string
}

// Cwd names the entry at path p (absolute, or relative to the working
// directory), for tools that walk layers by path.
func Cwd(p string) Loc { return Loc{Dir: unix.AT_FDCWD, Name: p} }

// Path names l through /proc/self/fd, for the calls that take no
// descriptor (xattrs, chmod on O_PATH descriptors). The descriptor part is
// a magic link that resolves to the file it holds; Name, when set, is
// then looked up in it.
func (l Loc) Path() string {
	if l.Dir == unix.AT_FDCWD {
		return l.Name
	}
	b := make([]byte, 0, 32+len(l.Name))
	b = append(b, "/proc/self/fd/"...)
	b = strconv.AppendInt(b, int64(l.Dir), 10)
	if l.Name != "" {
		b = append(b, '/')
		b = append(b, l.Name...)
	}
	return string(b)
}

// StatxMask is what Statx asks for: the basic stats and the birth time.
const StatxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// Statx describes l without following a final symlink.
func Statx(l Loc, x *unix.Statx_t) error {
	if l.Name == "" {
		return unix.Statx(l.Dir, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, StatxMask, x)
	}
	return unix.Statx(l.Dir, l.Name, unix.AT_SYMLINK_NOFOLLOW, StatxMask, x)
}

// Stat describes l without following a final symlink.
func Stat(l Loc, st *unix.Stat_t) error {
	if l.Name == "" {
		return unix.Fstat(l.Dir, st)
	}
	return unix.Fstatat(l.Dir, l.Name, st, unix.AT_SYMLINK_NOFOLLOW)
}

// Exists reports whether l names anything.
func Exists(l Loc) bool {
	var st unix.Stat_t
	return Stat(l, &st) == nil
}

// Open opens l without following a final symlink. An empty Name reopens
// the descriptor through /proc (an O_PATH descriptor gets real access).
func Open(l Loc, flags int) (int, error) {
	if l.Name == "" {
		return unix.Open(l.Path(), flags|unix.O_CLOEXEC, 0)
	}
	return unix.Openat(l.Dir, l.Name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// Create makes l as a new regular file with mode (O_EXCL: it must not
// exist) and opens it with flags.
func Create(l Loc, flags int, mode uint32) (int, error) {
	return unix.Openat(l.Dir, l.Name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
}

// OpenDir opens the directory l as an O_PATH descriptor, refusing a
// symlink.
func OpenDir(l Loc) (int, error) {
	return unix.Openat(l.Dir, l.Name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// Readlink reads the symlink l.
func Readlink(l Loc) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(l.Dir, l.Name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// Chown changes the owner of l itself (a symlink, not its target); -1
// leaves an id as it is.
func Chown(l Loc, uid, gid int) error {
	if l.Name == "" {
		return unix.Fchownat(l.Dir, "", uid, gid, unix.AT_EMPTY_PATH)
	}
	return unix.Fchownat(l.Dir, l.Name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

// Chmod sets the mode of l. The /proc path follows a final symlink, and
// a symlink has no mode of its own: never call it on one.
func Chmod(l Loc, mode uint32) error {
	return unix.Fchmodat(unix.AT_FDCWD, l.Path(), mode, 0)
}

// Utimes sets the access and modification times of l itself.
func Utimes(l Loc, ts []unix.Timespec) error {
	if l.Name == "" {
		return unix.UtimesNanoAt(unix.AT_FDCWD, l.Path(), ts, 0)
	}
	return unix.UtimesNanoAt(l.Dir, l.Name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// Times returns the access and modification times of st, for Utimes.
func Times(st *unix.Stat_t) []unix.Timespec { return []unix.Timespec{st.Atim, st.Mtim} }

// Link makes the new name to for the file from; an empty from.Name links
// the file its descriptor holds (a nameless O_TMPFILE file).
func Link(from, to Loc) error {
	if from.Name == "" {
		return unix.Linkat(unix.AT_FDCWD, from.Path(), to.Dir, to.Name, unix.AT_SYMLINK_FOLLOW)
	}
	return unix.Linkat(from.Dir, from.Name, to.Dir, to.Name, 0)
}

// Xattrs of l itself: the /proc path of a descriptor (Name "") must be
// followed to reach the file, a name in a directory must not.

// GetXattr reads the xattr attr of l. Most values are small: one call
// with a small buffer, a size query only when it is too small.
func GetXattr(l Loc, attr string) ([]byte, error) {
	p := l.Path()
	buf := make([]byte, 256)
	for {
		n, err := getxattr(p, l.Name == "", attr, buf)
		if err == nil {
			return buf[:n], nil
		}
		if !errors.Is(err, unix.ERANGE) {
			return nil, err
		}
		size, err := getxattr(p, l.Name == "", attr, nil)
		if err != nil {
			return nil, err
		}
		buf = make([]byte, max(size, 2*len(buf)))
	}
}

// HasXattr reports whether l has the xattr attr.
func HasXattr(l Loc, attr string) bool {
	_, err := getxattr(l.Path(), l.Name == "", attr, nil)
	return err == nil
}

// GetXattrInto reads the xattr attr of l into dest (a size query when
// dest is empty), as getxattr(2) does.
func GetXattrInto(l Loc, attr string, dest []byte) (int, error) {
	return getxattr(l.Path(), l.Name == "", attr, dest)
}

func getxattr(p string, follow bool, attr string, dest []byte) (int, error) {
	if follow {
		return unix.Getxattr(p, attr, dest)
	}
	return unix.Lgetxattr(p, attr, dest)
}

// SetXattr sets the xattr attr of l.
func SetXattr(l Loc, attr string, val []byte, flags int) error {
	if l.Name == "" {
		return unix.Setxattr(l.Path(), attr, val, flags)
	}
	return unix.Lsetxattr(l.Path(), attr, val, flags)
}

// RemoveXattr removes the xattr attr of l.
func RemoveXattr(l Loc, attr string) error {
	if l.Name == "" {
		return unix.Removexattr(l.Path(), attr)
	}
	return unix.Lremovexattr(l.Path(), attr)
}

// ListXattrs lists the xattr names of l.
func ListXattrs(l Loc) ([]string, error) {
	p := l.Path()
	list := func(dest []byte) (int, error) {
		if l.Name == "" {
			return unix.Listxattr(p, dest)
		}
		return unix.Llistxattr(p, dest)
	}
	buf := make([]byte, 1024)
	for {
		n, err := list(buf)
		if errors.Is(err, unix.ERANGE) {
			size, err := list(nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, max(size, 2*len(buf)))
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		start := 0
		for i := 0; i < n; i++ {
			if buf[i] == 0 {
				if i > start {
					names = append(names, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return names, nil
	}
}

var tmpCounter atomic.Uint64

// TempName returns a fresh name for a temporary entry in a work dir.
func TempName() string {
	return "#lfs" + strconv.FormatUint(tmpCounter.Add(1), 36)
}

// RemoveAll removes l and, for a directory, everything in it. It never
// follows symlinks; a missing l is no error.
func RemoveAll(l Loc) error {
	err := unix.Unlinkat(l.Dir, l.Name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return err
	}
	fd, err := unix.Openat(l.Dir, l.Name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	ents, err := Dirents(fd)
	for _, e := range ents {
		if err = RemoveAll(Loc{fd, e.Name}); err != nil {
			break
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Unlinkat(l.Dir, l.Name, unix.AT_REMOVEDIR)
}
