// Package copyup copies one directory entry (file, directory, symlink or
// special file) from one directory fd to another through a work directory,
// so the destination never shows a half-made entry: the copy is built under
// a temporary name in the work dir and renamed into place last. It knows
// nothing of layers or FUSE.
package copyup

import (
	"errors"
	"fmt"

	"github.com/layerfs/layerfs/copyup/at"
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
	// Data, when set, is where a regular file's data is read from: a
	// source that holds metadata only has its data elsewhere.
	Data *at.Loc
}

// Entry copies src, which st describes, to dst through work. dst must not
// exist.
func Entry(src at.Loc, st *unix.Stat_t, dst at.Loc, work int, opt Options) error {
	tmp := at.Loc{Dir: work, Name: at.TempName()}
	if err := makeCopy(src, st, tmp, opt); err != nil {
		at.RemoveAll(tmp)
		return err
	}
	if err := unix.Renameat2(tmp.Dir, tmp.Name, dst.Dir, dst.Name, unix.RENAME_NOREPLACE); err != nil {
		at.RemoveAll(tmp)
		return err
	}
	return nil
}

// makeCopy creates tmp as a copy of src (described by st).
func makeCopy(src at.Loc, st *unix.Stat_t, tmp at.Loc, opt Options) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return copyFile(src, st, tmp, opt)
	case unix.S_IFDIR:
		// Created private; the real mode is set after the owner.
		if err := unix.Mkdirat(tmp.Dir, tmp.Name, 0o700); err != nil {
			return err
		}
		fd, err := at.Open(tmp, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return copyMeta(src, st, at.Loc{Dir: fd}, opt)
	case unix.S_IFLNK:
		target, err := at.Readlink(src)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, tmp.Dir, tmp.Name); err != nil {
			return err
		}
		return copyMeta(src, st, tmp, opt)
	default: // fifo, socket, device
		if err := unix.Mknodat(tmp.Dir, tmp.Name, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
			return err
		}
		fd, err := at.Open(tmp, unix.O_PATH)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return copyMeta(src, st, at.Loc{Dir: fd}, opt)
	}
}

func copyFile(src at.Loc, st *unix.Stat_t, tmp at.Loc, opt Options) error {
	out, err := at.Create(tmp, unix.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer unix.Close(out)
	if opt.Metacopy {
		if err := unix.Ftruncate(out, st.Size); err != nil {
			return err
		}
	} else if !opt.NoData && st.Size > 0 {
		data := src
		if opt.Data != nil {
			data = *opt.Data
		}
		in, err := at.Open(data, unix.O_RDONLY)
		if err != nil {
			return err
		}
		err = CopyData(in, out, st.Size)
		unix.Close(in)
		if err != nil {
			return err
		}
	}
	if err := copyMeta(src, st, at.Loc{Dir: out}, opt); err != nil {
		return err
	}
	if opt.Fsync && !opt.Metacopy && !opt.NoData && st.Size > 0 {
		return unix.Fsync(out)
	}
	return nil
}

// CopyData copies size bytes of data from in to out (both open files):
// a reflink where the filesystem shares extents, else copy_file_range over
// the data segments only, so holes stay holes.
func CopyData(in, out int, size int64) error {
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

// copyMeta copies owner, xattrs, mode and times of src onto dst (the copy
// itself: a descriptor of it, or a symlink's name).
func copyMeta(src at.Loc, st *unix.Stat_t, dst at.Loc, opt Options) error {
	if err := at.Chown(dst, int(st.Uid), int(st.Gid)); err != nil && (opt.KeepOwner || !errors.Is(err, unix.EPERM)) {
		return err
	}
	if err := copyXattrs(src, dst, opt); err != nil {
		return err
	}
	// chmod after chown: chown clears setuid/setgid bits. A symlink has
	// no mode of its own.
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := at.Chmod(dst, st.Mode&^unix.S_IFMT); err != nil {
			return err
		}
	}
	return at.Utimes(dst, at.Times(st))
}

// copyXattrs copies every xattr of src that opt allows, then opt.SetXattrs.
// xattrs the destination refuses for lack of privilege (trusted.*,
// security.* as a plain user) are skipped, as a plain cp -a would.
func copyXattrs(src, dst at.Loc, opt Options) error {
	names, err := at.ListXattrs(src)
	if err != nil && !errors.Is(err, unix.ENOTSUP) {
		return err
	}
	for _, name := range names {
		if opt.SkipXattr != nil && opt.SkipXattr(name) {
			continue
		}
		val, err := at.GetXattr(src, name)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return err
		}
		if err := at.SetXattr(dst, name, val, 0); err != nil {
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) {
				continue
			}
			return err
		}
	}
	for name, val := range opt.SetXattrs {
		if err := at.SetXattr(dst, name, val, 0); err != nil {
			return err
		}
	}
	return nil
}
