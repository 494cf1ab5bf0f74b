// Package merge is the union's one merge rule: what a stack of layer
// directories shows at a name (Resolve, Probe) and in a directory (List).
// The first layer that has a name decides; whiteouts and opaque
// directories stop the walk; directories of the layers below merge until
// a non-directory or an opaque one; a redirected directory continues the
// walk where its lower part lives; an upper file with metadata only
// (metacopy) finds its data below. Markers are read in every form the
// whiteout package knows.
//
// It works on directory descriptors only and knows nothing of FUSE: the
// node tree holds the descriptors a result hands out, and the offline
// layer tools open them from paths for one call.
package merge

import (
	"strings"
	"syscall"

	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// Upper is the index of the writable layer; lowers are 1..n, top first.
const Upper = 0

// Dir is one layer's copy of a merged directory.
type Dir struct {
	Layer int
	Fd    int // an O_PATH descriptor of the directory
	// Opacity are its opaque markers, read when it was opened.
	whiteout.Opacity
	// Name says how the walk reached it: a name (or relative redirect)
	// in the parent directory of the same layer, or an absolute path from
	// the layer's root ("/a/b") where it followed an absolute redirect.
	Name string
}

// Stack is the layer stack as a walk sees it.
type Stack struct {
	// Roots[i] is an O_PATH descriptor of layer i's root, -1 for an
	// absent upper layer.
	Roots []int
	// NoFollowRedirect ignores redirects in the layers (kernel
	// redirect_dir=nofollow): a moved directory shows its upper part.
	NoFollowRedirect bool
	// NoMetacopy refuses metadata-only files (kernel metacopy=off):
	// resolving one answers EPERM.
	NoMetacopy bool
	// Hold, when set, is told of every descriptor a result keeps, and
	// Release closes one; without them descriptors are plain ones.
	Hold, Release func(fd int)
}

// Entry is what the layers show at a name.
type Entry struct {
	// Layer is the layer whose copy is shown; Stat describes that copy.
	Layer int
	Stat  unix.Statx_t
	// Name says how the walk reached the shown copy, as Dir.Name.
	Name string
	// Dirs: a directory's copies in every layer that merges into it, top
	// first, descriptors open (Close them); nil for a non-directory.
	Dirs []Dir
	// Metacopy: a file with metadata only. Its data is in layer
	// DataLayer, reached as DataName says (as Dir.Name): the same name in
	// the parent's copy there, or, where a redirect names another place,
	// the file DataFd holds open (O_PATH). DataLayer is 0 where no data
	// was found: reads must fail with EIO.
	Metacopy  bool
	DataLayer int
	DataName  string
	DataFd    int
}

// IsDir reports whether the entry is a directory.
func (e *Entry) IsDir() bool { return e.Dirs != nil }

// Close releases the descriptors e holds.
func (s *Stack) Close(e *Entry) {
	for _, d := range e.Dirs {
		s.release(d.Fd)
	}
	e.Dirs = nil
	if e.DataFd > 0 {
		s.release(e.DataFd)
	}
	e.DataFd = 0
}

func (s *Stack) hold(fd int) {
	if s.Hold != nil {
		s.Hold(fd)
	}
}

func (s *Stack) release(fd int) {
	if s.Release != nil {
		s.Release(fd)
	} else {
		unix.Close(fd)
	}
}

// RootDirs returns the merged root: every layer's root, top first. Roots
// always merge: an opaque marker on a layer root hides nothing, in the
// kernel as here. The descriptors are the Stack's own, not held.
func (s *Stack) RootDirs() []Dir {
	var dirs []Dir
	for i, fd := range s.Roots {
		if fd < 0 {
			continue
		}
		o := whiteout.ReadOpacity(fd)
		dirs = append(dirs, Dir{Layer: i, Fd: fd, Opacity: whiteout.Opacity{XattrWhiteouts: o.XattrWhiteouts}})
	}
	return dirs
}

// Resolve looks name up in the merged directory made of dirs (ENOENT
// where nothing shows).
func (s *Stack) Resolve(dirs []Dir, name string) (Entry, error) {
	var p Probe
	if err := s.walk(dirs, name, &p); err != nil {
		return Entry{}, err
	}
	if !p.Exists {
		return Entry{}, syscall.ENOENT
	}
	return p.Entry, nil
}

// Probe is one look at a name of a merged directory, with all that a
// change of the name needs to know, so that an operation asks once.
type Probe struct {
	Entry
	// Exists: some layer shows the name (Entry is set).
	Exists bool
	// Whiteout is the form of whiteout that holds the name in the upper
	// copy of the directory (dirs[0], when it is the upper layer).
	Whiteout whiteout.Form
	// Below: a layer under the upper one shows the name, so removing it
	// from the upper layer, or moving it away, must leave a whiteout.
	Below bool
}

// Probe looks name up in the merged directory made of dirs and finds out
// whether the layers below the upper one show it.
func (s *Stack) Probe(dirs []Dir, name string) (Probe, error) {
	var p Probe
	if err := s.walk(dirs, name, &p); err != nil {
		return Probe{}, err
	}
	switch {
	case !p.Exists:
	case p.Layer != Upper:
		p.Below = true
	case len(p.Dirs) > 1 && p.Dirs[1].Name == name:
		p.Below = true // merged with a lower copy of the same name
	default:
		p.Below = s.Shows(lowers(dirs), name)
	}
	return p, nil
}

// layerIndex returns the index in dirs of layer's copy, or -1.
func layerIndex(dirs []Dir, layer int) int {
	for i, d := range dirs {
		if d.Layer == layer {
			return i
		}
	}
	return -1
}

// lowers returns the part of dirs below the upper layer.
func lowers(dirs []Dir) []Dir {
	if len(dirs) > 0 && dirs[0].Layer == Upper {
		return dirs[1:]
	}
	return dirs
}

// Shows reports whether the merged directory made of dirs shows name:
// the first layer that has the name, or a whiteout for it, decides. It
// opens nothing and follows no redirect.
func (s *Stack) Shows(dirs []Dir, name string) bool {
	for _, d := range dirs {
		var x unix.Statx_t
		err := at.Statx(at.Loc{Dir: d.Fd, Name: name}, &x)
		if err == unix.ENOENT {
			if whiteout.HasFileWhiteout(d.Fd, name) {
				return false
			}
			continue
		}
		if err != nil {
			return true // be safe: a name that may be there stays hidden
		}
		return !whiteout.IsWhiteout(at.Loc{Dir: d.Fd, Name: name}, d.Opacity, &x)
	}
	return false
}

// walk resolves name top-down through dirs into p.
func (s *Stack) walk(dirs []Dir, name string, p *Probe) error {
	cur, abs, last := name, "", -1
	for _, d := range dirs {
		last = d.Layer
		st, err := s.lookIn(p, d, cur, cur)
		if err != nil {
			s.Close(&p.Entry)
			return err
		}
		if st.stop {
			abs = ""
			break
		}
		if strings.HasPrefix(st.redirect, "/") {
			abs = st.redirect
			break
		}
		if st.redirect != "" {
			cur = st.redirect
		}
	}
	if abs != "" {
		if err := s.walkAbsolute(p, last+1, abs); err != nil {
			s.Close(&p.Entry)
			return err
		}
	}
	// A file of any layer may hold metadata only (an upper written with
	// metacopy=on, used as a lower): its data is below its own layer. A
	// file shown is always found in dirs by its own name.
	if i := layerIndex(dirs, p.Layer); p.Exists && !p.IsDir() && whiteout.MayBeMetacopy(&p.Stat) && i >= 0 {
		s.findData(&p.Entry, dirs[i], dirs[i+1:], name)
		if p.Metacopy && s.NoMetacopy {
			s.Close(&p.Entry)
			return syscall.EPERM // as the kernel with metacopy=off
		}
	}
	return nil
}

// step says how one layer's look went.
type step struct {
	stop     bool   // the walk ends here
	redirect string // a directory found carries this redirect
}

// lookIn looks name up in one layer's directory d and adds what it finds
// to p; reached is how the walk got there (see Dir.Name).
func (s *Stack) lookIn(p *Probe, d Dir, name, reached string) (step, error) {
	l := at.Loc{Dir: d.Fd, Name: name}
	var x unix.Statx_t
	err := at.Statx(l, &x)
	if err == unix.ENOENT {
		if whiteout.HasFileWhiteout(d.Fd, name) {
			if d.Layer == Upper {
				p.Whiteout = whiteout.FileWhiteout
			}
			return step{stop: true}, nil
		}
		return step{}, nil
	}
	if err != nil {
		return step{stop: true}, err
	}
	if whiteout.IsWhiteout(l, d.Opacity, &x) {
		if d.Layer == Upper && x.Mode&unix.S_IFMT == unix.S_IFCHR {
			p.Whiteout = whiteout.CharWhiteout
		}
		return step{stop: true}, nil
	}
	isDir := x.Mode&unix.S_IFMT == unix.S_IFDIR
	if p.Exists && !isDir {
		return step{stop: true}, nil // a non-directory below a directory is hidden
	}
	if !p.Exists {
		p.Layer, p.Stat, p.Name, p.Exists = d.Layer, x, reached, true
		if !isDir {
			return step{stop: true}, nil
		}
	}
	fd, err := at.OpenDir(l)
	if err != nil {
		if len(p.Dirs) == 0 {
			return step{stop: true}, err
		}
		return step{stop: true}, nil
	}
	s.hold(fd)
	m := whiteout.ReadDirMarkers(fd)
	p.Dirs = append(p.Dirs, Dir{Layer: d.Layer, Fd: fd, Opacity: m.Opacity, Name: reached})
	if s.NoFollowRedirect {
		m.Redirect = ""
	}
	return step{stop: m.Opaque, redirect: m.Redirect}, nil
}
