// Package changes compares an upper layer directory with the lower layers
// it sits on, offline and read-only: Diff lists the changes in `docker diff`
// form, Export writes them as an OCI image layer tarball. Both read every
// marker form the stack package reads (whiteouts, opaque directories,
// redirected directories, metacopy files).
//
// Both walk the same two views with the stack package: the merged view
// {upper, lowers...} (what the union shows) and the lower view {lowers...}
// (what it showed before the upper existed).
package changes

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/layerfs/layerfs/unionfs/stack"
	"golang.org/x/sys/unix"
)

// Check reports layers that cannot be compared: a missing directory, or
// the upper directory also named as a lower one (the work dir is not
// used). Its errors are the caller's mistakes, not failures.
func Check(l layout.Layers) error {
	up, err := statDir("upper dir", l.Upper)
	if err != nil {
		return err
	}
	for _, p := range l.Lowers {
		st, err := statDir("lower dir", p)
		if err != nil {
			return err
		}
		if st.Dev == up.Dev && st.Ino == up.Ino {
			return fmt.Errorf("%s is both the upper dir and a lower dir", p)
		}
	}
	return nil
}

func statDir(role, p string) (*unix.Stat_t, error) {
	if p == "" {
		return nil, fmt.Errorf("empty %s name", role)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return nil, fmt.Errorf("%s %s: %v", role, p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("%s %s: not a directory", role, p)
	}
	return &st, nil
}

// Kind is a change's kind, in docker diff's letters.
type Kind string

const (
	Added   Kind = "A"
	Changed Kind = "C"
	Deleted Kind = "D"
)

// Change is one line of docker diff: a path ("/etc/passwd") and its kind.
type Change struct {
	Path string `json:"Path"`
	Kind Kind   `json:"Kind"`
}

// String is the docker diff line. A path with a newline or another
// control character, or that is not UTF-8, is written Go-quoted, so that
// no name can forge lines (docker prints such names raw).
func (c Change) String() string {
	p := c.Path
	for _, r := range p {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			p = strconv.Quote(p)
			break
		}
	}
	return string(c.Kind) + " " + p
}

// Diff lists the changes the upper makes to what the lowers show, sorted
// by path, the way docker and podman diff an overlay container:
//   - a path the upper hides (a whiteout) is D, but only where the lowers
//     show something there;
//   - an entry of the upper is C where the lowers show the path, else A;
//     a directory holding changes is itself listed, as docker lists the
//     parents of changes;
//   - a directory whose content replaces the lowers' (opaque, moved in
//     with a redirect, or new) lists everything it shows: C for paths the
//     lowers show too, A for the others, D for what the lowers show there
//     and it does not.
//
// Markers themselves (".wh.*" names, overlay xattrs) are never listed.
func Diff(l layout.Layers) ([]Change, error) {
	d := &differ{}
	if err := newWalker(l, d).run(); err != nil {
		return nil, err
	}
	sort.Slice(d.changes, func(i, j int) bool { return d.changes[i].Path < d.changes[j].Path })
	return d.changes, nil
}

// differ is the visitor that collects Diff's changes.
type differ struct{ changes []Change }

func (d *differ) opaque(string, *stack.Entry) error { return nil }

func (d *differ) deleted(p string, _ *stack.Entry) error {
	d.changes = append(d.changes, Change{Path: "/" + p, Kind: Deleted})
	return nil
}

func (d *differ) changed(p string, _, _, old *stack.Entry) error {
	k := Added
	if old != nil {
		k = Changed
	}
	d.changes = append(d.changes, Change{Path: "/" + p, Kind: k})
	return nil
}

// visitor hears what the walk finds, in tar order: a directory before
// what it holds, and inside a directory first its opaque marker, then the
// names it deletes, then the entries it adds or changes, each by name.
// Paths are relative to the root ("etc/passwd").
type visitor interface {
	// opaque: the directory dir at p replaces a directory the lowers show.
	opaque(p string, dir *stack.Entry) error
	// deleted: the lowers show p, the union does not; dir is its parent.
	deleted(p string, dir *stack.Entry) error
	// changed: the union shows e at p, in the merged directory parent,
	// and it differs from old, what the lowers show there (nil: nothing).
	changed(p string, parent, e, old *stack.Entry) error
}

type walker struct {
	merged, lower *stack.Stack
	v             visitor
	// forget stops comparing with the lowers below a directory that
	// replaces theirs: an exported opaque marker already removes all of
	// it, so nothing under it needs another marker.
	forget bool
}

func newWalker(l layout.Layers, v visitor) *walker {
	return &walker{
		merged: &stack.Stack{Layers: append([]string{l.Upper}, l.Lowers...)},
		lower:  &stack.Stack{Layers: l.Lowers},
		v:      v,
	}
}

func (w *walker) run() error {
	root, err := w.merged.Root()
	if err != nil {
		return err
	}
	var old *stack.Entry
	if len(w.lower.Layers) > 0 {
		if old, err = w.lower.Root(); err != nil {
			return err
		}
	}
	return w.walkDir("", root, old, w.replaces(root, old))
}

// walkDir visits the changes inside the merged directory dir at p; old is
// what the lowers show at p. In a replaced directory every entry counts as
// a change; otherwise only entries the upper has.
func (w *walker) walkDir(p string, dir, old *stack.Entry, replaced bool) error {
	if !isDir(old) {
		old = nil
	}
	if replaced && old != nil {
		if err := w.v.opaque(p, dir); err != nil {
			return err
		}
		if w.forget {
			old = nil
		}
	}
	names, err := w.merged.ReadDir(dir)
	if err != nil {
		return err
	}
	if err := w.deletions(p, dir, old, names); err != nil {
		return err
	}
	for _, n := range names {
		cp := path.Join(p, n)
		e, err := w.merged.Child(dir, n)
		if errors.Is(err, stack.ErrNotExist) {
			continue // gone since ReadDir: a live union changed
		} else if err != nil {
			return err
		}
		if !replaced && e.Top.Layer != 0 {
			continue // all of it comes from the lowers, unchanged
		}
		o, err := w.lowerChild(old, n)
		if err != nil {
			return err
		}
		if err := w.v.changed(cp, dir, e, o); err != nil {
			return err
		}
		if e.IsDir() {
			if err := w.walkDir(cp, e, o, replaced || w.replaces(e, o)); err != nil {
				return err
			}
		}
	}
	return nil
}

// deletions reports the names the lowers show in old and the union does
// not show in dir (names, sorted).
func (w *walker) deletions(p string, dir, old *stack.Entry, names []string) error {
	if old == nil {
		return nil
	}
	oldNames, err := w.lower.ReadDir(old)
	if err != nil {
		return err
	}
	shown := make(map[string]bool, len(names))
	for _, n := range names {
		shown[n] = true
	}
	for _, n := range oldNames {
		if !shown[n] {
			if err := w.v.deleted(path.Join(p, n), dir); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *walker) lowerChild(old *stack.Entry, name string) (*stack.Entry, error) {
	if old == nil {
		return nil, nil
	}
	e, err := w.lower.Child(old, name)
	if errors.Is(err, stack.ErrNotExist) {
		return nil, nil
	}
	return e, err
}

// replaces reports whether the merged directory e shows content of its
// own rather than the lowers' directory old merged with the upper's: old
// is no directory, or the upper's part is opaque or was moved here
// (redirect_dir), so that the lowers' old content is hidden.
func (w *walker) replaces(e, old *stack.Entry) bool {
	if !isDir(old) {
		return true
	}
	if len(e.Dirs) == 0 || e.Dirs[0].Layer != 0 {
		return false // no upper part: nothing of the upper here
	}
	m := stack.Markers(w.merged.Real(e.Dirs[0]))
	return m.Opaque || m.Redirect != ""
}

func isDir(e *stack.Entry) bool { return e != nil && e.IsDir() }
