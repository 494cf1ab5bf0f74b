package stack

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs root (kernel overlay mounts), and CI must provide it")
	}
	t.Skip("needs root")
}

// walkStack lists every merged path the stack shows, with its kind and,
// for files, content.
func walkStack(t *testing.T, s *Stack) []string {
	t.Helper()
	var out []string
	var walk func(e *Entry, p string)
	walk = func(e *Entry, p string) {
		names, err := s.ReadDir(e)
		must(t, err)
		for _, n := range names {
			c, err := s.Child(e, n)
			must(t, err)
			out = append(out, describe(s.Real(c.Top), filepath.Join(p, n), &c.Stat))
			if c.IsDir() {
				walk(c, filepath.Join(p, n))
			}
			l, err := s.Lookup(filepath.Join(p, n))
			must(t, err)
			if l.Top != c.Top {
				t.Errorf("Lookup(%s) = %v, Child says %v", filepath.Join(p, n), l.Top, c.Top)
			}
		}
	}
	root, err := s.Root()
	must(t, err)
	walk(root, "")
	sort.Strings(out)
	return out
}

func describe(real, p string, st *unix.Stat_t) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return p + "/"
	case unix.S_IFREG:
		b, _ := os.ReadFile(real)
		return p + "=" + string(b)
	case unix.S_IFLNK:
		l, _ := os.Readlink(real)
		return p + "->" + l
	}
	return fmt.Sprintf("%s mode %o", p, st.Mode)
}

func walkDir(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	must(t, filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		must(t, err)
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		must(t, unix.Lstat(p, &st))
		out = append(out, describe(p, rel, &st))
		return nil
	}))
	sort.Strings(out)
	return out
}

// TestAgainstKernel changes a two-layer union through kernel overlay with
// redirect_dir=on (whiteouts, opaque dirs, redirected dirs), unmounts, and
// checks that the stack shows exactly the tree the kernel shows.
func TestAgainstKernel(t *testing.T) {
	needRoot(t)
	d := t.TempDir()
	l1, l2, up, wk, mnt := filepath.Join(d, "l1"), filepath.Join(d, "l2"), filepath.Join(d, "u"), filepath.Join(d, "w"), filepath.Join(d, "m")
	for _, p := range []string{l1, l2, up, wk, mnt} {
		must(t, os.Mkdir(p, 0o755))
	}
	files := map[string]string{
		"l2/a/b/c/f": "deep", "l2/a/g": "g2", "l2/x/y": "y", "l2/keep": "k2", "l2/gone/z": "z",
		"l1/a/g": "g1", "l1/a/h": "h1", "l1/x/y2": "y2", "l1/top": "t",
	}
	for p, c := range files {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(d, p)), 0o755))
		must(t, os.WriteFile(filepath.Join(d, p), []byte(c), 0o644))
	}
	opts := fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s,redirect_dir=on", l1, l2, up, wk)
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		t.Fatalf("kernel overlay with redirect_dir=on: %v", err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			must(t, unix.Unmount(mnt, 0))
			mounted = false
		}
	}
	t.Cleanup(func() {
		if mounted {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	m := func(p string) string { return filepath.Join(mnt, p) }
	must(t, os.Rename(m("a/b"), m("x/bb"))) // redirect to another dir
	must(t, os.Rename(m("x"), m("x2")))     // merged dir renamed in place
	must(t, os.WriteFile(m("x2/bb/c/new"), []byte("n"), 0o644))
	must(t, os.Remove(m("a/g")))        // whiteout
	must(t, os.RemoveAll(m("gone")))    // dir whiteout
	must(t, os.Mkdir(m("gone"), 0o755)) // opaque
	must(t, os.WriteFile(m("gone/fresh"), []byte("f"), 0o644))
	must(t, os.WriteFile(m("keep"), []byte("changed"), 0o644))
	must(t, os.Symlink("keep", m("link")))
	must(t, os.Rename(m("x2/bb"), m("bb"))) // renamed twice
	want := walkDir(t, mnt)
	unmount()
	if r := Markers(filepath.Join(up, "bb")).Redirect; r != "/a/b" {
		t.Fatalf("kernel left redirect %q on bb, want /a/b", r)
	}

	got := walkStack(t, &Stack{Layers: []string{up, l1, l2}})
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stack shows\n%s\nkernel showed\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	lower := walkStack(t, &Stack{Layers: []string{l1, l2}})
	if len(lower) == 0 || lower[0] != "a/" {
		t.Errorf("lower stack: %v", lower)
	}
}

// TestOCIForms reads the OCI whiteout and opaque files.
func TestOCIForms(t *testing.T) {
	d := t.TempDir()
	l1, l2 := filepath.Join(d, "l1"), filepath.Join(d, "l2")
	for p, c := range map[string]string{
		"l2/a/x": "x", "l2/a/y": "y", "l2/b/z": "z", "l2/c": "c",
		"l1/.wh.c": "", "l1/a/.wh.x": "", "l1/b/.wh..wh..opq": "", "l1/b/w": "w",
		// A whiteout hides names of the layers below only; an opaque
		// marker on a layer root hides nothing.
		"l1/both": "top", "l1/.wh.both": "", "l2/both": "low", "l1/.wh..wh..opq": "",
	} {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(d, p)), 0o755))
		must(t, os.WriteFile(filepath.Join(d, p), []byte(c), 0o644))
	}
	got := strings.Join(walkStack(t, &Stack{Layers: []string{l1, l2}}), " ")
	if want := "a/ a/y=y b/ b/w=w both=top"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := (&Stack{Layers: []string{l1, l2}}).Lookup("c"); err != ErrNotExist {
		t.Errorf("whited-out c: %v", err)
	}
}
