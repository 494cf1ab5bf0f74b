package changes

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/layerfs/layerfs/unionfs/stack"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// ExportOptions tune Export.
type ExportOptions struct {
	// MTime, unless zero, is every entry's mtime, for reproducible layers.
	MTime time.Time
	// Progress, if set, is called after each entry with its data size.
	Progress func(size int64)
	// Warn, if set, hears of entries a layer tarball cannot hold.
	Warn func(msg string)
}

// Export writes the changes the upper makes (see Diff) to w as an OCI
// image layer: a PAX tar of the upper's entries, with whiteouts as empty
// ".wh.NAME" files and opaque directories marked by ".wh..wh..opq".
//
// The same layers always give the same bytes: entries in path order (each
// directory's names sorted, as GNU tar --sort=name; a directory before its
// content, and in a directory its markers first, as the OCI spec asks),
// relative names with a trailing slash on directories, numeric owners
// only, mtimes in whole seconds and no atime or ctime. Markers get their
// directory's mtime.
//
//   - A directory moved in (redirect_dir) is written whole, with its merged
//     content, as OCI has no rename; one that replaces a lower directory
//     (opaque or moved) gets an opaque marker.
//   - A metacopy file's data comes from the lower file it was copied from.
//   - Names of one inode are one file and hard links to its first name.
//   - Files with holes are written in PAX sparse format 1.0.
//   - Xattrs are kept as SCHILY.xattr records, except the union's own
//     (whiteout.IsPrivateXattr). Sockets are skipped with a warning.
func Export(w io.Writer, l layout.Layers, opt ExportOptions) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	x := &exporter{raw: bw, tw: tar.NewWriter(bw), opt: opt, links: map[fileID]string{}}
	wk := newWalker(l, x)
	wk.forget = true
	x.merged = wk.merged
	if err := wk.run(); err != nil {
		return err
	}
	if err := x.tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

type fileID struct{ dev, ino uint64 }

// exporter is the visitor that writes Export's tarball.
type exporter struct {
	merged *stack.Stack
	raw    *bufio.Writer // under tw, for the entries tw cannot write
	tw     *tar.Writer
	opt    ExportOptions
	links  map[fileID]string // first name written of each multiply linked file
}

func (x *exporter) opaque(p string, dir *stack.Entry) error {
	return x.marker(path.Join(p, whiteout.OpaqueMarker), dir)
}

func (x *exporter) deleted(p string, dir *stack.Entry) error {
	return x.marker(path.Join(path.Dir(p), whiteout.Prefix+path.Base(p)), dir)
}

// marker writes an empty marker file owned by root with mode 0, as docker
// and podman write them.
func (x *exporter) marker(name string, dir *stack.Entry) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, ModTime: x.mtime(&dir.Stat), Format: tar.FormatPAX}
	return x.write(hdr, nil)
}

func (x *exporter) mtime(st *unix.Stat_t) time.Time {
	if !x.opt.MTime.IsZero() {
		return x.opt.MTime
	}
	return time.Unix(st.Mtim.Sec, 0)
}

func (x *exporter) changed(p string, _, e, _ *stack.Entry) error {
	real := x.merged.Real(e.Top)
	st := &e.Stat
	hdr := &tar.Header{
		Name:    p,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: x.mtime(st),
		Format:  tar.FormatPAX,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag, hdr.Name = tar.TypeDir, p+"/"
	case unix.S_IFREG:
		return x.file(hdr, real, e)
	case unix.S_IFLNK:
		target, err := x.merged.Readlink(e.Top)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	case unix.S_IFSOCK:
		if x.opt.Warn != nil {
			x.opt.Warn(fmt.Sprintf("skipping socket /%s: a layer tarball cannot hold one", p))
		}
		return nil
	default:
		return fmt.Errorf("%s: unknown file type %o", real, st.Mode)
	}
	if err := addXattrs(hdr, x.merged, e.Top); err != nil {
		return err
	}
	return x.write(hdr, nil)
}

// file writes a regular file: a hard link to an earlier name of the same
// inode, or its data, sparse when it has holes.
func (x *exporter) file(hdr *tar.Header, real string, e *stack.Entry) error {
	if e.Stat.Nlink > 1 {
		id := fileID{e.Stat.Dev, e.Stat.Ino}
		if first, ok := x.links[id]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			return x.write(hdr, nil)
		}
		x.links[id] = hdr.Name
	}
	hdr.Typeflag = tar.TypeReg
	if err := addXattrs(hdr, x.merged, e.Top); err != nil {
		return err
	}
	// Every read goes beneath its layer's root and follows no symlink,
	// so a live union cannot swap in a path to a host file.
	loc := e.Top
	if e.Metacopy {
		// The data is where the union finds it: in the layers below.
		if e.Data == nil {
			return fmt.Errorf("%s: metacopy file whose data is not in the lower layers", x.merged.Real(e.Top))
		}
		loc = *e.Data
	}
	f, err := x.merged.Open(loc, unix.O_RDONLY)
	if err != nil {
		return err
	}
	defer f.Close()
	src := f.Name()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return &os.PathError{Op: "fstat", Path: src, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s: not a regular file", src)
	}
	hdr.Size = st.Size
	if ext, sparse := dataExtents(f, &st); sparse {
		err = x.writeSparse(hdr, f, ext)
	} else {
		err = x.write(hdr, f)
	}
	if err != nil {
		return fmt.Errorf("/%s: %w", hdr.Name, err)
	}
	return nil
}

// write writes one entry through tw, with hdr.Size bytes from data.
func (x *exporter) write(hdr *tar.Header, data io.Reader) error {
	if err := x.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if hdr.Size > 0 {
		n, err := io.CopyN(x.tw, data, hdr.Size)
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("the file shrank while being read (%d of %d bytes)", n, hdr.Size)
		} else if err != nil {
			return err
		}
	}
	x.progress(hdr.Size)
	return nil
}

func (x *exporter) progress(n int64) {
	if x.opt.Progress != nil {
		x.opt.Progress(n)
	}
}

// addXattrs records the xattrs of l in hdr, but not the union's own.
func addXattrs(hdr *tar.Header, s *stack.Stack, l stack.Loc) error {
	loc, done, err := s.At(l)
	if err != nil {
		return err
	}
	defer done()
	real := s.Real(l)
	names, err := at.ListXattrs(loc)
	if errors.Is(err, unix.ENOTSUP) {
		return nil
	} else if err != nil {
		return &os.PathError{Op: "listxattr", Path: real, Err: err}
	}
	for _, n := range names {
		// A PAX record key ends at "=": such a name (Linux allows it)
		// cannot be written without becoming another xattr.
		if whiteout.IsPrivateXattr(n) || strings.ContainsAny(n, "=\x00") {
			continue
		}
		v, err := at.GetXattr(loc, n)
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the listing
		} else if err != nil {
			return &os.PathError{Op: "getxattr " + n, Path: real, Err: err}
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+n] = string(v)
	}
	return nil
}
