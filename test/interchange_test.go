package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// mergedView describes a merged tree: names, types, modes, owners,
// content, symlink targets, user.* xattrs and inode numbers.
func mergedView(t *testing.T, root string) string {
	t.Helper()
	return treeView(t, root, viewOpts{ino: true})
}

// changes applies a representative set of changes through a merged view.
func changes(t *testing.T, m string) {
	t.Helper()
	step := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(filepath.Join(m, "etc/config"), os.O_WRONLY|os.O_APPEND, 0)
	step(err)
	f.WriteString("appended\n")
	f.Close()
	step(os.WriteFile(filepath.Join(m, "new"), []byte("new file"), 0o640))
	step(os.Remove(filepath.Join(m, "etc/stale")))
	step(os.RemoveAll(filepath.Join(m, "var")))
	step(os.Mkdir(filepath.Join(m, "var"), 0o700))
	step(os.WriteFile(filepath.Join(m, "var/fresh"), []byte("fresh"), 0o644))
	step(os.Chmod(filepath.Join(m, "bin/tool"), 0o700))
	step(os.Rename(filepath.Join(m, "etc/moved"), filepath.Join(m, "etc/renamed")))
	step(os.Symlink("../etc/config", filepath.Join(m, "bin/cfg")))
	step(unix.Setxattr(filepath.Join(m, "bin/tool"), "user.tag", []byte("v1"), 0))
	step(os.Remove(filepath.Join(m, "deep/a/b/c")))
	step(os.Link(filepath.Join(m, "new"), filepath.Join(m, "new.link")))
}

func fillLowers(t *testing.T, tr *tree) {
	t.Helper()
	writeFile(t, filepath.Join(tr.lowers[1], "etc/config"), "base\n")
	writeFile(t, filepath.Join(tr.lowers[1], "etc/stale"), "stale")
	writeFile(t, filepath.Join(tr.lowers[0], "etc/moved"), "moved")
	writeFile(t, filepath.Join(tr.lowers[1], "var/log/x"), "x")
	writeFile(t, filepath.Join(tr.lowers[0], "var/cache/y"), "y")
	writeFile(t, filepath.Join(tr.lowers[1], "bin/tool"), "#!/bin/sh\n")
	writeFile(t, filepath.Join(tr.lowers[1], "deep/a/b/c"), "c")
	writeFile(t, filepath.Join(tr.lowers[1], "deep/a/b/d"), "d")
}

type driver struct {
	name  string
	mount func(t *testing.T, tr *tree, userxattr bool)
}

func kernelMount(t *testing.T, tr *tree, userxattr bool) {
	t.Helper()
	cleanupMount(t, tr.mnt)
	o := tr.opts()
	if userxattr {
		o += ",userxattr"
	} else {
		// The features layerfs has and writes in the trusted format
		// (directory redirects, metacopy files), as --driver=kernel
		// mounts them.
		o += ",redirect_dir=on,metacopy=on"
	}
	if r := run(t, "mount", "-t", "overlay", "overlay", "-o", o, tr.mnt); r.code != 0 {
		t.Fatalf("kernel overlay: %s", r.stderr)
	}
}

func layerfsMount(t *testing.T, tr *tree, userxattr bool) {
	t.Helper()
	if userxattr {
		tr.mount(t, "-o", "userxattr")
	} else {
		tr.mount(t)
	}
}

func unmountAny(t *testing.T, p string) {
	t.Helper()
	if r := run(t, "umount", p); r.code != 0 {
		t.Fatalf("umount: %s", r.stderr)
	}
	waitUnmounted(t, p)
}

// An upper dir written by one driver shows the same merged view when the
// other mounts it, both ways, in the privileged (trusted.overlay.*) and
// unprivileged (user.overlay.*, userxattr) formats.
func TestInterchangeWithKernel(t *testing.T) {
	needRoot(t)
	kernel := driver{"kernel", kernelMount}
	layerfs := driver{"layerfs", layerfsMount}
	for _, userxattr := range []bool{false, true} {
		for _, pair := range [][2]driver{{layerfs, kernel}, {kernel, layerfs}} {
			writer, reader := pair[0], pair[1]
			name := fmt.Sprintf("%s-then-%s-userxattr=%v", writer.name, reader.name, userxattr)
			t.Run(name, func(t *testing.T) {
				tr := newTree(t, 2)
				fillLowers(t, tr)
				writer.mount(t, tr, userxattr)
				changes(t, tr.mnt)
				want := mergedView(t, tr.mnt)
				unmountAny(t, tr.mnt)
				reader.mount(t, tr, userxattr)
				assert.Equal(t, want, mergedView(t, tr.mnt))
				unmountAny(t, tr.mnt)
				// Markers of the format asked for, none of the other.
				out, _ := exec.Command("getfattr", "-R", "-d", "-m", "-", "--absolute-names", tr.upper).Output()
				if userxattr {
					assert.NotContains(t, string(out), "trusted.overlay.")
				} else {
					assert.NotContains(t, string(out), "user.overlay.")
				}
			})
		}
	}
}
