package whiteout

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/layerfs/layerfs/copyup/at"
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

// Origin records come from layers, which may be hostile: decoding must
// never panic and must only accept records of the kernel's shape.
func FuzzDecodeOrigin(f *testing.F) {
	f.Add([]byte{0, 0xfb, 29, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa1, 0x40, 0x98, 0, 0x8d, 0xe4, 0xac, 0x16})
	f.Add([]byte{0, 0xfb, 21, 0, 0x81})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ino, ok := DecodeOriginIno(b)
		if ok && OriginProblem(b) != "" {
			t.Fatalf("accepted a malformed record %x as ino %d", b, ino)
		}
		if _, ok := OriginHandle(b); ok && (len(b) <= 21 || OriginProblem(b) != "") {
			t.Fatalf("took a handle from a malformed record %x", b)
		}
	})
}

func TestOriginRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	assert.NoError(t, os.WriteFile(p, nil, 0o644))
	var st unix.Stat_t
	assert.NoError(t, unix.Lstat(p, &st))
	v := EncodeOrigin(at.Loc{Dir: openPath(t, dir), Name: "f"})
	if v == nil {
		t.Skip("no file handles on the temp dir's filesystem")
	}
	assert.Equal(t, "", OriginProblem(v))
	if ino, ok := DecodeOriginIno(v); ok {
		assert.Equal(t, st.Ino, ino)
	}
	h, ok := OriginHandle(v)
	assert.True(t, ok)
	assert.Equal(t, v[21:], h.Bytes())
	assert.Equal(t, hexString(v), IndexName(v))
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	s := make([]byte, 0, 2*len(b))
	for _, c := range b {
		s = append(s, digits[c>>4], digits[c&15])
	}
	return string(s)
}

func TestNlinkRecord(t *testing.T) {
	for _, d := range []int{-3, 0, 1, 42} {
		base, got, ok := ParseNlink(FormatNlink(d))
		assert.True(t, ok)
		assert.Equal(t, byte('U'), base)
		assert.Equal(t, d, got)
	}
	assert.Equal(t, "U+2", string(FormatNlink(2)))
	assert.Equal(t, "U-1", string(FormatNlink(-1)))
	_, _, ok := ParseNlink([]byte("X+1"))
	assert.False(t, ok)
	base, d, ok := ParseNlink([]byte("L-2"))
	assert.Equal(t, []any{byte('L'), -2, true}, []any{base, d, ok})
}

func TestRedirectProblem(t *testing.T) {
	for _, ok := range []string{"a", "/a", "/a/b", "/a/b/c", "a.b", "...", "..a"} {
		assert.True(t, ValidRedirect(ok), ok)
	}
	for _, bad := range []string{"", "/", "a/b", ".", "..", "/a//b", "/a/", "/./a", "/a/..", "/..", "a\x00b", "a\x00"} {
		assert.False(t, ValidRedirect(bad), bad)
		assert.NotEmpty(t, RedirectProblem(bad), bad)
	}
}

func TestOriginProblem(t *testing.T) {
	rec := make([]byte, 29)
	rec[1], rec[2] = 0xfb, 29
	assert.Empty(t, OriginProblem(rec))
	assert.Empty(t, OriginProblem(nil), "a null origin is valid")
	rec[0] = 7 // a newer version: "origin unknown" to the kernel, not broken
	assert.Empty(t, OriginProblem(rec))
	assert.NotEmpty(t, OriginProblem(rec[:20]))
	rec[1] = 0xfa
	assert.NotEmpty(t, OriginProblem(rec))
	rec[1], rec[2] = 0xfb, 30
	assert.NotEmpty(t, OriginProblem(rec))
}

func TestRenameWhiteout(t *testing.T) {
	dir := t.TempDir()
	assert.NoError(t, os.WriteFile(filepath.Join(dir, "a"), []byte("x"), 0o644))
	fd := openPath(t, dir)
	assert.NoError(t, RenameWhiteout(at.Loc{Dir: fd, Name: "a"}, at.Loc{Dir: fd, Name: "b"}))
	var st unix.Stat_t
	assert.NoError(t, unix.Lstat(filepath.Join(dir, "a"), &st))
	assert.True(t, IsCharWhiteout(&st) || HasFileWhiteout(fd, "a"))
	b, err := os.ReadFile(filepath.Join(dir, "b"))
	assert.NoError(t, err)
	assert.Equal(t, "x", string(b))
}
