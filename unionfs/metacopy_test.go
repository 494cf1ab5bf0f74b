package unionfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

var bigData = bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB

var plus = append(append([]byte{}, bigData...), '+')

// sameData compares file content with want without dumping megabytes.
func sameData(t *testing.T, want []byte, p string, what ...any) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("%v: %v", what, err)
		return
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Errorf("%v: %s: %d bytes, want %d; first difference at %d", what, p, len(got), len(want), i)
	}
}

func blocksOf(t *testing.T, p string) int64 {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(p, &st))
	return st.Blocks
}

func isMetacopy(p string) bool {
	_, err := unix.Lgetxattr(p, "trusted.overlay.metacopy", nil)
	return err == nil
}

// chmod, chown, utimes and setxattr of a lower file copy its metadata
// only; the first write copies the data, in place, and drops the mark.
func TestMetacopy(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		for _, n := range []string{"mod", "own", "time", "xattr", "trunc"} {
			must(t, os.WriteFile(filepath.Join(l[0], n), bigData, 0o644))
		}
		must(t, os.MkdirAll(filepath.Join(l[0], "tree/a/b"), 0o755))
		for _, n := range []string{"tree/f1", "tree/a/f2", "tree/a/b/f3"} {
			must(t, os.WriteFile(filepath.Join(l[0], n), bigData, 0o644))
		}
	})
	lowerBlocks := blocksOf(t, filepath.Join(tu.lowers[0], "mod"))
	var lst unix.Stat_t
	must(t, unix.Lstat(filepath.Join(tu.lowers[0], "mod"), &lst))

	must(t, os.Chmod(tu.m("mod"), 0o600))
	must(t, os.Chown(tu.m("own"), 123, 456))
	must(t, os.Chtimes(tu.m("time"), time.Unix(1e9, 0), time.Unix(1e9, 0)))
	must(t, unix.Setxattr(tu.m("xattr"), "user.k", []byte("v"), 0))
	for _, n := range []string{"mod", "own", "time", "xattr"} {
		up := filepath.Join(tu.upper, n)
		assert.True(t, isMetacopy(up), "%s: metacopy mark", n)
		assert.LessOrEqual(t, blocksOf(t, up), int64(8), "%s: no data in the upper copy (an xattr block at most)", n)
		sameData(t, bigData, tu.m(n), "%s: data read from below", n)
		assert.Equal(t, lowerBlocks, blocksOf(t, tu.m(n)), "%s: st_blocks are the data's", n)
	}
	st, err := os.Stat(tu.m("mod"))
	must(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	assert.Equal(t, lst.Mtim.Nano(), st.ModTime().UnixNano(), "copy-up keeps mtime")
	var ost unix.Stat_t
	must(t, unix.Stat(tu.m("own"), &ost))
	assert.Equal(t, []uint32{123, 456}, []uint32{ost.Uid, ost.Gid})

	// chown -R over a tree moves no data.
	before := tu.srv.u.stats.copyUpBytes.Load()
	must(t, filepath.Walk(tu.m("tree"), func(p string, fi os.FileInfo, err error) error {
		must(t, err)
		return os.Lchown(p, 7, 7)
	}))
	assert.Equal(t, before, tu.srv.u.stats.copyUpBytes.Load(), "chown -R copied data")
	assert.True(t, isMetacopy(filepath.Join(tu.upper, "tree/a/b/f3")))

	// The first write brings the data up; metadata stays as set.
	must(t, appendTo(tu.m("mod"), "+"))
	up := filepath.Join(tu.upper, "mod")
	assert.False(t, isMetacopy(up), "mark dropped after the data copy")
	sameData(t, plus, tu.m("mod"))
	sameData(t, plus, up)
	st, err = os.Stat(tu.m("mod"))
	must(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	assert.Equal(t, uint64(len(bigData)), tu.srv.u.stats.copyUpBytes.Load()-before, "one file's data copied")

	// Truncating to zero copies nothing.
	must(t, os.Chmod(tu.m("trunc"), 0o640))
	must(t, os.Truncate(tu.m("trunc"), 0))
	assert.Equal(t, "", readFile(t, tu.m("trunc")))
	assert.False(t, isMetacopy(filepath.Join(tu.upper, "trunc")))

	// After a remount the data is found below again.
	tu.unmount(t)
	tu.mount(t)
	for _, n := range []string{"own", "time", "xattr", "tree/a/b/f3"} {
		sameData(t, bigData, tu.m(n), "%s after remount", n)
		assert.Equal(t, lowerBlocks, blocksOf(t, tu.m(n)), "%s: st_blocks after remount", n)
	}
	must(t, appendTo(tu.m("own"), "+"))
	sameData(t, plus, tu.m("own"))
	// Renaming or linking brings the data up first (no redirects on files).
	must(t, os.Rename(tu.m("time"), tu.m("time2")))
	assert.False(t, isMetacopy(filepath.Join(tu.upper, "time2")))
	sameData(t, bigData, tu.m("time2"))
}

// Kernel overlay with metacopy=on reads layerfs's metacopy files, and
// layerfs reads the kernel's, also one the kernel renamed (a redirect on
// the file names its data).
func TestMetacopyInterchange(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		for _, n := range []string{"a", "b", "c", "d"} {
			must(t, os.WriteFile(filepath.Join(l[0], n), bigData, 0o644))
		}
		must(t, os.Mkdir(filepath.Join(l[0], "dir"), 0o755))
	})
	must(t, os.Chmod(tu.m("a"), 0o600))
	tu.unmount(t)

	kUnmount := kernelOverlay(t, tu.lowers[0], tu.upper, tu.work, tu.mnt, ",redirect_dir=on,metacopy=on")
	sameData(t, bigData, tu.m("a"), "kernel reads layerfs's metacopy file")
	must(t, os.Chmod(tu.m("b"), 0o600))
	must(t, os.Chmod(tu.m("c"), 0o600))
	must(t, os.Rename(tu.m("c"), tu.m("dir/c2")))
	kUnmount()
	assert.True(t, isMetacopy(filepath.Join(tu.upper, "b")), "the kernel made a metacopy file")
	assert.True(t, isMetacopy(filepath.Join(tu.upper, "dir/c2")), "and kept it one across the rename")

	tu.mount(t)
	for _, n := range []string{"a", "b", "dir/c2"} {
		sameData(t, bigData, tu.m(n), "layerfs reads %s", n)
	}
	must(t, appendTo(tu.m("dir/c2"), "+"))
	sameData(t, plus, tu.m("dir/c2"))
	sameData(t, bigData, filepath.Join(tu.lowers[0], "c"), "lower unchanged")
}

// With passthrough a read handle of a metacopy file is backed by its
// data below; a writer then gets the upper file with the data in it.
func TestMetacopyPassthrough(t *testing.T) {
	tu := newTestUnionOpts(t, 1, Options{Passthrough: true}, func(l []string, u string) {
		must(t, os.WriteFile(filepath.Join(l[0], "f"), bigData, 0o644))
	})
	must(t, os.Chmod(tu.m("f"), 0o640))
	r, err := os.Open(tu.m("f"))
	must(t, err)
	defer r.Close()
	buf := make([]byte, 16)
	_, err = r.ReadAt(buf, 16)
	must(t, err)
	assert.Equal(t, bigData[16:32], buf)
	must(t, appendTo(tu.m("f"), "+"))
	sameData(t, plus, tu.m("f"))
	assert.False(t, isMetacopy(filepath.Join(tu.upper, "f")))
}

// In the user xattr format a kernel mount follows no metacopy, so
// layerfs copies data as it always did.
func TestMetacopyNotInUserXattrFormat(t *testing.T) {
	tu := newTestUnionOpts(t, 1, Options{UserXattr: true}, func(l []string, u string) {
		must(t, os.WriteFile(filepath.Join(l[0], "f"), bigData, 0o644))
	})
	must(t, os.Chmod(tu.m("f"), 0o600))
	_, err := unix.Lgetxattr(filepath.Join(tu.upper, "f"), "user.overlay.metacopy", nil)
	assert.Error(t, err)
	sameData(t, bigData, filepath.Join(tu.upper, "f"))
}

// With metacopy=off a metadata-only file in the layers is refused
// (EPERM), as by the kernel with metacopy=off, and chmod copies data.
func TestMetacopyOff(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		must(t, os.WriteFile(filepath.Join(l[0], "meta"), bigData, 0o644))
		must(t, os.WriteFile(filepath.Join(l[0], "f"), bigData, 0o644))
	})
	must(t, os.Chmod(tu.m("meta"), 0o600))
	tu.unmount(t)
	tu.opts.NoMetacopy = true
	tu.mount(t)
	_, err := os.Stat(tu.m("meta"))
	assert.ErrorIs(t, err, unix.EPERM)
	must(t, os.Chmod(tu.m("f"), 0o600))
	assert.False(t, isMetacopy(filepath.Join(tu.upper, "f")))
	sameData(t, bigData, filepath.Join(tu.upper, "f"), "data copied up")
}

// Copying a metadata-only file's data in is no change the user made: the
// write clears file capabilities, and they are put back, as the kernel
// does (here the data is copied for a rename).
func TestMetacopyDataKeepsCapabilities(t *testing.T) {
	caps := []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // cap_net_raw+ep, v2
	tu := newTestUnion(t, 1, func(l []string, u string) {
		put(t, l[0], "f", strings.Repeat("data", 1000))
		must(t, unix.Setxattr(filepath.Join(l[0], "f"), "security.capability", caps, 0))
	})
	must(t, os.Chmod(tu.m("f"), 0o750)) // metadata only
	assert.True(t, isMetacopy(filepath.Join(tu.upper, "f")))
	must(t, os.Rename(tu.m("f"), tu.m("g"))) // the data is copied in
	got := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(tu.upper, "g"), "security.capability", got)
	must(t, err)
	assert.Equal(t, caps, got[:n])
	assert.False(t, isMetacopy(filepath.Join(tu.upper, "g")))
	assert.Equal(t, strings.Repeat("data", 1000), readFile(t, tu.m("g")))
}

// An upper written with metacopy=on may become a lower layer (an image
// layer, a committed container): its metadata-only files show their data
// from the layers below, by name or through their redirect, as with
// kernel overlay, and copy up with that data.
func TestMetacopyInLowerLayer(t *testing.T) {
	needRoot(t)
	d := t.TempDir()
	l, u, w, m := filepath.Join(d, "l"), filepath.Join(d, "u"), filepath.Join(d, "w"), filepath.Join(d, "m")
	for _, p := range []string{l, u, w, m} {
		must(t, os.Mkdir(p, 0o755))
	}
	put(t, l, "f", "data f")
	put(t, l, "h", "data h")
	must(t, unix.Mount("overlay", m, "overlay", 0, "lowerdir="+l+",upperdir="+u+",workdir="+w+",redirect_dir=on,metacopy=on,index=on"))
	must(t, os.Chmod(filepath.Join(m, "f"), 0o600))
	must(t, os.Rename(filepath.Join(m, "h"), filepath.Join(m, "h2")))
	must(t, unix.Unmount(m, 0))
	if !isMetacopy(filepath.Join(u, "f")) || !isMetacopy(filepath.Join(u, "h2")) {
		t.Skip("the kernel did not leave metadata-only files")
	}
	// The kernel's upper, now the top lower of a union.
	tu := newTestUnion(t, 1, nil)
	tu.unmount(t)
	tu.lowers = []string{u, l}
	tu.mount(t)
	assert.Equal(t, "data f", readFile(t, tu.m("f")))
	assert.Equal(t, "data h", readFile(t, tu.m("h2")))
	must(t, os.Chmod(tu.m("h2"), 0o640)) // copies up with its data
	f, err := os.OpenFile(tu.m("f"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteString(" and more")
	must(t, err)
	must(t, f.Close())
	assert.Equal(t, "data f and more", readFile(t, tu.m("f")))
	assert.Equal(t, "data h", readFile(t, tu.m("h2")))
	assert.Equal(t, "data h", readFile(t, filepath.Join(tu.upper, "h2")))
	assert.False(t, isMetacopy(filepath.Join(tu.upper, "h2")))
}

// A lower file with several names is copied up as kernel overlay does
// with index=on,metacopy=on: a chmod, or the removal of one name, puts
// its metadata only into the index and leaves the data below; every name
// reads the lower data, the first write copies it for all names, and the
// kernel reads the same index.
func TestMetacopyOfHardLinks(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		must(t, os.MkdirAll(filepath.Join(l[0], "a"), 0o755))
		must(t, os.MkdirAll(filepath.Join(l[0], "b"), 0o755))
		must(t, os.WriteFile(filepath.Join(l[0], "a/f"), bigData, 0o644))
		must(t, os.Link(filepath.Join(l[0], "a/f"), filepath.Join(l[0], "a/g")))
		must(t, os.Link(filepath.Join(l[0], "a/f"), filepath.Join(l[0], "b/h")))
		must(t, os.Link(filepath.Join(l[0], "a/f"), filepath.Join(l[0], "b/k")))
	})
	lowerBlocks := blocksOf(t, filepath.Join(tu.lowers[0], "a/f"))
	index := func() string {
		t.Helper()
		ents, err := os.ReadDir(filepath.Join(tu.work, "index"))
		must(t, err)
		if len(ents) != 1 {
			t.Fatalf("index holds %d entries, want 1", len(ents))
		}
		return filepath.Join(tu.work, "index", ents[0].Name())
	}
	metaOnly := func(what string) {
		t.Helper()
		assert.True(t, isMetacopy(index()), "%s: the index entry holds metadata only", what)
		assert.Less(t, blocksOf(t, index()), lowerBlocks/4, "%s: the data stayed below", what)
	}
	reads := func(what string, want []byte, mode os.FileMode, nlink uint64, names ...string) {
		t.Helper()
		for _, n := range names {
			sameData(t, want, tu.m(n), what, n)
			st, err := os.Stat(tu.m(n))
			must(t, err)
			assert.Equal(t, mode, st.Mode().Perm(), "%s: mode of %s", what, n)
			nl, _ := nlinkIno(t, tu.m(n))
			assert.Equal(t, nlink, nl, "%s: st_nlink of %s", what, n)
			assert.Equal(t, lowerBlocks, blocksOf(t, tu.m(n)), "%s: st_blocks of %s are its data's", what, n)
		}
	}

	// Another user reads every name before the chmod, and none after it:
	// a name still below shows the index entry's mode too.
	for _, d := range []string{tu.dir, filepath.Dir(tu.dir)} {
		must(t, os.Chmod(d, 0o755)) // t.TempDir makes them 0700
	}
	asOther := func(names ...string) error {
		args := append([]string{"--reuid=1001", "--regid=1001", "--clear-groups", "cat"}, names...)
		return exec.Command("setpriv", args...).Run()
	}
	assert.NoError(t, asOther(tu.m("a/f"), tu.m("b/h")), "another user reads before the chmod")
	must(t, os.Chmod(tu.m("a/g"), 0o600))
	metaOnly("after chmod")
	for _, n := range []string{"a/f", "a/g", "b/h", "b/k"} {
		assert.Error(t, asOther(tu.m(n)), "another user reads %s after chmod 0600", n)
	}
	reads("after chmod", bigData, 0o600, 4, "a/f", "a/g", "b/h", "b/k")
	must(t, os.Remove(tu.m("a/f")))
	metaOnly("after unlink")
	reads("after unlink", bigData, 0o600, 3, "a/g", "b/h", "b/k")

	tu.unmount(t)
	tu.mount(t)
	reads("after remount", bigData, 0o600, 3, "a/g", "b/h", "b/k")
	tu.unmount(t)
	unmountK := kernelOverlay(t, tu.lowers[0], tu.upper, tu.work, tu.mnt, ",redirect_dir=on,index=on,metacopy=on")
	reads("kernel overlay", bigData, 0o600, 3, "a/g", "b/h", "b/k")
	unmountK()
	tu.mount(t)

	// Through a name still only below, after remount: the data comes for
	// every name.
	must(t, appendTo(tu.m("b/h"), "+"))
	assert.False(t, isMetacopy(index()), "a write copies the data")
	for _, n := range []string{"a/g", "b/h", "b/k"} {
		sameData(t, plus, tu.m(n), "after a write through b/h", n)
	}
	sameData(t, bigData, filepath.Join(tu.lowers[0], "a/f"), "lower unchanged")

	// Removing every name copies no data and leaves no index entry.
	tu.unmount(t)
	tu2 := newTestUnion(t, 1, func(l []string, u string) {
		must(t, os.WriteFile(filepath.Join(l[0], "x"), bigData, 0o644))
		must(t, os.Link(filepath.Join(l[0], "x"), filepath.Join(l[0], "y")))
	})
	must(t, os.Remove(tu2.m("x")))
	ents, err := os.ReadDir(filepath.Join(tu2.work, "index"))
	must(t, err)
	if assert.Len(t, ents, 1, "index after the first unlink") {
		p := filepath.Join(tu2.work, "index", ents[0].Name())
		assert.True(t, isMetacopy(p), "unlink of one name copies metadata only")
	}
	sameData(t, bigData, tu2.m("y"), "the other name")
	must(t, os.Remove(tu2.m("y")))
	ents, err = os.ReadDir(filepath.Join(tu2.work, "index"))
	must(t, err)
	assert.Empty(t, ents, "index entries left")
}

// The kernel's metacopy index entries (index=on,metacopy=on) read the
// same through layerfs.
func TestMetacopyOfHardLinksFromKernel(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		must(t, os.WriteFile(filepath.Join(l[0], "f"), bigData, 0o644))
		must(t, os.Link(filepath.Join(l[0], "f"), filepath.Join(l[0], "g")))
	})
	tu.unmount(t)
	unmountK := kernelOverlay(t, tu.lowers[0], tu.upper, tu.work, tu.mnt, ",redirect_dir=on,index=on,metacopy=on")
	must(t, os.Chmod(tu.m("f"), 0o600))
	unmountK()
	assert.True(t, isMetacopy(filepath.Join(tu.upper, "f")), "the kernel made a metacopy copy of a hard link")
	tu.mount(t)
	for _, n := range []string{"f", "g"} {
		sameData(t, bigData, tu.m(n), "layerfs reads", n)
		st, err := os.Stat(tu.m(n))
		must(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "mode of %s", n)
	}
	must(t, appendTo(tu.m("g"), "+"))
	sameData(t, plus, tu.m("f"), "f after a write through g")
}
