package unionfs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// smallUpper mounts a tmpfs of size for upper and work.
func smallUpper(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	must(t, unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size))
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	for _, d := range []string{"upper", "work"} {
		must(t, os.Mkdir(filepath.Join(dir, d), 0o755))
	}
	return dir
}

// A full upper: ENOSPC reaches the caller, the half copy is gone, the
// lower and earlier data are intact, and the mount works once space is
// freed. A read-only upper answers EROFS, not EIO.
func TestUpperFullAndReadOnly(t *testing.T) {
	needRoot(t)
	small := smallUpper(t, "24m")
	tu := &testUnion{dir: t.TempDir(), upper: filepath.Join(small, "upper"), work: filepath.Join(small, "work")}
	tu.lowers = []string{filepath.Join(tu.dir, "lower")}
	tu.mnt = filepath.Join(tu.dir, "merged")
	must(t, os.Mkdir(tu.mnt, 0o755))
	big := bytes.Repeat([]byte("L"), 16<<20)
	writeFile(t, filepath.Join(tu.lowers[0], "big"), string(big))
	tu.mount(t)

	must(t, os.WriteFile(tu.m("keep"), []byte("earlier"), 0o644))
	filler, err := os.Create(tu.m("filler"))
	must(t, err)
	_, err = filler.Write(bytes.Repeat([]byte("F"), 12<<20))
	filler.Close()
	must(t, err)

	// Copy-up of 16 MiB into what is left: ENOSPC, and no trace.
	f, err := os.OpenFile(tu.m("big"), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.Write([]byte("+"))
		f.Close()
	}
	assert.ErrorIs(t, err, syscall.ENOSPC)
	_, err = os.Lstat(filepath.Join(tu.upper, "big"))
	assert.True(t, os.IsNotExist(err), "a half copy is in the upper dir")
	assert.Empty(t, names(t, filepath.Join(tu.work, "work")), "the half copy stayed in the work dir")
	assert.Equal(t, len(big), len(readFile(t, tu.m("big"))))
	assert.Equal(t, "earlier", readFile(t, tu.m("keep")))

	// Mid-write of a new file.
	nf, err := os.Create(tu.m("new"))
	must(t, err)
	_, err = nf.Write(bytes.Repeat([]byte("N"), 16<<20))
	nf.Close()
	assert.ErrorIs(t, err, syscall.ENOSPC)

	// Free space: everything works again.
	must(t, os.Remove(tu.m("new")))
	must(t, os.Remove(tu.m("filler")))
	f, err = os.OpenFile(tu.m("big"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.Write([]byte("+"))
	must(t, err)
	f.Close()
	assert.Equal(t, len(big)+1, len(readFile(t, filepath.Join(tu.upper, "big"))))
	assert.Equal(t, string(big), readFile(t, filepath.Join(tu.lowers[0], "big")))

	// The upper filesystem goes read-only under the mount.
	must(t, unix.Mount("", small, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""))
	assert.ErrorIs(t, os.WriteFile(tu.m("ro"), nil, 0o644), syscall.EROFS)
	assert.ErrorIs(t, os.Mkdir(tu.m("rodir"), 0o755), syscall.EROFS)
	must(t, unix.Mount("", small, "", unix.MS_REMOUNT, ""))
	must(t, os.WriteFile(tu.m("rw-again"), []byte("ok"), 0o644))
}

// The server lets go of the layers as soon as it ends: the lower
// filesystem can be unmounted right after.
func TestLayersReleasedAfterUnmount(t *testing.T) {
	needRoot(t)
	lowerfs := t.TempDir()
	must(t, unix.Mount("tmpfs", lowerfs, "tmpfs", 0, "size=8m"))
	defer unix.Unmount(lowerfs, unix.MNT_DETACH)
	writeFile(t, filepath.Join(lowerfs, "d/f"), "x")
	dir := t.TempDir()
	mnt := filepath.Join(dir, "m")
	must(t, os.Mkdir(mnt, 0o755))
	srv, err := Mount(context.Background(), Options{Lowers: []string{lowerfs}, Mountpoint: mnt})
	must(t, err)
	assert.Equal(t, "x", readFile(t, filepath.Join(mnt, "d/f")))
	must(t, srv.Unmount())
	srv.Wait()
	assert.NoError(t, unix.Unmount(lowerfs, 0), "lower filesystem still busy")
}

// Unknown ioctls answer ENOTTY (fsx turns off what it gets ENOTTY for).
func TestIoctlENOTTY(t *testing.T) {
	tu := newTestUnion(t, 1, func(l []string, u string) { put(t, l[0], "f", "x") })
	f, err := os.Open(tu.m("f"))
	must(t, err)
	defer f.Close()
	_, err = unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	assert.ErrorIs(t, err, syscall.ENOTTY)
}
