package whiteout

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

func TestTarget(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{{".wh.foo", "foo", true}, {".wh..wh..opq", "", false}, {".wh.", "", false}, {"foo", "", false}, {".wh..", "", false}, {".wh...", "", false}} {
		got, ok := Target(c.in)
		assert.Equal(t, c.ok, ok, c.in)
		assert.Equal(t, c.want, got, c.in)
	}
	assert.True(t, IsPrivateXattr("trusted.overlay.opaque"))
	assert.True(t, IsPrivateXattr("user.fuseoverlayfs.opaque"))
	assert.False(t, IsPrivateXattr("user.overlayx"))
	assert.False(t, IsPrivateXattr("security.capability"))
}

func openPath(t *testing.T, p string) int {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestOpacityForms(t *testing.T) {
	dir := t.TempDir()
	for name, mark := range map[string]func(p string) error{
		"trusted": func(p string) error { return unix.Setxattr(p, "trusted.overlay.opaque", []byte("y"), 0) },
		"user":    func(p string) error { return unix.Setxattr(p, "user.overlay.opaque", []byte("y"), 0) },
		"fuseovl": func(p string) error { return unix.Setxattr(p, "user.fuseoverlayfs.opaque", []byte("y"), 0) },
		"oci":     func(p string) error { return os.WriteFile(filepath.Join(p, OpaqueMarker), nil, 0o644) },
	} {
		p := filepath.Join(dir, name)
		os.Mkdir(p, 0o755)
		if err := mark(p); err != nil {
			if os.Geteuid() != 0 {
				continue
			}
			t.Fatal(err)
		}
		assert.True(t, ReadOpacity(openPath(t, p)).Opaque, name)
	}
	plain := filepath.Join(dir, "plain")
	os.Mkdir(plain, 0o755)
	unix.Setxattr(plain, "trusted.overlay.opaque", []byte("n"), 0)
	assert.False(t, ReadOpacity(openPath(t, plain)).Opaque)
	x := filepath.Join(dir, "x")
	os.Mkdir(x, 0o755)
	if unix.Setxattr(x, "trusted.overlay.opaque", []byte("x"), 0) == nil {
		o := ReadOpacity(openPath(t, x))
		assert.False(t, o.Opaque)
		assert.True(t, o.XattrWhiteouts)
	}
}

func TestMake(t *testing.T) {
	dir := t.TempDir()
	fd := openPath(t, dir)
	assert.NoError(t, Make(fd, "a"))
	var st unix.Stat_t
	assert.NoError(t, unix.Lstat(filepath.Join(dir, "a"), &st))
	assert.True(t, IsCharWhiteout(&st) || HasFileWhiteout(fd, "a"))
	assert.NoError(t, MakeFile(fd, "b"))
	assert.True(t, HasFileWhiteout(fd, "b"))
}

func FuzzTarget(f *testing.F) {
	for _, s := range []string{".wh.a", ".wh..wh..opq", "x", ".wh."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, ok := Target(s); ok {
			assert.Equal(t, Prefix+n, s)
			assert.NotContains(t, []string{"", ".", ".."}, n)
		}
	})
}
