// Package stack reads a stack of layer directories offline, by path, the
// way a union mount shows them: lookups and listings go through package
// merge (the one merge rule the mount uses too), from descriptors opened
// beneath each layer's root for the one call. The layer tools (diff,
// export, check, vacuum) use it to ask "what do the layers below show
// here?" without a mount. It never writes.
package stack

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/unionfs/merge"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// Stack is an ordered list of layer directories, top first.
type Stack struct {
	Layers []string
}

// Loc is one layer's part of a merged entry.
type Loc struct {
	Layer int    // index into Stack.Layers
	Path  string // path inside that layer, "" for its root
}

// Real returns the host path of l in s.
func (s *Stack) Real(l Loc) string { return filepath.Join(s.Layers[l.Layer], l.Path) }

// Entry is a merged entry: the top layer's copy decides its kind and
// metadata; a directory also lists every layer that merges into it.
type Entry struct {
	Top  Loc
	Stat unix.Stat_t
	Dirs []Loc // for a directory: its parts, top first, down to an opaque one
	// Data is where the data of a metadata-only upper file (kernel
	// metacopy) lives; nil for other entries, and where none was found.
	Data *Loc
	// Metacopy: the top copy holds metadata only.
	Metacopy bool
}

// IsDir reports whether e is a directory.
func (e *Entry) IsDir() bool { return e.Stat.Mode&unix.S_IFMT == unix.S_IFDIR }

// ErrNotExist is returned by Lookup for a path the stack does not show.
var ErrNotExist = os.ErrNotExist

// Root returns the merged root directory. Roots always merge: an opaque
// marker on a layer root hides nothing, in the kernel as in layerfs.
func (s *Stack) Root() (*Entry, error) {
	e := &Entry{}
	for i := range s.Layers {
		l := Loc{Layer: i}
		var st unix.Stat_t
		if err := unix.Stat(s.Real(l), &st); err != nil {
			return nil, &os.PathError{Op: "stat", Path: s.Layers[i], Err: err}
		}
		if i == 0 {
			e.Top, e.Stat = l, st
		}
		e.Dirs = append(e.Dirs, l)
	}
	return e, nil
}

// Lookup resolves a slash-separated path relative to the stack root.
func (s *Stack) Lookup(p string) (*Entry, error) {
	e, err := s.Root()
	if err != nil {
		return nil, err
	}
	for _, name := range strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/") {
		if name == "" {
			continue
		}
		if !e.IsDir() {
			return nil, ErrNotExist
		}
		if e, err = s.Child(e, name); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Child resolves name in the merged directory dir.
func (s *Stack) Child(dir *Entry, name string) (*Entry, error) {
	var out *Entry
	err := s.with(dir, func(m *merge.Stack, dirs []merge.Dir) error {
		e, err := m.Resolve(dirs, name)
		if errors.Is(err, unix.ENOENT) {
			return ErrNotExist
		}
		if err != nil {
			return &os.PathError{Op: "lookup", Path: path.Join(s.Real(dir.Top), name), Err: err}
		}
		defer m.Close(&e)
		out = &Entry{Top: locOf(dir, e.Layer, e.Name), Stat: statOf(&e.Stat), Metacopy: e.Metacopy}
		for _, d := range e.Dirs {
			out.Dirs = append(out.Dirs, locOf(dir, d.Layer, d.Name))
		}
		if e.Metacopy && e.DataLayer > 0 {
			l := locOf(dir, e.DataLayer, e.DataName)
			out.Data = &l
		}
		return nil
	})
	return out, err
}

// ReadDir lists the names the merged directory dir shows, sorted, without
// markers or whited-out names.
func (s *Stack) ReadDir(dir *Entry) ([]string, error) {
	var names []string
	err := s.with(dir, func(m *merge.Stack, dirs []merge.Dir) error {
		ents, err := m.List(dirs)
		if err != nil {
			return &os.PathError{Op: "readdir", Path: s.Real(dir.Top), Err: err}
		}
		for _, e := range ents {
			names = append(names, e.Name)
		}
		return nil
	})
	sort.Strings(names)
	return names, err
}

// with runs f on the merge stack of s and the descriptors of dir's parts,
// opened for the call (never through a symlink) and closed after it.
func (s *Stack) with(dir *Entry, f func(m *merge.Stack, dirs []merge.Dir) error) error {
	m := &merge.Stack{}
	defer func() {
		for _, fd := range m.Roots {
			unix.Close(fd)
		}
	}()
	for _, l := range s.Layers {
		fd, err := unix.Open(l, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: l, Err: err}
		}
		m.Roots = append(m.Roots, fd)
	}
	var dirs []merge.Dir
	defer func() {
		for _, d := range dirs {
			unix.Close(d.Fd)
		}
	}()
	for _, l := range dir.Dirs {
		fd, err := beneath(m.Roots[l.Layer], l.Path, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return &os.PathError{Op: "open", Path: s.Real(l), Err: err}
		}
		o := whiteout.ReadOpacity(fd)
		if l.Path == "" {
			o.Opaque = false // a root always merges
		}
		dirs = append(dirs, merge.Dir{Layer: l.Layer, Fd: fd, Opacity: o})
	}
	return f(m, dirs)
}

// locOf turns how a walk from dir reached a copy in layer (merge's Name:
// relative to dir's part in that layer, or absolute) into a Loc.
func locOf(dir *Entry, layer int, reached string) Loc {
	if strings.HasPrefix(reached, "/") {
		return Loc{Layer: layer, Path: strings.TrimPrefix(reached, "/")}
	}
	for _, d := range dir.Dirs {
		if d.Layer == layer {
			return Loc{Layer: layer, Path: path.Join(d.Path, reached)}
		}
	}
	return Loc{Layer: layer, Path: reached}
}

// statOf converts a statx result into the stat form the tools use.
func statOf(x *unix.Statx_t) unix.Stat_t {
	return unix.Stat_t{
		Dev:     unix.Mkdev(x.Dev_major, x.Dev_minor),
		Ino:     x.Ino,
		Nlink:   uint64(x.Nlink),
		Mode:    uint32(x.Mode),
		Uid:     x.Uid,
		Gid:     x.Gid,
		Rdev:    unix.Mkdev(x.Rdev_major, x.Rdev_minor),
		Size:    int64(x.Size),
		Blksize: int64(x.Blksize),
		Blocks:  int64(x.Blocks),
		Atim:    unix.Timespec{Sec: x.Atime.Sec, Nsec: int64(x.Atime.Nsec)},
		Mtim:    unix.Timespec{Sec: x.Mtime.Sec, Nsec: int64(x.Mtime.Nsec)},
		Ctim:    unix.Timespec{Sec: x.Ctime.Sec, Nsec: int64(x.Ctime.Nsec)},
	}
}

// Markers read by host path, for tools that walk one layer by path.

// Markers reads the opaque markers and redirect of directory dir.
func Markers(dir string) whiteout.DirMarkers {
	var m whiteout.DirMarkers
	withFd(dir, func(fd int) { m = whiteout.ReadDirMarkers(fd) })
	return m
}

// IsWhiteout reports whether name in directory dir, described by st, is a
// whiteout in the kernel's forms.
func IsWhiteout(dir, name string, st *unix.Stat_t) bool {
	if whiteout.IsCharWhiteout(st) {
		return true
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		return false
	}
	is := false
	withFd(dir, func(fd int) {
		l := at.Loc{Dir: fd, Name: name}
		var x unix.Statx_t
		is = at.Statx(l, &x) == nil && whiteout.IsWhiteout(l, whiteout.ReadOpacity(fd), &x)
	})
	return is
}

// HasFileWhiteout reports whether dir holds an OCI ".wh.NAME" for name.
func HasFileWhiteout(dir, name string) bool {
	has := false
	withFd(dir, func(fd int) { has = whiteout.HasFileWhiteout(fd, name) })
	return has
}

// Metacopy reports whether the upper file at p holds metadata only.
func Metacopy(p string) bool {
	is := false
	withFd(filepath.Dir(p), func(fd int) { is = whiteout.IsMetacopy(at.Loc{Dir: fd, Name: filepath.Base(p)}) })
	return is
}

func withFd(dir string, f func(fd int)) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	f(fd)
}

// Reading a layer that may change meanwhile (the upper of a live union):
// every access below goes from the layer's root through openat2 with
// RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS, so a directory swapped for a
// symlink never leads a tool outside the layer.

func beneath(root int, rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	return unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

func (s *Stack) openBeneath(layer int, rel string, flags int) (int, error) {
	root, err := unix.Open(s.Layers[layer], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(root)
	return beneath(root, rel, flags)
}

// parentOf opens the directory holding l (an O_PATH fd the caller closes).
func (s *Stack) parentOf(l Loc) (at.Loc, error) {
	dir, name := path.Split(l.Path)
	fd, err := s.openBeneath(l.Layer, strings.TrimSuffix(dir, "/"), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return at.Loc{}, &os.PathError{Op: "open", Path: s.Real(Loc{l.Layer, dir}), Err: err}
	}
	return at.Loc{Dir: fd, Name: name}, nil
}

// Lstat describes l without following a symlink anywhere in its path.
func (s *Stack) Lstat(l Loc, st *unix.Stat_t) error {
	if l.Path == "" {
		return unix.Stat(s.Layers[l.Layer], st)
	}
	pl, err := s.parentOf(l)
	if err != nil {
		return err
	}
	defer unix.Close(pl.Dir)
	return at.Stat(pl, st)
}

// Open opens l (flags as for open(2)) following no symlink.
func (s *Stack) Open(l Loc, flags int) (*os.File, error) {
	fd, err := s.openBeneath(l.Layer, l.Path, flags)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: s.Real(l), Err: err}
	}
	return os.NewFile(uintptr(fd), s.Real(l)), nil
}

// Readlink reads the symlink l.
func (s *Stack) Readlink(l Loc) (string, error) {
	pl, err := s.parentOf(l)
	if err != nil {
		return "", err
	}
	defer unix.Close(pl.Dir)
	target, err := at.Readlink(pl)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: s.Real(l), Err: err}
	}
	return target, nil
}

// At returns l as a descriptor-relative location that follows no symlink
// on the way, for the xattr and stat calls of package at; call done when
// finished with it.
func (s *Stack) At(l Loc) (loc at.Loc, done func(), err error) {
	pl, err := s.parentOf(l)
	if err != nil {
		return at.Loc{}, nil, err
	}
	return pl, func() { unix.Close(pl.Dir) }, nil
}
