// Package stack reads a stack of layer directories offline, by path, the
// way a union mount would show them: lookups resolve top-down through
// whiteouts, opaque directories and directory redirects, in every on-disk
// form the whiteout package knows. The layer tools (diff, export, check,
// vacuum) use it to ask "what do the layers below show here?" without a
// mount. It never writes.
package stack

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

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
}

// IsDir reports whether e is a directory.
func (e *Entry) IsDir() bool { return e.Stat.Mode&unix.S_IFMT == unix.S_IFDIR }

// ErrNotExist is returned by Lookup for a path the stack does not show.
var ErrNotExist = os.ErrNotExist

// Root returns the merged root directory.
func (s *Stack) Root() (*Entry, error) {
	e := &Entry{}
	for i := range s.Layers {
		l := Loc{Layer: i}
		var st unix.Stat_t
		if err := unix.Stat(s.Real(l), &st); err != nil {
			return nil, &os.PathError{Op: "stat", Path: s.Layers[i], Err: err}
		}
		if len(e.Dirs) == 0 {
			e.Top, e.Stat = l, st
		}
		// Roots always merge: an opaque marker on a layer root hides
		// nothing, in the kernel as in layerfs.
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
	var e Entry
	cur := name // a relative redirect renames it for the layers below
	abs := ""   // an absolute redirect sends the walk to the layer roots
	last := -1
	for _, d := range dir.Dirs {
		last = d.Layer
		r, stop, err := s.childIn(&e, Loc{d.Layer, path.Join(d.Path, cur)})
		if err != nil {
			return nil, err
		}
		if stop {
			return e.found()
		}
		if strings.HasPrefix(r, "/") {
			abs = r
			break
		}
		if r != "" {
			cur = r
		}
	}
	for j := last + 1; abs != "" && j < len(s.Layers); j++ {
		p := strings.Trim(path.Clean(abs), "/")
		walk := s.dirPath(j, path.Dir(p))
		if walk == pathStop {
			break
		}
		if walk == pathMissing {
			continue
		}
		r, stop, err := s.childIn(&e, Loc{j, p})
		if err != nil {
			return nil, err
		}
		if stop || walk == pathLast {
			break
		}
		if r != "" && !strings.HasPrefix(r, "/") {
			r = "/" + path.Join(path.Dir(p), r)
		}
		if r != "" {
			abs = r
		}
	}
	return e.found()
}

func (e *Entry) found() (*Entry, error) {
	if len(e.Dirs) == 0 && e.Stat.Mode == 0 {
		return nil, ErrNotExist
	}
	return e, nil
}

// pathWalk says how a walk along an absolute redirect path went in one
// layer.
type pathWalk int

const (
	pathFound   pathWalk = iota
	pathLast             // an opaque directory on the way hides the layers below
	pathMissing          // a component is missing: try the next layer
	pathStop             // a whiteout or a non-directory on the way hides the path below
)

// dirPath walks p in layer as the kernel follows an absolute redirect:
// every component must be a directory (never a symlink, so the walk
// stays in the layer); a whiteout or a file ends the walk for good, and
// an opaque directory after this layer.
func (s *Stack) dirPath(layer int, p string) pathWalk {
	cur, result := "", pathFound
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." {
			continue
		}
		parent := cur
		cur = path.Join(cur, c)
		var st unix.Stat_t
		if err := s.Lstat(Loc{layer, cur}, &st); err != nil {
			if HasFileWhiteout(s.Real(Loc{layer, parent}), c) {
				return pathStop
			}
			return pathMissing
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return pathStop
		}
		if ReadOpacity(s.Real(Loc{layer, cur})).Opaque {
			result = pathLast
		}
	}
	return result
}

// childIn looks at l and adds what it finds to e. stop says the walk ends
// there: a whiteout, an opaque directory, a non-directory, or anything
// below a directory that is not one. redirect is the directory's redirect
// xattr, if any.
func (s *Stack) childIn(e *Entry, l Loc) (redirect string, stop bool, err error) {
	parent, name := path.Dir(s.Real(l)), path.Base(l.Path)
	var st unix.Stat_t
	if err := s.Lstat(l, &st); errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return "", HasFileWhiteout(parent, name), nil
	} else if err != nil {
		return "", false, &os.PathError{Op: "lstat", Path: s.Real(l), Err: err}
	}
	if IsWhiteout(parent, name, &st) {
		return "", true, nil
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if e.Stat.Mode == 0 {
		e.Top, e.Stat = l, st
		if !isDir {
			return "", true, nil
		}
	} else if !isDir {
		return "", true, nil
	}
	e.Dirs = append(e.Dirs, l)
	if ReadOpacity(s.Real(l)).Opaque {
		return "", true, nil
	}
	redirect, _ = Redirect(s.Real(l))
	return redirect, false, nil
}

// ReadDir lists the names the merged directory dir shows, sorted, without
// markers or whited-out names.
func (s *Stack) ReadDir(dir *Entry) ([]string, error) {
	seen := map[string]bool{}
	var names []string
	for _, d := range dir.Dirs {
		ents, err := s.readDir(d)
		if err != nil {
			return nil, err
		}
		// A ".wh.NAME" hides NAME in the layers below only.
		var hides []string
		for _, de := range ents {
			n := de.Name()
			if seen[n] {
				continue
			}
			if whiteout.IsMarkerName(n) {
				// Markers, and names only a marker may have (".wh.",
				// ".wh.."), are never shown, as through a mount.
				if t, ok := whiteout.Target(n); ok {
					hides = append(hides, t)
				}
				continue
			}
			seen[n] = true
			var st unix.Stat_t
			if s.Lstat(Loc{d.Layer, path.Join(d.Path, n)}, &st) != nil || IsWhiteout(s.Real(d), n, &st) {
				continue
			}
			names = append(names, n)
		}
		for _, t := range hides {
			seen[t] = true
		}
	}
	// A name seen in an upper layer may still be hidden (a non-directory
	// above a directory is fine; a whiteout is not): confirm by lookup.
	out := names[:0]
	for _, n := range names {
		if _, err := s.Child(dir, n); err == nil {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// IsWhiteout reports whether name in directory dir, described by st, is a
// whiteout in the kernel's forms: a 0/0 character device, or a zero-size
// file with an overlay.whiteout xattr in a directory that allows them.
func IsWhiteout(dir, name string, st *unix.Stat_t) bool {
	if whiteout.IsCharWhiteout(st) {
		return true
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 || !ReadOpacity(dir).XattrWhiteouts {
		return false
	}
	return withDir(dir, func(fd int) bool { return whiteout.IsXattrWhiteout(fd, name, st) })
}

// HasFileWhiteout reports whether dir holds an OCI ".wh.NAME" for name.
func HasFileWhiteout(dir, name string) bool {
	var st unix.Stat_t
	return len(whiteout.Prefix)+len(name) <= 255 && unix.Lstat(filepath.Join(dir, whiteout.Prefix+name), &st) == nil
}

// ReadOpacity reads the opaque markers of directory dir in every form.
func ReadOpacity(dir string) whiteout.Opacity {
	var o whiteout.Opacity
	withDir(dir, func(fd int) bool { o = whiteout.ReadOpacity(fd); return true })
	return o
}

// Redirect returns the kernel redirect_dir target recorded on directory
// dir ("/abs/path" from the layer root, or a name in the same parent);
// a malformed one counts as none, as layerfs ignores it too.
func Redirect(dir string) (string, bool) {
	for _, ns := range []string{whiteout.TrustedPrefix, whiteout.UserPrefix} {
		if v, err := getxattr(dir, ns+"redirect"); err == nil && whiteout.ValidRedirect(string(v)) {
			return string(v), true
		}
	}
	return "", false
}

// Metacopy reports whether the upper file at p holds metadata only (kernel
// metacopy): its data lives in the lower file it was copied from.
func Metacopy(p string) bool {
	for _, ns := range []string{whiteout.TrustedPrefix, whiteout.UserPrefix} {
		if _, err := getxattr(p, ns+"metacopy"); err == nil {
			return true
		}
	}
	return false
}

func getxattr(p, name string) ([]byte, error) {
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, name, buf)
	if err == unix.ERANGE {
		sz, err2 := unix.Lgetxattr(p, name, nil)
		if err2 != nil {
			return nil, err2
		}
		buf = make([]byte, sz)
		n, err = unix.Lgetxattr(p, name, buf)
	}
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func withDir(dir string, f func(fd int) bool) bool {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return f(fd)
}

// Reading a layer that may change meanwhile (the upper of a live union):
// every access below goes from the layer's root through openat2 with
// RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS, so a directory swapped for a
// symlink never leads a tool outside the layer.

func (s *Stack) openBeneath(layer int, rel string, flags int) (int, error) {
	root, err := unix.Open(s.Layers[layer], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(root)
	if rel == "" {
		rel = "."
	}
	return unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// parentOf opens the directory holding l (an O_PATH fd the caller closes).
func (s *Stack) parentOf(l Loc) (int, string, error) {
	dir, name := path.Split(l.Path)
	fd, err := s.openBeneath(l.Layer, strings.TrimSuffix(dir, "/"), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return -1, "", &os.PathError{Op: "open", Path: s.Real(Loc{l.Layer, dir}), Err: err}
	}
	return fd, name, nil
}

// Lstat describes l without following a symlink anywhere in its path.
func (s *Stack) Lstat(l Loc, st *unix.Stat_t) error {
	if l.Path == "" {
		return unix.Stat(s.Layers[l.Layer], st)
	}
	fd, name, err := s.parentOf(l)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fstatat(fd, name, st, unix.AT_SYMLINK_NOFOLLOW)
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
	fd, name, err := s.parentOf(l)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(fd, name, buf)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: s.Real(l), Err: err}
	}
	return string(buf[:n]), nil
}

// XattrPath returns a path for the xattr calls (l*xattr) on l that
// follows no symlink on the way; call done when finished with it.
func (s *Stack) XattrPath(l Loc) (p string, done func(), err error) {
	fd, name, err := s.parentOf(l)
	if err != nil {
		return "", nil, err
	}
	p = "/proc/self/fd/" + strconv.Itoa(fd)
	if name != "" {
		p += "/" + name
	}
	return p, func() { unix.Close(fd) }, nil
}

func (s *Stack) readDir(l Loc) ([]os.DirEntry, error) {
	f, err := s.Open(l, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}
