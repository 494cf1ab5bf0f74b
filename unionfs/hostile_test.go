package unionfs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// Layers are data: symlinks that point out of them, odd names, device
// nodes and very deep trees never make the server touch anything outside
// the layers.
func TestHostileLayers(t *testing.T) {
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	must(t, os.WriteFile(victim, []byte("outside"), 0o644))
	odd := []string{"new\nline", "bad\xff\xfeutf8", strings.Repeat("n", 255), " lead space", "-dash"}
	tu := newTestUnion(t, 1, func(l []string, u string) {
		low := l[0]
		must(t, os.Symlink("/", filepath.Join(low, "to-root")))
		must(t, os.Symlink("../../../../../../../..", filepath.Join(low, "dotdot")))
		must(t, os.Symlink(victim, filepath.Join(low, "abs")))
		must(t, os.Mkdir(filepath.Join(low, "d"), 0o755))
		must(t, os.Symlink(outside, filepath.Join(low, "d", "out")))
		must(t, unix.Mknod(filepath.Join(low, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		put(t, low, "suid", "#!/bin/sh\n")
		must(t, syscall.Chmod(filepath.Join(low, "suid"), 0o4755))
		for _, n := range odd {
			put(t, low, n, n)
		}
	})
	before := snapshotDir(t, outside)
	var vst0 unix.Stat_t
	must(t, unix.Stat(victim, &vst0))

	// Symlinks are read as data.
	for name, want := range map[string]string{"to-root": "/", "abs": victim} {
		got, err := os.Readlink(tu.m(name))
		must(t, err)
		assert.Equal(t, want, got)
	}
	// Operations on the links themselves copy the links up, not targets.
	must(t, os.Lchown(tu.m("abs"), 4242, 4242))
	must(t, os.Lchown(tu.m("d/out"), 4242, 4242))
	must(t, os.Remove(tu.m("to-root")))
	must(t, os.Rename(tu.m("dotdot"), tu.m("dotdot2")))
	_, err := os.Lstat(filepath.Join(tu.upper, "abs"))
	must(t, err)
	var vst unix.Stat_t
	must(t, unix.Stat(victim, &vst))
	assert.Equal(t, vst0.Ctim, vst.Ctim, "the symlink's target was changed")
	assert.Equal(t, uint32(0), vst.Uid)
	assert.Equal(t, before, snapshotDir(t, outside))

	// Device nodes copy up as device nodes; setuid stays on copy-up.
	must(t, os.Chmod(tu.m("null"), 0o600))
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(tu.upper, "null"), &st))
	assert.Equal(t, uint32(unix.S_IFCHR), st.Mode&unix.S_IFMT)
	assert.Equal(t, unix.Mkdev(1, 3), st.Rdev)
	must(t, unix.Lstat(tu.m("suid"), &st))
	assert.Equal(t, uint32(0o4755), st.Mode&0o7777)

	// Odd names list, look up and copy up.
	listed := strings.Join(names(t, tu.mnt), "\x00")
	for _, n := range odd {
		assert.Contains(t, listed, n)
		assert.Equal(t, n, readFile(t, tu.m(n)))
		must(t, os.Chmod(tu.m(n), 0o600))
	}
}

// The upper takes the kernel's char 0/0 whiteouts, which need no room
// beside a name: names of the upper filesystem's full length (255) work
// as with kernel overlay, lower ones and new ones, removed and made
// again; longer ones answer ENAMETOOLONG on every path-taking call.
func TestNameMax(t *testing.T) {
	long := strings.Repeat("x", 255)
	tu := newTestUnion(t, 1, func(l []string, u string) { put(t, l[0], long, "lower") })
	var s unix.Statfs_t
	must(t, unix.Statfs(tu.mnt, &s))
	assert.Equal(t, 255, int(s.Namelen))
	assert.Equal(t, "lower", readFile(t, tu.m(long)))
	must(t, os.Remove(tu.m(long))) // a char 0/0 whiteout of the same name
	_, err := os.Lstat(tu.m(long))
	assert.True(t, os.IsNotExist(err))
	must(t, os.Mkdir(tu.m(long), 0o755)) // over the whiteout
	must(t, os.WriteFile(tu.m(long+"/"+strings.Repeat("y", 255)), []byte("new"), 0o644))
	assert.Equal(t, []string{strings.Repeat("y", 255)}, names(t, tu.m(long)))
	tooLong := strings.Repeat("b", 256)
	for what, err := range map[string]error{
		"create": os.WriteFile(tu.m(tooLong), nil, 0o644),
		"mkdir":  os.Mkdir(tu.m(tooLong), 0o755),
		"stat":   func() error { _, err := os.Lstat(tu.m(tooLong)); return err }(),
		"unlink": os.Remove(tu.m(tooLong)),
		"rename": os.Rename(tu.m(long), tu.m(tooLong)),
	} {
		assert.ErrorIs(t, err, syscall.ENAMETOOLONG, what)
	}
}

// A tree deeper than PATH_MAX works through the mount, one component at
// a time relative to directory fds.
func TestDeepTree(t *testing.T) {
	comp := strings.Repeat("d", 200)
	depth := 30 // 30 * 201 bytes > PATH_MAX
	tu := newTestUnion(t, 1, func(l []string, u string) {
		fd, err := unix.Open(l[0], unix.O_DIRECTORY|unix.O_RDONLY, 0)
		must(t, err)
		for i := 0; i < depth; i++ {
			must(t, unix.Mkdirat(fd, comp, 0o755))
			nfd, err := unix.Openat(fd, comp, unix.O_DIRECTORY|unix.O_RDONLY, 0)
			must(t, err)
			unix.Close(fd)
			fd = nfd
		}
		f, err := unix.Openat(fd, "leaf", unix.O_CREAT|unix.O_WRONLY, 0o644)
		must(t, err)
		unix.Write(f, []byte("deep"))
		unix.Close(f)
		unix.Close(fd)
	})
	fd, err := unix.Open(tu.mnt, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	must(t, err)
	for i := 0; i < depth; i++ {
		nfd, err := unix.Openat(fd, comp, unix.O_DIRECTORY|unix.O_RDONLY, 0)
		must(t, err)
		unix.Close(fd)
		fd = nfd
	}
	defer unix.Close(fd)
	// Write at the bottom: every ancestor is copied up.
	f, err := unix.Openat(fd, "leaf", unix.O_WRONLY|unix.O_APPEND, 0)
	must(t, err)
	_, err = unix.Write(f, []byte("+more"))
	must(t, err)
	unix.Close(f)
	buf := make([]byte, 64)
	f, err = unix.Openat(fd, "leaf", unix.O_RDONLY, 0)
	must(t, err)
	n, _ := unix.Read(f, buf)
	unix.Close(f)
	assert.Equal(t, "deep+more", string(buf[:n]))
	assert.True(t, bytes.Contains([]byte(snapshotDirShallow(t, tu.upper)), []byte(comp)))
}

func snapshotDirShallow(t *testing.T, dir string) string { return strings.Join(names(t, dir), " ") }

// A lower directory replaced by a symlink while mounted: the server keeps
// using the directory it opened, never the symlink's target.
func TestLowerDirReplacedBySymlink(t *testing.T) {
	outside := t.TempDir()
	must(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600))
	tu := newTestUnion(t, 1, func(l []string, u string) { put(t, l[0], "d/f", "f") })
	assert.Equal(t, []string{"f"}, names(t, tu.m("d")))
	must(t, os.Rename(filepath.Join(tu.lowers[0], "d"), filepath.Join(tu.lowers[0], "d.old")))
	must(t, os.Symlink(outside, filepath.Join(tu.lowers[0], "d")))
	ents, _ := os.ReadDir(tu.m("d"))
	for _, e := range ents {
		assert.NotEqual(t, "secret", e.Name())
	}
	_, err := os.ReadFile(tu.m("d/secret"))
	assert.Error(t, err)
	// Writing below it never lands outside.
	os.WriteFile(tu.m("d/new"), []byte("x"), 0o644)
	_, err = os.Stat(filepath.Join(outside, "new"))
	assert.True(t, os.IsNotExist(err))
}
