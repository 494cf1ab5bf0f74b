package unionfs

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// checkLookupMatchesListing asserts, for every merged directory, that a
// direct lookup of any name that exists in some layer succeeds exactly
// when readdir lists it (fuse-overlayfs has had bugs where ls hid an entry
// that a lookup still found).
func checkLookupMatchesListing(t *testing.T, tu *testUnion) {
	t.Helper()
	layers := append([]string{tu.upper}, tu.lowers...)
	var walk func(rel string)
	walk = func(rel string) {
		listed := map[string]bool{}
		for _, n := range names(t, tu.m(rel)) {
			listed[n] = true
		}
		candidates := map[string]bool{}
		for _, l := range layers {
			ents, _ := os.ReadDir(filepath.Join(l, rel))
			for _, e := range ents {
				n := e.Name()
				n = strings.TrimPrefix(n, ".wh.")
				if n != ".wh..opq" {
					candidates[n] = true
				}
			}
		}
		var sorted []string
		for n := range candidates {
			sorted = append(sorted, n)
		}
		sort.Strings(sorted)
		for _, n := range sorted {
			var st unix.Stat_t
			err := unix.Lstat(tu.m(filepath.Join(rel, n)), &st)
			assert.Equal(t, listed[n], err == nil, "%s: listed=%v lookup err=%v", filepath.Join(rel, n), listed[n], err)
			if err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
				walk(filepath.Join(rel, n))
			}
		}
	}
	walk(".")
}

// Image layers unpacked in OCI form (.wh.NAME, .wh..wh..opq), mixed with
// kernel-form layers, then changed through the mount.
func TestOCILayersLookupMatchesListing(t *testing.T) {
	tu := newTestUnion(t, 3, func(l []string, u string) {
		// bottom: a base image
		for _, p := range []string{"etc/a", "etc/b", "etc/c", "usr/lib/x", "usr/lib/y", "opt/app/bin", "opt/app/data/z", "home/u/.rc"} {
			put(t, l[2], p, "base "+p)
		}
		// middle, OCI form: delete etc/b, replace usr/lib, delete opt/app.
		put(t, l[1], "etc/.wh.b", "")
		put(t, l[1], "usr/lib/.wh..wh..opq", "")
		put(t, l[1], "usr/lib/new", "mid")
		put(t, l[1], "opt/.wh.app", "")
		put(t, l[1], "home/u/.wh..rc", "")
		// top, kernel form: delete etc/c, re-add opt/app opaque.
		must(t, os.MkdirAll(filepath.Join(l[0], "etc"), 0o755))
		mkCharWhiteout(t, filepath.Join(l[0], "etc", "c"))
		must(t, os.MkdirAll(filepath.Join(l[0], "opt", "app"), 0o755))
		setOpaque(t, filepath.Join(l[0], "opt", "app"))
		put(t, l[0], "opt/app/v2", "top")
	})
	assert.Equal(t, []string{"a"}, names(t, tu.m("etc")))
	assert.Equal(t, []string{"new"}, names(t, tu.m("usr/lib")))
	assert.Equal(t, []string{"v2"}, names(t, tu.m("opt/app")))
	assert.Empty(t, names(t, tu.m("home/u")))
	checkLookupMatchesListing(t, tu)

	// Removals inside opaque dirs, re-creations, removals of lower names.
	must(t, os.Remove(tu.m("usr/lib/new")))
	must(t, os.Remove(tu.m("opt/app/v2")))
	must(t, os.WriteFile(tu.m("etc/b"), []byte("again"), 0o644))
	must(t, os.Remove(tu.m("etc/a")))
	must(t, os.RemoveAll(tu.m("usr")))
	must(t, os.MkdirAll(tu.m("usr/lib"), 0o755))
	checkLookupMatchesListing(t, tu)
	assert.Empty(t, names(t, tu.m("usr/lib")))
	assert.Equal(t, []string{"b"}, names(t, tu.m("etc")))
	tu.unmount(t)
	tu.mount(t)
	checkLookupMatchesListing(t, tu)
	assert.Equal(t, "again", readFile(t, tu.m("etc/b")))
}
