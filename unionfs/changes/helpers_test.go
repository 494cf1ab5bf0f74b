package changes

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/layerfs/layerfs/unionfs/layout"
	"golang.org/x/sys/unix"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// needRoot fails in CI (which must run these as root) and skips elsewhere.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs root (kernel overlay mounts, mknod, trusted xattrs), and CI must provide it")
	}
	t.Skip("needs root")
}

// build makes the entries of spec under root: "p/" a directory, "p->t" a
// symlink to t, "p" a file with the given content.
func build(t *testing.T, root string, spec ...string) {
	t.Helper()
	for i := 0; i < len(spec); i += 2 {
		p, content := spec[i], spec[i+1]
		switch {
		case strings.HasSuffix(p, "/"):
			must(t, os.MkdirAll(filepath.Join(root, p), 0o755))
		case strings.Contains(p, "->"):
			name, target, _ := strings.Cut(p, "->")
			must(t, os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755))
			must(t, os.Symlink(target, filepath.Join(root, name)))
		default:
			must(t, os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755))
			must(t, os.WriteFile(filepath.Join(root, p), []byte(content), 0o644))
		}
	}
}

// dirs makes the named directories under a fresh temp dir.
func dirs(t *testing.T, names ...string) map[string]string {
	root := t.TempDir()
	m := map[string]string{}
	for _, n := range names {
		m[n] = filepath.Join(root, n)
		must(t, os.Mkdir(m[n], 0o755))
	}
	return m
}

// mountOverlay mounts kernel overlay at mnt and unmounts it when the test
// ends; the returned func unmounts it earlier.
func mountOverlay(t *testing.T, mnt, opts string) func() {
	t.Helper()
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		t.Fatalf("mount -t overlay -o %s: %v", opts, err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return func() {
		t.Helper()
		if mounted {
			must(t, unix.Unmount(mnt, 0))
			mounted = false
		}
	}
}

func diffLines(t *testing.T, l layout.Layers) string {
	t.Helper()
	list, err := Diff(l)
	must(t, err)
	var b strings.Builder
	for _, c := range list {
		fmt.Fprintln(&b, c)
	}
	return b.String()
}

func lines(s ...string) string { return strings.Join(s, "\n") + "\n" }
