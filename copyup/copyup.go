// Package copyup copies one directory entry (file, directory, symlink or
// special file) from one directory fd to another through a work directory,
// so the destination never shows a half-made entry: the copy is built under
// a temporary name in the work dir and renamed into place last. It knows
// nothing of layers or FUSE.
package copyup

import (
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Options tune one copy.
type Options struct {
	// NoData copies metadata only and leaves a regular file empty (an
	// open with O_TRUNC is about to discard the data anyway).
	NoData bool
	// Fsync flushes a copied file's data to disk before the copy is
	// renamed into place, so a crash never leaves an upper file without
	// its data. Copies without data (directories, metadata only) are not
	// synced, as in kernel overlay: the rename is ordered after their
	// metadata by the filesystem's journal.
	Fsync bool
	// SkipXattr reports xattrs that must not be copied (the union's own
	// metadata).
	SkipXattr func(name string) bool
	// SetXattrs are set on the copy before it is renamed into place
	// (e.g. an origin record).
	SetXattrs map[string][]byte
	// KeepOwner: a failing chown is an error. When false (an unprivileged
	// server), the copy keeps the server's ids where chown is refused.
	KeepOwner bool
	// Metacopy copies a regular file's metadata only: the copy is a hole
	// of the source's size, and the data stays in the source until
	// CopyData fills it in (kernel overlay's metacopy).
	Metacopy bool
}

// Loc is an entry named relative to a directory fd.
type Loc struct {
	Dir  int
	Name string
}

var tmpCounter atomic.Uint64

// TempName returns a fresh name for a temporary entry in a work dir.
func TempName() string {
	return "#lfs" + strconv.FormatUint(tmpCounter.Add(1), 36)
}

// Entry copies src to dst through work. dst must not exist. It returns the
// stat of the source as copied.
func Entry(src, dst Loc, work int, opt Options) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(src.Dir, src.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, err
	}
	tmp := TempName()
	if err := makeCopy(src, &st, Loc{work, tmp}, opt); err != nil {
		RemoveAll(work, tmp)
		return st, err
	}
	if err := unix.Renameat2(work, tmp, dst.Dir, dst.Name, unix.RENAME_NOREPLACE); err != nil {
		RemoveAll(work, tmp)
		return st, err
	}
	return st, nil
}

// makeCopy creates tmp as a copy of src (described by st).
func makeCopy(src Loc, st *unix.Stat_t, tmp Loc, opt Options) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return copyFile(src, st, tmp, opt)
	case unix.S_IFDIR:
		// Created private; the real mode is set after the owner.
		if err := unix.Mkdirat(tmp.Dir, tmp.Name, 0o700); err != nil {
			return err
		}
		fd, err := unix.Openat(tmp.Dir, tmp.Name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return copyMeta(src, st, fd, opt)
	case unix.S_IFLNK:
		target, err := Readlink(src.Dir, src.Name)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, tmp.Dir, tmp.Name); err != nil {
			return err
		}
		return copyLinkMeta(src, st, tmp, opt)
	default: // fifo, socket, device
		if err := unix.Mknodat(tmp.Dir, tmp.Name, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
			return err
		}
		fd, err := unix.Openat(tmp.Dir, tmp.Name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return copyMeta(src, st, fd, opt)
	}
}

func copyFile(src Loc, st *unix.Stat_t, tmp Loc, opt Options) error {
	out, err := unix.Openat(tmp.Dir, tmp.Name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer unix.Close(out)
	if opt.Metacopy {
		if err := unix.Ftruncate(out, st.Size); err != nil {
			return err
		}
	} else if !opt.NoData && st.Size > 0 {
		in, err := unix.Openat(src.Dir, src.Name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = copyData(in, out, st.Size)
		unix.Close(in)
		if err != nil {
			return err
		}
	}
	if err := copyMeta(src, st, out, opt); err != nil {
		return err
	}
	if opt.Fsync && !opt.Metacopy && !opt.NoData && st.Size > 0 {
		return unix.Fsync(out)
	}
	return nil
}

// CopyData copies size bytes of data from in to out (both open files),
// as a copy-up does: shared extents where possible, holes kept.
func CopyData(in, out int, size int64) error { return copyData(in, out, size) }

// copyData copies size bytes: a reflink where the filesystem shares
// extents, else copy_file_range over the data segments only, so holes stay
// holes.
func copyData(in, out int, size int64) error {
	if unix.IoctlFileClone(out, in) == nil {
		return nil
	}
	var off int64
	for off < size {
		data, err := unix.Seek(in, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			data = off // no SEEK_DATA: copy everything
		}
		hole, err := unix.Seek(in, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if hole > size {
			hole = size
		}
		if err := copyRange(in, out, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return unix.Ftruncate(out, size)
}

func copyRange(in, out int, off, n int64) error {
	for n > 0 {
		inOff, outOff := off, off
		chunk := n
		if chunk > 1<<30 {
			chunk = 1 << 30
		}
		w, err := unix.CopyFileRange(in, &inOff, out, &outOff, int(chunk), 0)
		if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
			return copyRead(in, out, off, n)
		}
		if err != nil {
			return err
		}
		if w == 0 {
			return fmt.Errorf("copy-up: source shrank at offset %d: %w", off, unix.EIO)
		}
		off += int64(w)
		n -= int64(w)
	}
	return nil
}

// copyRead is the plain read/write fallback.
func copyRead(in, out int, off, n int64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		b := buf
		if int64(len(b)) > n {
			b = b[:n]
		}
		r, err := unix.Pread(in, b, off)
		if err != nil {
			return err
		}
		if r == 0 {
			return fmt.Errorf("copy-up: source shrank at offset %d: %w", off, unix.EIO)
		}
		if _, err := unix.Pwrite(out, b[:r], off); err != nil {
			return err
		}
		off += int64(r)
		n -= int64(r)
	}
	return nil
}

// copyMeta copies owner, mode, xattrs and times of src onto the open fd
// (an O_PATH fd for special files).
func copyMeta(src Loc, st *unix.Stat_t, fd int, opt Options) error {
	self := "/proc/self/fd/" + strconv.Itoa(fd)
	if err := unix.Fchownat(fd, "", int(st.Uid), int(st.Gid), unix.AT_EMPTY_PATH); err != nil && (opt.KeepOwner || !errors.Is(err, unix.EPERM)) {
		return err
	}
	if err := copyXattrs(src, func(name string, val []byte) error {
		return unix.Setxattr(self, name, val, 0)
	}, opt); err != nil {
		return err
	}
	// chmod after chown: chown clears setuid/setgid bits.
	if err := unix.Chmod(self, st.Mode&^unix.S_IFMT); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, self, ts, 0)
}

func copyLinkMeta(src Loc, st *unix.Stat_t, tmp Loc, opt Options) error {
	if err := unix.Fchownat(tmp.Dir, tmp.Name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil && (opt.KeepOwner || !errors.Is(err, unix.EPERM)) {
		return err
	}
	p := "/proc/self/fd/" + strconv.Itoa(tmp.Dir) + "/" + tmp.Name
	if err := copyXattrs(src, func(name string, val []byte) error {
		return unix.Lsetxattr(p, name, val, 0)
	}, opt); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(tmp.Dir, tmp.Name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// copyXattrs copies every xattr of src that opt allows, then opt.SetXattrs.
// xattrs the destination refuses for lack of privilege (trusted.*,
// security.* as a plain user) are skipped, as a plain cp -a would.
func copyXattrs(src Loc, set func(name string, val []byte) error, opt Options) error {
	p := "/proc/self/fd/" + strconv.Itoa(src.Dir) + "/" + src.Name
	names, err := ListXattrs(p)
	if err != nil && !errors.Is(err, unix.ENOTSUP) {
		return err
	}
	for _, name := range names {
		if opt.SkipXattr != nil && opt.SkipXattr(name) {
			continue
		}
		val, err := GetXattr(p, name)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return err
		}
		if err := set(name, val); err != nil {
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) {
				continue
			}
			return err
		}
	}
	for name, val := range opt.SetXattrs {
		if err := set(name, val); err != nil {
			return err
		}
	}
	return nil
}

// ListXattrs lists the xattr names of path without following a final
// symlink.
func ListXattrs(path string) ([]string, error) {
	sz, err := unix.Llistxattr(path, nil)
	if err != nil || sz == 0 {
		return nil, err
	}
	for {
		buf := make([]byte, sz)
		n, err := unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			sz *= 2
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

// GetXattr reads one xattr of path without following a final symlink.
func GetXattr(path, name string) ([]byte, error) {
	sz, err := unix.Lgetxattr(path, name, nil)
	if err != nil {
		return nil, err
	}
	for {
		buf := make([]byte, sz)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			sz *= 2
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// Readlink reads a symlink relative to a directory fd.
func Readlink(dir int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dir, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// RemoveAll removes name under dir and, for a directory, everything in it.
// It never follows symlinks.
func RemoveAll(dir int, name string) error {
	err := unix.Unlinkat(dir, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return err
	}
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := ReadNames(fd)
	if err == nil {
		for _, n := range names {
			if err = RemoveAll(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Unlinkat(dir, name, unix.AT_REMOVEDIR)
}

// ReadNames lists the names in the directory open at fd (without "." and
// ".."), reading from its start.
func ReadNames(fd int) ([]string, error) {
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return nil, err
	}
	var names []string
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}
