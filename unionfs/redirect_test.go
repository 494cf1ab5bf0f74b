package unionfs

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/layerfs/layerfs/unionfs/stack"
	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// redirectLowers fills a lower layer for the directory rename scenario.
func redirectLowers(t *testing.T, l string) {
	for p, c := range map[string]string{
		"a/b/c/f": "f", "a/b/top": "t", "a/keep": "k", "x/y": "y",
		"p/q/r/deep": "d", "p/pf": "pf", "k/f": "kf", "s1/one": "1", "s2/two": "2",
		"d2/moved": "m",
	} {
		put(t, l, p, c)
	}
	for _, d := range []string{"e1", "el", "z", "yy"} {
		must(t, os.MkdirAll(filepath.Join(l, d), 0o755))
	}
}

// redirectSteps are the directory renames of the scenario, each a step
// that must succeed on layerfs and on kernel overlay with redirect_dir=on.
var redirectSteps = []struct {
	what string
	do   func(m func(string) string) error
}{
	{"into another dir", func(m func(string) string) error { return os.Rename(m("a/b"), m("x/bb")) }},
	{"create in the moved dir", func(m func(string) string) error { return os.WriteFile(m("x/bb/c/new"), []byte("n"), 0o644) }},
	{"copy up in the moved dir", func(m func(string) string) error { return appendTo(m("x/bb/c/f"), "+") }},
	{"back to its original name", func(m func(string) string) error { return os.Rename(m("x/bb"), m("a/b")) }},
	{"rename in place", func(m func(string) string) error { return os.Rename(m("a/b"), m("a/b2")) }},
	{"then elsewhere", func(m func(string) string) error { return os.Rename(m("a/b2"), m("x/b3")) }},
	{"over an empty dir", func(m func(string) string) error { return unix.Rename(m("d2"), m("e1")) }},
	{"nested: parent", func(m func(string) string) error { return os.Rename(m("p"), m("p2")) }},
	{"nested: child", func(m func(string) string) error { return os.Rename(m("p2/q"), m("p2/q2")) }},
	{"nested: parent again", func(m func(string) string) error { return os.Rename(m("p2"), m("z/p3")) }},
	{"nested: grandchild out", func(m func(string) string) error { return os.Rename(m("z/p3/q2/r"), m("yy/r")) }},
	{"rmdir after rename: rename", func(m func(string) string) error { return os.Rename(m("el"), m("el2")) }},
	{"rmdir after rename: rmdir", func(m func(string) string) error { return os.Remove(m("el2")) }},
	{"copied-up children: copy up", func(m func(string) string) error { return appendTo(m("k/f"), "+") }},
	{"copied-up children: move", func(m func(string) string) error { return os.Rename(m("k"), m("yy/k")) }},
	{"exchange two lower dirs", func(m func(string) string) error {
		return unix.Renameat2(unix.AT_FDCWD, m("s1"), unix.AT_FDCWD, m("s2"), unix.RENAME_EXCHANGE)
	}},
	{"remove inside a moved dir", func(m func(string) string) error { return os.Remove(m("x/b3/top")) }},
	{"mkdir at a moved dir's old name", func(m func(string) string) error { return os.Mkdir(m("p"), 0o755) }},
}

func appendTo(p, s string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// treeOf lists every entry under root with its kind, mode and content.
func treeOf(t *testing.T, root string) string {
	t.Helper()
	var out []string
	must(t, filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		e := fmt.Sprintf("%s %v", rel, fi.Mode())
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			e += " " + string(b)
		}
		out = append(out, e)
		return nil
	}))
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// kernelOverlay mounts kernel overlay with opts over fresh dirs under d.
func kernelOverlay(t *testing.T, lower, upper, work, mnt, extra string) func() {
	t.Helper()
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s%s", lower, upper, work, extra)
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		t.Fatalf("kernel overlay %s: %v", extra, err)
	}
	done := false
	t.Cleanup(func() {
		if !done {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return func() {
		if !done {
			done = true
			must(t, unix.Unmount(mnt, 0))
		}
	}
}

// TestDirectoryRenameRedirect runs the directory renames of redirectSteps
// on layerfs and on kernel overlay with redirect_dir=on side by side: the
// merged trees must agree after every step, after a remount, and when
// each reads the other's upper dir.
func TestDirectoryRenameRedirect(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) { redirectLowers(t, l[0]) })
	k := t.TempDir()
	kl, ku, kw, km := filepath.Join(k, "l"), filepath.Join(k, "u"), filepath.Join(k, "w"), filepath.Join(k, "m")
	for _, p := range []string{kl, ku, kw, km} {
		must(t, os.Mkdir(p, 0o755))
	}
	redirectLowers(t, kl)
	kUnmount := kernelOverlay(t, kl, ku, kw, km, ",redirect_dir=on")
	lowerBefore := treeOf(t, tu.lowers[0])

	for _, s := range redirectSteps {
		kerr := s.do(func(p string) string { return filepath.Join(km, p) })
		lerr := s.do(tu.m)
		if kerr != nil {
			t.Fatalf("%s: kernel: %v", s.what, kerr)
		}
		if lerr != nil {
			t.Fatalf("%s: layerfs: %v (kernel succeeded)", s.what, lerr)
		}
		if kt, lt := treeOf(t, km), treeOf(t, tu.mnt); kt != lt {
			t.Fatalf("after %s: kernel shows\n%s\nlayerfs shows\n%s", s.what, kt, lt)
		}
	}
	want := treeOf(t, km)
	// The moves were O(1): redirects, not copies.
	r := stack.Markers(filepath.Join(tu.upper, "x/b3")).Redirect
	assert.Equal(t, "/a/b", r, "x/b3 redirect")
	_, err := os.Lstat(filepath.Join(tu.upper, "x/b3/c/deep"))
	assert.True(t, os.IsNotExist(err))

	tu.unmount(t)
	kUnmount()
	assert.Equal(t, lowerBefore, treeOf(t, tu.lowers[0]), "lower unchanged")
	tu.mount(t)
	assert.Equal(t, want, treeOf(t, tu.mnt), "layerfs after remount")
	tu.unmount(t)

	// Each reads the other's upper.
	kUnmount = kernelOverlay(t, tu.lowers[0], tu.upper, tu.work, km, ",redirect_dir=on")
	assert.Equal(t, want, treeOf(t, km), "kernel reading layerfs's upper")
	kUnmount()
	tu2 := &testUnion{dir: k, lowers: []string{kl}, upper: ku, work: kw, mnt: km}
	tu2.mount(t)
	assert.Equal(t, want, treeOf(t, km), "layerfs reading the kernel's upper")
	tu2.unmount(t)
}

// In the user xattr format the redirect is user.overlay.redirect.
func TestDirectoryRenameUserXattr(t *testing.T) {
	tu := newTestUnionOpts(t, 1, Options{UserXattr: true}, func(l []string, u string) {
		put(t, l[0], "dir/f", "f")
	})
	must(t, os.Rename(tu.m("dir"), tu.m("dir2")))
	r := stack.Markers(filepath.Join(tu.upper, "dir2")).Redirect
	assert.Equal(t, "dir", r, "user.overlay.redirect")
	assert.Equal(t, "f", readFile(t, tu.m("dir2/f")))
	tu.unmount(t)
	tu.mount(t)
	assert.Equal(t, []string{"dir2"}, names(t, tu.mnt))
	assert.Equal(t, "f", readFile(t, tu.m("dir2/f")))
}

// A redirect longer than the kernel's redirect_max (256) is not made:
// the rename answers EXDEV, as the kernel does, and mv copies.
func TestDirectoryRenameLongRedirect(t *testing.T) {
	long := strings.Repeat("d", 200)
	tu := newTestUnion(t, 1, func(l []string, u string) {
		put(t, l[0], long+"/"+long+"/f", "f")
		put(t, l[0], "short/f", "f")
		must(t, os.MkdirAll(filepath.Join(l[0], "to"), 0o755))
	})
	err := os.Rename(tu.m(long+"/"+long), tu.m("to/x"))
	assert.ErrorIs(t, err, unix.EXDEV, "a %d-byte redirect", len(long)*2+2)
	must(t, os.Rename(tu.m("short"), tu.m("to/short")))
	assert.Equal(t, "f", readFile(t, tu.m("to/short/f")))
}

// With redirect_dir=nofollow the redirects in the layers are ignored, as
// by the kernel: a moved directory shows its upper part only.
func TestRedirectNoFollow(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		put(t, l[0], "a/lower", "l")
		put(t, l[0], "x/lower", "l")
	})
	must(t, os.Rename(tu.m("a"), tu.m("b")))
	must(t, os.WriteFile(tu.m("b/upper"), []byte("u"), 0o644))
	tu.unmount(t)
	tu.mount(t)
	assert.Equal(t, []string{"lower", "upper"}, names(t, tu.m("b")))
	tu.unmount(t)
	tu.opts.NoFollowRedirect, tu.opts.NoRedirectDir = true, true
	tu.mount(t)
	assert.Equal(t, []string{"upper"}, names(t, tu.m("b")))
	assert.ErrorIs(t, os.Rename(tu.m("x"), tu.m("y")), unix.EXDEV, "no new redirects")
}
