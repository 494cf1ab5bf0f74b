package unionfs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

func nlinkIno(t *testing.T, p string) (uint64, uint64) {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(p, &st))
	return uint64(st.Nlink), st.Ino
}

// Names of one lower inode stay one inode across copy-up (kernel index):
// a write through one is seen through all, st_nlink counts the names the
// union shows from the first stat on, st_ino is the lower one, and all of
// it holds after a remount and under kernel overlay with index=on.
func TestHardLinksStayOneInode(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		put(t, l[0], "a/f", "shared")
		must(t, os.MkdirAll(filepath.Join(l[0], "b"), 0o755))
		must(t, os.Link(filepath.Join(l[0], "a/f"), filepath.Join(l[0], "a/g")))
		must(t, os.Link(filepath.Join(l[0], "a/f"), filepath.Join(l[0], "b/h")))
		put(t, l[0], "c/.keep", "")
	})
	_, lowerIno := nlinkIno(t, filepath.Join(tu.lowers[0], "a/f"))
	names := []string{"a/f", "a/g", "b/h"}
	check := func(what string, want string, nlink uint64, names ...string) {
		t.Helper()
		for _, n := range names {
			assert.Equal(t, want, readFile(t, tu.m(n)), "%s: content of %s", what, n)
			nl, ino := nlinkIno(t, tu.m(n))
			assert.Equal(t, nlink, nl, "%s: st_nlink of %s", what, n)
			assert.Equal(t, lowerIno, ino, "%s: st_ino of %s", what, n)
		}
	}
	check("before copy-up", "shared", 3, names...)

	must(t, os.WriteFile(tu.m("a/f"), []byte("written"), 0o644))
	check("after a write through a/f", "written", 3, names...)
	must(t, appendTo(tu.m("b/h"), "+"))
	check("after an append through b/h", "written+", 3, names...)
	must(t, os.Chmod(tu.m("a/g"), 0o600))
	st, err := os.Stat(tu.m("b/h"))
	must(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "chmod through a/g seen through b/h")

	must(t, os.Remove(tu.m("a/g")))
	check("after unlink a/g", "written+", 2, "a/f", "b/h")
	must(t, os.Link(tu.m("b/h"), tu.m("c/new")))
	check("after link b/h c/new", "written+", 3, "a/f", "b/h", "c/new")
	must(t, os.Rename(tu.m("b/h"), tu.m("c/h2")))
	check("after rename b/h c/h2", "written+", 3, "a/f", "c/h2", "c/new")
	assert.Equal(t, "shared", readFile(t, filepath.Join(tu.lowers[0], "a/f")), "lower unchanged")

	tu.unmount(t)
	tu.mount(t)
	check("after remount", "written+", 3, "a/f", "c/h2", "c/new")

	// Kernel overlay with index=on reads the same index.
	tu.unmount(t)
	unmountK := kernelOverlay(t, tu.lowers[0], tu.upper, tu.work, tu.mnt, ",redirect_dir=on,index=on")
	check("kernel overlay with index=on", "written+", 3, "a/f", "c/h2", "c/new")
	unmountK()

	// The last name gone, the index entry goes too.
	tu.mount(t)
	for _, n := range []string{"a/f", "c/h2", "c/new"} {
		must(t, os.Remove(tu.m(n)))
	}
	ents, err := os.ReadDir(filepath.Join(tu.work, "index"))
	must(t, err)
	assert.Empty(t, ents, "index entries left")
}

// Where the layers live on different filesystems, st_ino composes the
// layer's filesystem into the top bits (as kernel xino) and stays the
// lower one across copy-up and remount; d_ino equals st_ino; st_dev is
// the mount's for every entry.
func TestInodeIdentityAcrossFilesystems(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		must(t, unix.Mount("tmpfs", l[0], "tmpfs", 0, "size=16m"))
		t.Cleanup(func() { unix.Unmount(l[0], unix.MNT_DETACH) })
		put(t, l[0], "d/f", "lower")
		put(t, l[0], "d/g", "lower")
		put(t, u, "d/up", "upper")
	})
	assert.False(t, tu.srv.u.samefs, "layers on one filesystem")
	inos := func() map[string]uint64 {
		m := map[string]uint64{}
		for _, n := range []string{"d", "d/f", "d/g", "d/up"} {
			_, ino := nlinkIno(t, tu.m(n))
			m[n] = ino
		}
		return m
	}
	before := inos()
	seen := map[uint64]string{}
	for n, ino := range before {
		if o, dup := seen[ino]; dup {
			t.Errorf("%s and %s share st_ino %d", n, o, ino)
		}
		seen[ino] = n
	}
	var mst unix.Stat_t
	must(t, unix.Stat(tu.mnt, &mst))
	for n := range before {
		var st unix.Stat_t
		must(t, unix.Lstat(tu.m(n), &st))
		assert.Equal(t, mst.Dev, st.Dev, "st_dev of %s", n)
	}
	must(t, os.Chmod(tu.m("d/f"), 0o600))
	must(t, appendTo(tu.m("d/g"), "+"))
	assert.Equal(t, before, inos(), "after copy-up")
	tu.unmount(t)
	tu.mount(t)
	assert.Equal(t, before, inos(), "after remount")
	for name, dino := range direntInos(t, tu.m("d")) {
		if name == "." || name == ".." {
			continue
		}
		assert.Equal(t, before["d/"+name], dino, "d_ino of d/%s", name)
	}
}
