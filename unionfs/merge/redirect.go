package merge

import (
	"path"
	"strings"

	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// walkAbsolute continues a walk at the absolute path abs from the roots of
// the layers from first on, as the kernel follows an absolute redirect.
func (s *Stack) walkAbsolute(p *Probe, first int, abs string) error {
	for layer := first; layer < len(s.Roots); layer++ {
		parent, base, walk := s.openParent(layer, abs)
		if walk == pathStop {
			return nil
		}
		if walk == pathMissing {
			continue
		}
		st, err := s.lookIn(p, parent, base, abs)
		unix.Close(parent.Fd)
		if err != nil {
			return err
		}
		if st.stop || walk == pathLast {
			return nil
		}
		if st.redirect != "" && !strings.HasPrefix(st.redirect, "/") {
			st.redirect = path.Join(path.Dir(abs), st.redirect)
		}
		if st.redirect != "" {
			abs = st.redirect
		}
	}
	return nil
}

// pathWalk says how the walk along an absolute path went in one layer.
type pathWalk int

const (
	pathFound   pathWalk = iota // the parent directory is open
	pathLast                    // open, and an opaque directory on the way hides the layers below
	pathMissing                 // a component is missing: try the next layer
	pathStop                    // a whiteout or a non-directory on the way hides the path below
)

// openParent opens, in layer, the directory holding the last component of
// the absolute path p (a plain descriptor the caller closes), never
// through a symlink. As in the kernel, whiteouts and opaque directories
// on the way count.
func (s *Stack) openParent(layer int, p string) (Dir, string, pathWalk) {
	dir, base := path.Split(strings.TrimPrefix(p, "/"))
	fd, err := at.OpenDir(at.Loc{Dir: s.Roots[layer], Name: "."})
	if err != nil {
		return Dir{}, "", pathMissing
	}
	result := pathFound
	for _, c := range strings.Split(strings.Trim(dir, "/"), "/") {
		if c == "" {
			continue
		}
		var st unix.Stat_t
		if err := at.Stat(at.Loc{Dir: fd, Name: c}, &st); err != nil {
			stop := whiteout.HasFileWhiteout(fd, c)
			unix.Close(fd)
			if stop {
				return Dir{}, "", pathStop
			}
			return Dir{}, "", pathMissing
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			unix.Close(fd)
			return Dir{}, "", pathStop // a whiteout, or a file over the path
		}
		next, err := at.OpenDir(at.Loc{Dir: fd, Name: c})
		unix.Close(fd)
		if err != nil {
			return Dir{}, "", pathMissing
		}
		fd = next
		if whiteout.ReadOpacity(fd).Opaque {
			result = pathLast
		}
	}
	return Dir{Layer: layer, Fd: fd, Opacity: whiteout.ReadOpacity(fd), Name: "/" + strings.TrimSuffix(dir, "/")}, base, result
}

// findData looks up where the data of the metacopy file name, found in
// its layer's directory own, lives: the same name in the directories
// below, or what its redirect names (the kernel writes one when it
// renames a metacopy file: the old name within the same directory, else
// an absolute path). A metacopy file met on the way holds no data: the
// search goes on below it.
func (s *Stack) findData(e *Entry, own Dir, below []Dir, name string) {
	self := at.Loc{Dir: own.Fd, Name: name}
	if !whiteout.IsMetacopy(self) {
		return
	}
	e.Metacopy = true // reads fail with EIO unless data is found
	var redirect string
	for _, ns := range whiteout.Kernel {
		if v, err := at.GetXattr(self, ns.Name(whiteout.Redirect)); err == nil && whiteout.ValidRedirect(string(v)) {
			redirect = string(v)
		}
	}
	// try looks for the data at name in d, reached as reached; keep says
	// to hold a descriptor of it (its place is not the entry's own name).
	try := func(d Dir, name, reached string, keep bool) (stop bool) {
		l := at.Loc{Dir: d.Fd, Name: name}
		var x unix.Statx_t
		if err := at.Statx(l, &x); err != nil {
			return whiteout.HasFileWhiteout(d.Fd, name)
		}
		if x.Mode&unix.S_IFMT != unix.S_IFREG {
			return true
		}
		if whiteout.MayBeMetacopy(&x) && whiteout.IsMetacopy(l) {
			return false // metadata only as well: the data is further down
		}
		e.Stat.Blocks = x.Blocks // as the kernel: a metacopy file's blocks are its data's
		if keep {
			fd, err := at.Open(l, unix.O_PATH)
			if err != nil {
				return true
			}
			s.hold(fd)
			e.DataFd = fd
		}
		e.DataLayer, e.DataName = d.Layer, reached
		return true
	}
	if !strings.HasPrefix(redirect, "/") {
		keep := redirect != ""
		if keep {
			name = redirect // renamed within its directory
		}
		for _, d := range below {
			if try(d, name, name, keep) {
				return
			}
		}
		return
	}
	for layer := own.Layer + 1; layer < len(s.Roots); layer++ {
		parent, base, walk := s.openParent(layer, redirect)
		if walk == pathStop {
			return
		}
		if walk == pathMissing {
			continue
		}
		stop := try(parent, base, redirect, true)
		unix.Close(parent.Fd)
		if stop || walk == pathLast {
			return
		}
	}
}
