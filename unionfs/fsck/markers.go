package fsck

import (
	"fmt"
	"path/filepath"
	"sort"

	"github.com/layerfs/layerfs/unionfs/stack"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// dirScan is what one directory of the checked layer holds, by name.
type dirScan struct {
	ly   *layer
	dir  *stack.Entry // the merged directory; Dirs[0] is the layer's own
	host string       // host path of the layer's own directory

	real     map[string]*unix.Stat_t // entries that are not markers
	kernelWh map[string]bool         // NAME is a char 0/0 or xattr whiteout
	fileWh   map[string]*unix.Stat_t // ".wh.NAME" exists, keyed by NAME
}

// scanName files entry n of d under what it is and checks the marker
// entries themselves. It reports whether n is a real entry (one the
// merged view may show), to be checked and descended into.
func (c *checker) scanName(d *dirScan, n string, st *unix.Stat_t) bool {
	p := filepath.Join(d.host, n)
	switch {
	case n == whiteout.OpaqueMarker:
		if !isEmptyFile(st) {
			c.add(d.ly, p, BadMarker, "opaque marker is not an empty regular file (layerfs reads it as a marker, kernel overlay shows it as a file)", noFix("it may hold data written through kernel overlay: look at it by hand"))
		}
		return false
	case whiteout.IsMarkerName(n):
		t, ok := whiteout.Target(n)
		if !ok || whiteout.IsMarkerName(t) {
			c.add(d.ly, p, ReservedName, "name is reserved for whiteout markers but is no marker (layerfs hides it, kernel overlay shows it)", noFix("rename or remove it by hand"))
			return false
		}
		if !isEmptyFile(st) {
			c.add(d.ly, p, BadMarker, "whiteout file is not an empty regular file (layerfs reads it as a whiteout, kernel overlay shows it as a file)", noFix("it may hold data written through kernel overlay: look at it by hand"))
		}
		d.fileWh[t] = st
		return false
	case stack.IsWhiteout(d.host, n, st):
		d.kernelWh[n] = true
		return false
	}
	d.real[n] = st
	c.checkXattrs(d.ly, p, st)
	return true
}

// checkMarkers looks at the whiteouts of d as a whole: two forms for one
// name, a whiteout file beside the name it hides, whiteouts that hide
// nothing.
func (c *checker) checkMarkers(d *dirScan) {
	for _, t := range sortedKeys(d.fileWh) {
		p := filepath.Join(d.host, whiteout.Prefix+t)
		if st, ok := d.real[t]; ok {
			c.add(d.ly, p, WhiteoutConflict, fmt.Sprintf("whiteout file beside a real %q in the same layer (contradiction)", t), c.conflictFix(d, t, st))
		} else if d.kernelWh[t] {
			c.add(d.ly, p, WhiteoutDuplicate, fmt.Sprintf("second whiteout for %q, which is already a whiteout device", t), c.removeWhiteoutFile(d, t, "removed the .wh. file, kept the kernel form"))
		}
	}
	names := map[string]bool{}
	for n := range d.kernelWh {
		names[n] = true
	}
	for n := range d.fileWh {
		if d.real[n] == nil {
			names[n] = true
		}
	}
	for _, n := range sortedKeys(names) {
		shown, err := c.shownBelow(d, n)
		if err != nil || shown {
			continue
		}
		p := filepath.Join(d.host, n)
		if d.fileWh[n] != nil && !d.kernelWh[n] {
			p = filepath.Join(d.host, whiteout.Prefix+n)
		}
		c.add(d.ly, p, WhiteoutUseless, fmt.Sprintf("whiteout hides nothing: no layer below shows %q here", n), c.uselessFix(d, n))
	}
}

// shownBelow reports whether the layers below d's own show name in d:
// what a whiteout for name in d hides, and what removing it would show.
func (c *checker) shownBelow(d *dirScan, name string) (bool, error) {
	below := &stack.Entry{Dirs: d.dir.Dirs[1:]}
	_, err := d.ly.s.Child(below, name)
	if errNotExist(err) {
		return false, nil
	}
	if err != nil {
		c.errorf("%s: looking up %q below: %v", d.host, name, err)
		return true, err
	}
	return true, nil
}

// conflictFix decides a ".wh.NAME" beside a real NAME. layerfs (and the
// kernel, which does not know ".wh." files) show the real NAME either
// way, and a non-directory hides the layers below by itself: the marker
// changes nothing there and can go. A directory is different: layerfs
// merges it with the layers below, while OCI rules say the marker hides
// them. Unless nothing merges (the directory is opaque or the layers
// below have nothing), that is for a person to decide.
func (c *checker) conflictFix(d *dirScan, t string, st *unix.Stat_t) fixer {
	if !isEmptyFile(d.fileWh[t]) {
		return noFix("the .wh. entry is not an empty file: look at it by hand")
	}
	if isDir(st) {
		child, err := d.ly.s.Child(d.dir, t)
		if err != nil {
			return noFix("could not look it up: " + err.Error())
		}
		if len(child.Dirs) > 1 {
			return noFix(fmt.Sprintf("layerfs merges %q with the layers below while OCI rules hide them: make it opaque or remove the .wh. file by hand", t))
		}
	}
	return c.removeWhiteoutFile(d, t, "removed the .wh. file (the real entry wins)")
}

// removeWhiteoutFile removes ".wh.t" when it is still an empty file.
func (c *checker) removeWhiteoutFile(d *dirScan, t, what string) fixer {
	if !isEmptyFile(d.fileWh[t]) {
		return noFix("the .wh. entry is not an empty file: look at it by hand")
	}
	return fixBy(what, removeIf(filepath.Join(d.host, whiteout.Prefix+t), isEmptyFile))
}

// uselessFix removes every form of a whiteout that hides nothing: the
// layers below show nothing there, so the merged view stays the same.
func (c *checker) uselessFix(d *dirScan, n string) fixer {
	if st := d.fileWh[n]; st != nil && !isEmptyFile(st) {
		return noFix("the .wh. entry is not an empty file: look at it by hand")
	}
	var fixes []func() error
	if d.kernelWh[n] {
		host := d.host
		fixes = append(fixes, removeIf(filepath.Join(host, n), func(st *unix.Stat_t) bool {
			return stack.IsWhiteout(host, n, st)
		}))
	}
	if d.fileWh[n] != nil {
		fixes = append(fixes, removeIf(filepath.Join(d.host, whiteout.Prefix+n), isEmptyFile))
	}
	return fixBy("removed it", func() error {
		for _, f := range fixes {
			if err := f(); err != nil {
				return err
			}
		}
		return nil
	})
}

// removeIf returns a fix that removes the non-directory p if it still is
// what ok accepts, so a fix never removes something other than what was
// judged. Already gone is fine.
func removeIf(p string, ok func(*unix.Stat_t) bool) func() error {
	return func() error {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errNotExist(err) {
				return nil
			}
			return err
		}
		if !ok(&st) {
			return fmt.Errorf("%s changed since it was checked", p)
		}
		return keepingTimes(filepath.Dir(p), func() error { return unix.Unlink(p) })
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
