package unionfs

import (
	"bytes"
	"context"
	"github.com/layerfs/layerfs/copyup/at"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Lstat(p, &st))
	return st.Ino
}

// st_ino stays the same across copy-up and across a remount.
func TestInodeStableAcrossCopyUp(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		put(t, l[0], "f", "data")
		put(t, l[0], "d/g", "g")
	})
	lowerF, lowerD := ino(t, filepath.Join(tu.lowers[0], "f")), ino(t, filepath.Join(tu.lowers[0], "d"))
	assert.Equal(t, lowerF, ino(t, tu.m("f")))
	must(t, os.WriteFile(tu.m("f"), []byte("new"), 0o644))
	must(t, os.WriteFile(tu.m("d/new"), nil, 0o644))
	assert.NotEqual(t, lowerF, ino(t, filepath.Join(tu.upper, "f")), "a real copy was made")
	assert.Equal(t, lowerF, ino(t, tu.m("f")))
	assert.Equal(t, lowerD, ino(t, tu.m("d")))
	tu.unmount(t)
	tu.mount(t)
	assert.Equal(t, lowerF, ino(t, tu.m("f")), "after remount")
	assert.Equal(t, lowerD, ino(t, tu.m("d")), "after remount")
}

// Copy-up keeps holes, mode, owner, times and xattrs, and leaves nothing
// behind in the work dir.
func TestCopyUpKeepsEverything(t *testing.T) {
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	tu := newTestUnion(t, 1, func(l []string, u string) {
		p := filepath.Join(l[0], "sparse")
		f, err := os.Create(p)
		must(t, err)
		f.WriteAt([]byte("head"), 0)
		f.WriteAt([]byte("tail"), 64<<20)
		f.Close()
		must(t, os.Lchown(p, 1234, 5678))
		must(t, syscall.Chmod(p, 0o4751))
		must(t, unix.Lsetxattr(p, "user.color", []byte("blue"), 0))
		must(t, unix.Lsetxattr(p, "trusted.overlay.origin", []byte("not ours to copy"), 0))
		must(t, os.Chtimes(p, mtime, mtime))
		must(t, os.Symlink("/etc/passwd", filepath.Join(l[0], "link")))
		must(t, unix.Mkfifo(filepath.Join(l[0], "fifo"), 0o640))
	})
	must(t, unix.Setxattr(tu.m("sparse"), "user.k", []byte("v"), 0))
	up := filepath.Join(tu.upper, "sparse")
	var st syscall.Stat_t
	must(t, syscall.Lstat(up, &st))
	assert.Equal(t, uint32(0o4751), st.Mode&0o7777)
	assert.Equal(t, uint32(1234), st.Uid)
	assert.Equal(t, uint32(5678), st.Gid)
	assert.Equal(t, mtime.UnixNano(), time.Unix(st.Mtim.Sec, st.Mtim.Nsec).UnixNano())
	assert.Less(t, st.Blocks*512, int64(1<<20), "holes were filled: %d blocks", st.Blocks)
	assert.Equal(t, int64(64<<20+4), st.Size)
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(up, "user.color", buf)
	must(t, err)
	assert.Equal(t, "blue", string(buf[:n]))
	// The lower's private origin xattr is not copied; ours replaces it.
	n, err = unix.Lgetxattr(up, "trusted.overlay.origin", buf)
	must(t, err)
	assert.NotEqual(t, "not ours to copy", string(buf[:n]))
	data, err := os.ReadFile(tu.m("sparse"))
	must(t, err)
	assert.Equal(t, []byte("head"), data[:4])
	assert.Equal(t, []byte("tail"), data[64<<20:])

	// Symlinks and fifos copy up as what they are.
	must(t, os.Lchown(tu.m("link"), 42, 43))
	target, err := os.Readlink(filepath.Join(tu.upper, "link"))
	must(t, err)
	assert.Equal(t, "/etc/passwd", target)
	must(t, os.Chmod(tu.m("fifo"), 0o600))
	fi, err := os.Lstat(filepath.Join(tu.upper, "fifo"))
	must(t, err)
	assert.Equal(t, os.ModeNamedPipe|0o600, fi.Mode())
	assert.Empty(t, names(t, filepath.Join(tu.work, "work")))
}

// O_TRUNC copies no data.
func TestOpenTruncCopiesNoData(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		put(t, l[0], "big", string(bytes.Repeat([]byte("x"), 1<<20)))
	})
	f, err := os.OpenFile(tu.m("big"), os.O_WRONLY|os.O_TRUNC, 0)
	must(t, err)
	f.Close()
	fi, err := os.Stat(filepath.Join(tu.upper, "big"))
	must(t, err)
	assert.Equal(t, int64(0), fi.Size())
	assert.Equal(t, 1<<20, len(readFile(t, filepath.Join(tu.lowers[0], "big"))))
}

// A reader that opened the lower file before its copy-up sees the data
// written after it, as with kernel overlay.
func TestReaderFollowsCopyUp(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) { put(t, l[0], "f", "old!") })
	r, err := os.Open(tu.m("f"))
	must(t, err)
	defer r.Close()
	must(t, os.WriteFile(tu.m("f"), []byte("new!"), 0o644))
	buf := make([]byte, 4)
	_, err = r.ReadAt(buf, 0)
	must(t, err)
	assert.Equal(t, "new!", string(buf))
}

// Private overlay xattrs are neither listed, readable nor settable.
func TestPrivateXattrs(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		put(t, l[0], "d/f", "x")
		must(t, unix.Setxattr(filepath.Join(l[0], "d"), "trusted.overlay.opaque", []byte("n"), 0))
		must(t, unix.Setxattr(filepath.Join(l[0], "d"), "user.overlay.foo", []byte("n"), 0))
		must(t, unix.Setxattr(filepath.Join(l[0], "d"), "user.fuseoverlayfs.bar", []byte("n"), 0))
		must(t, unix.Setxattr(filepath.Join(l[0], "d"), "user.visible", []byte("v"), 0))
	})
	buf := make([]byte, 256)
	n, err := unix.Listxattr(tu.m("d"), buf)
	must(t, err)
	assert.Equal(t, "user.visible\x00", string(buf[:n]))
	n, err = unix.Listxattr(tu.m("d"), nil)
	must(t, err)
	assert.Equal(t, len("user.visible\x00"), n, "size query counts only visible names")
	_, err = unix.Getxattr(tu.m("d"), "trusted.overlay.opaque", buf)
	assert.ErrorIs(t, err, unix.ENODATA)
	for _, name := range []string{"trusted.overlay.opaque", "user.overlay.redirect", "user.fuseoverlayfs.x"} {
		assert.ErrorIs(t, unix.Setxattr(tu.m("d/f"), name, []byte("y"), 0), unix.EPERM, name)
		assert.ErrorIs(t, unix.Removexattr(tu.m("d"), name), unix.EPERM, name)
	}
}

// statfs reports the upper filesystem; its whole name length is usable
// (char 0/0 whiteouts need no ".wh." prefix).
func TestStatfs(t *testing.T) {
	tu := newTestUnion(t, 1, nil)
	var a, b unix.Statfs_t
	must(t, unix.Statfs(tu.mnt, &a))
	must(t, unix.Statfs(tu.upper, &b))
	assert.Equal(t, b.Namelen, a.Namelen)
	assert.Equal(t, b.Blocks, a.Blocks)
}

func TestRenameFlags(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		put(t, l[0], "a", "A")
		put(t, l[0], "b", "B")
		put(t, l[0], "dir/x", "x")
		put(t, u, "updir/y", "y")
	})
	assert.ErrorIs(t, unix.Renameat2(unix.AT_FDCWD, tu.m("a"), unix.AT_FDCWD, tu.m("b"), unix.RENAME_NOREPLACE), unix.EEXIST)
	must(t, unix.Renameat2(unix.AT_FDCWD, tu.m("a"), unix.AT_FDCWD, tu.m("b"), unix.RENAME_EXCHANGE))
	assert.Equal(t, "B", readFile(t, tu.m("a")))
	assert.Equal(t, "A", readFile(t, tu.m("b")))
	must(t, unix.Renameat2(unix.AT_FDCWD, tu.m("a"), unix.AT_FDCWD, tu.m("c"), unix.RENAME_NOREPLACE))
	assert.Equal(t, "B", readFile(t, tu.m("c")))
	_, err := os.Lstat(tu.m("a"))
	assert.True(t, os.IsNotExist(err))
	assert.True(t, isWhiteoutIn(tu.upper, "a"))
	// Over a lower name: the lower stays hidden after a remount.
	must(t, os.Rename(tu.m("c"), tu.m("b")))
	// A directory with a lower part renames too (a redirect, see
	// redirect_test.go).
	must(t, os.Rename(tu.m("dir"), tu.m("dir2")))
	must(t, os.Rename(tu.m("dir2"), tu.m("dir")))
	// A pure upper directory renames.
	must(t, os.Rename(tu.m("updir"), tu.m("dir3")))
	assert.Equal(t, "y", readFile(t, tu.m("dir3/y")))
	tu.unmount(t)
	tu.mount(t)
	assert.Equal(t, []string{"b", "dir", "dir3"}, names(t, tu.mnt))
	assert.Equal(t, "B", readFile(t, tu.m("b")))
}

// A directory renamed onto a name whose lower directory it must hide.
func TestRenameDirOverLowerDir(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		put(t, l[0], "target/hidden", "h")
		put(t, u, "src/mine", "m")
	})
	must(t, os.Remove(tu.m("target/hidden")))
	must(t, unix.Rename(tu.m("src"), tu.m("target"))) // os.Rename refuses an existing dir
	assert.Equal(t, []string{"mine"}, names(t, tu.m("target")))
	tu.unmount(t)
	tu.mount(t)
	assert.Equal(t, []string{"mine"}, names(t, tu.m("target")))
	assert.Equal(t, []string{"target"}, names(t, tu.mnt))
}

func TestHardLinkCopyUp(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) { put(t, l[0], "f", "one") })
	must(t, os.Link(tu.m("f"), tu.m("g")))
	f, err := os.OpenFile(tu.m("g"), os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	f.WriteString("+two")
	f.Close()
	assert.Equal(t, "one+two", readFile(t, tu.m("f")))
	var st syscall.Stat_t
	must(t, syscall.Stat(tu.m("f"), &st))
	assert.Equal(t, uint64(2), uint64(st.Nlink))
}

func TestMknodWhiteoutRefused(t *testing.T) {
	tu := newTestUnion(t, 1, nil)
	assert.ErrorIs(t, unix.Mknod(tu.m("wh"), unix.S_IFCHR, 0), unix.EPERM)
	must(t, unix.Mkfifo(tu.m("fifo"), 0o644))
	assert.ErrorIs(t, os.WriteFile(tu.m(".wh.x"), nil, 0o644), unix.EINVAL)
}

// O_TMPFILE in a lower directory, then named with linkat.
func TestTmpfileLink(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) { put(t, l[0], "d/old", "o") })
	fd, err := unix.Open(tu.m("d"), unix.O_TMPFILE|unix.O_RDWR, 0o640)
	must(t, err)
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte("anon"))
	must(t, err)
	must(t, unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+itoa(fd), unix.AT_FDCWD, tu.m("d/named"), unix.AT_SYMLINK_FOLLOW))
	assert.Equal(t, "anon", readFile(t, tu.m("d/named")))
	assert.Equal(t, "anon", readFile(t, filepath.Join(tu.upper, "d/named")))
	assert.Equal(t, []string{"named", "old"}, names(t, tu.m("d")))
}

func itoa(i int) string { return strconv.Itoa(i) }

// With passthrough, a lower file open for reading (the kernel reads it
// through a backing file) and then opened for writing: the write lands in
// the upper copy, never in the lower file.
func TestPassthroughWriteAfterLowerRead(t *testing.T) {
	tu := newTestUnionOpts(t, 1, Options{Passthrough: true}, func(l []string, u string) {
		put(t, l[0], "f", "lower data")
	})
	r, err := os.Open(tu.m("f"))
	must(t, err)
	defer r.Close()
	buf := make([]byte, 10)
	_, err = r.ReadAt(buf, 0)
	must(t, err)
	assert.Equal(t, "lower data", string(buf))

	w, err := os.OpenFile(tu.m("f"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = w.WriteString("+upper")
	must(t, err)
	must(t, w.Close())
	assert.Equal(t, "lower data", readFile(t, filepath.Join(tu.lowers[0], "f")))
	assert.Equal(t, "lower data+upper", readFile(t, filepath.Join(tu.upper, "f")))
	assert.Equal(t, "lower data+upper", readFile(t, tu.m("f")))
	// Later writers and readers share the upper file.
	must(t, os.WriteFile(tu.m("f"), []byte("again"), 0o644))
	assert.Equal(t, "again", readFile(t, tu.m("f")))
	assert.Equal(t, "lower data", readFile(t, filepath.Join(tu.lowers[0], "f")))
}

// volatile leaves work/incompat/volatile while mounted; a clean unmount
// removes it, a crash leaves it and the next mount refuses.
func TestVolatileMarker(t *testing.T) {
	tu := newTestUnionOpts(t, 1, Options{Volatile: true, NoSync: true}, nil)
	marker := filepath.Join(tu.work, "work", "incompat", "volatile")
	_, err := os.Stat(marker)
	must(t, err)
	must(t, os.WriteFile(tu.m("f"), []byte("x"), 0o644))
	tu.unmount(t)
	_, err = os.Stat(marker)
	assert.True(t, os.IsNotExist(err), "clean unmount keeps the marker")

	// As a crash would leave it:
	must(t, os.MkdirAll(marker, 0o700))
	err = Validate(Options{Lowers: tu.lowers, Upper: tu.upper, Work: tu.work, Mountpoint: tu.mnt})
	must(t, err) // options are fine; the mount itself refuses
	_, err = Mount(context.Background(), Options{Lowers: tu.lowers, Upper: tu.upper, Work: tu.work, Mountpoint: tu.mnt})
	assert.ErrorContains(t, err, "volatile")
	assert.True(t, IsConfigError(err))
}

// direntInos lists name -> d_ino of a directory through getdents.
func direntInos(t *testing.T, dir string) map[string]uint64 {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(fd)
	ents, err := at.Dirents(fd)
	must(t, err)
	out := map[string]uint64{}
	for _, e := range ents {
		out[e.Name] = e.Ino
	}
	return out
}

// readdir's d_ino equals st_ino, also for copied-up and moved entries.
func TestDirentInoMatchesStat(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		put(t, l[0], "d/f", "f")
		put(t, l[0], "d/g", "g")
		put(t, l[0], "e/.keep", "")
	})
	must(t, os.WriteFile(tu.m("d/f"), []byte("changed"), 0o644))
	must(t, os.Rename(tu.m("d/g"), tu.m("e/g")))
	tu.unmount(t)
	tu.mount(t) // fresh kernel caches: the listing comes from layerfs
	for _, dir := range []string{"d", "e"} {
		for name, dino := range direntInos(t, tu.m(dir)) {
			if name == "." || name == ".." {
				continue
			}
			assert.Equal(t, ino(t, tu.m(dir+"/"+name)), dino, "%s/%s", dir, name)
		}
	}
	assert.Equal(t, ino(t, filepath.Join(tu.lowers[0], "d/g")), ino(t, tu.m("e/g")))
}

// With index=off a copied-up name of a lower hard link is a file of its
// own, as in kernel overlay with index=off: its data is separate at once.
// (Its st_ino stays the lower one; see docs/compat.md.)
func TestLowerHardLinkCopyUpNoIndex(t *testing.T) {
	tu := newTestUnionOpts(t, 1, Options{NoIndex: true}, func(l []string, u string) {
		put(t, l[0], "a", "shared")
		must(t, os.Link(filepath.Join(l[0], "a"), filepath.Join(l[0], "b")))
	})
	must(t, os.WriteFile(tu.m("a"), []byte("mine"), 0o644))
	assert.Equal(t, "shared", readFile(t, tu.m("b")))
	assert.Equal(t, "mine", readFile(t, tu.m("a")))
	tu.unmount(t)
	tu.mount(t)
	assert.Equal(t, "shared", readFile(t, tu.m("b")))
	assert.Equal(t, "mine", readFile(t, tu.m("a")))
}

// In the user xattr format (the kernel's userxattr, what layerfs writes in
// a user namespace) private xattrs exist only on regular files and
// directories: a symlink or a fifo copies up without an origin record,
// as with kernel overlay, instead of failing with EPERM.
func TestUserXattrCopyUpSpecialFiles(t *testing.T) {
	tu := newTestUnionOpts(t, 1, Options{UserXattr: true}, func(l []string, u string) {
		must(t, os.Symlink("target", filepath.Join(l[0], "sl")))
		must(t, unix.Mkfifo(filepath.Join(l[0], "ff"), 0o644))
		put(t, l[0], "f", "f")
	})
	must(t, os.Lchown(tu.m("sl"), 1000, 1000))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, tu.m("sl"), []unix.Timespec{{Sec: 1000}, {Sec: 1000}}, unix.AT_SYMLINK_NOFOLLOW))
	must(t, os.Chmod(tu.m("ff"), 0o600))
	must(t, os.Chmod(tu.m("f"), 0o600))
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(tu.upper, "sl"), &st))
	assert.Equal(t, [3]int64{1000, 1000, 1000}, [3]int64{int64(st.Uid), int64(st.Gid), st.Mtim.Sec})
	must(t, unix.Lstat(filepath.Join(tu.upper, "ff"), &st))
	assert.Equal(t, uint32(unix.S_IFIFO|0o600), st.Mode)
	_, err := unix.Lgetxattr(filepath.Join(tu.upper, "f"), "user.overlay.origin", nil)
	assert.NoError(t, err, "a regular file still records its origin")
}

// trusted.* xattrs are listed to root only, as ext4 lists them; the
// kernel itself refuses their values to others.
func TestTrustedXattrsListedToRootOnly(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) {
		put(t, l[0], "f", "x")
		must(t, unix.Setxattr(filepath.Join(l[0], "f"), "trusted.app", []byte("t"), 0))
		must(t, unix.Setxattr(filepath.Join(l[0], "f"), "user.app", []byte("u"), 0))
	})
	must(t, os.Chmod(tu.dir, 0o755))
	must(t, os.Chmod(filepath.Dir(tu.dir), 0o755))
	list := func(args ...string) string {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		must(t, err)
		return string(out)
	}
	assert.Contains(t, list("getfattr", "-d", "-m", "-", tu.m("f")), "trusted.app")
	other := list("setpriv", "--reuid=1001", "--regid=1001", "--clear-groups", "getfattr", "-d", "-m", "-", tu.m("f"))
	assert.NotContains(t, other, "trusted.app")
	assert.Contains(t, other, "user.app")
}
