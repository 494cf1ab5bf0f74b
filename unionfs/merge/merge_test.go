package merge

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/layerfs/layerfs/whiteout"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// layers makes upper, l1, l2 under a temp dir with fill, and a Stack on
// them.
func layers(t *testing.T, fill func(up, l1, l2 string)) (*Stack, []Dir) {
	t.Helper()
	dir := t.TempDir()
	var roots []int
	var paths []string
	for _, n := range []string{"upper", "l1", "l2"} {
		p := filepath.Join(dir, n)
		require.NoError(t, os.Mkdir(p, 0o755))
		paths = append(paths, p)
	}
	fill(paths[0], paths[1], paths[2])
	for _, p := range paths {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		t.Cleanup(func() { unix.Close(fd) })
		roots = append(roots, fd)
	}
	s := &Stack{Roots: roots}
	return s, s.RootDirs()
}

func put(t *testing.T, p, data string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(data), 0o644))
}

func names(t *testing.T, s *Stack, dirs []Dir) []string {
	t.Helper()
	ents, err := s.List(dirs)
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name)
	}
	sort.Strings(out)
	return out
}

func TestResolveAndList(t *testing.T) {
	s, root := layers(t, func(up, l1, l2 string) {
		put(t, filepath.Join(l2, "d/low"), "low")
		put(t, filepath.Join(l2, "d/gone"), "x")
		put(t, filepath.Join(l1, "d/mid"), "mid")
		require.NoError(t, whiteout.MakeFile(mustOpen(t, filepath.Join(l1, "d")), "gone"))
		put(t, filepath.Join(up, "d/top"), "top")
		put(t, filepath.Join(l2, "o/hidden"), "h")
		put(t, filepath.Join(up, "o/shown"), "s")
		put(t, filepath.Join(up, "o/"+whiteout.OpaqueMarker), "")
		put(t, filepath.Join(l2, "f"), "file below")
		require.NoError(t, os.Mkdir(filepath.Join(l1, "f"), 0o755)) // a directory above a file
		require.NoError(t, unix.Mknod(filepath.Join(up, "w"), unix.S_IFCHR, 0))
		put(t, filepath.Join(l1, "w"), "whited out")
	})
	d, err := s.Resolve(root, "d")
	require.NoError(t, err)
	defer s.Close(&d)
	assert.Equal(t, []int{0, 1, 2}, []int{d.Dirs[0].Layer, d.Dirs[1].Layer, d.Dirs[2].Layer})
	assert.Equal(t, []string{"low", "mid", "top"}, names(t, s, d.Dirs))
	_, err = s.Resolve(d.Dirs, "gone")
	assert.ErrorIs(t, err, unix.ENOENT)

	o, err := s.Resolve(root, "o")
	require.NoError(t, err)
	defer s.Close(&o)
	assert.Len(t, o.Dirs, 1, "opaque: the layers below do not merge")
	assert.Equal(t, []string{"shown"}, names(t, s, o.Dirs))

	f, err := s.Resolve(root, "f")
	require.NoError(t, err)
	defer s.Close(&f)
	assert.Equal(t, 1, f.Layer)
	assert.Len(t, f.Dirs, 1, "a file below a directory does not merge")

	p, err := s.Probe(root, "w")
	require.NoError(t, err)
	assert.False(t, p.Exists)
	assert.Equal(t, whiteout.CharWhiteout, p.Whiteout)
	assert.Equal(t, []string{"d", "f", "o"}, names(t, s, root))

	// Below: what removing the name from the upper layer must hide.
	pd, err := s.Probe(root, "d")
	require.NoError(t, err)
	defer s.Close(&pd.Entry)
	assert.True(t, pd.Below)
	po, err := s.Probe(root, "o")
	require.NoError(t, err)
	defer s.Close(&po.Entry)
	assert.True(t, po.Below, "an opaque upper directory still covers a lower one")
	pt, err := s.Probe(d.Dirs, "top")
	require.NoError(t, err)
	assert.False(t, pt.Below)
}

func TestRedirects(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("trusted xattrs need root")
	}
	s, root := layers(t, func(up, l1, l2 string) {
		put(t, filepath.Join(l2, "a/b/deep"), "deep")
		require.NoError(t, os.MkdirAll(filepath.Join(up, "x/moved"), 0o755))
		require.NoError(t, unix.Setxattr(filepath.Join(up, "x/moved"), whiteout.Trusted.Name(whiteout.Redirect), []byte("/a/b"), 0))
		require.NoError(t, os.MkdirAll(filepath.Join(up, "r"), 0o755))
		require.NoError(t, unix.Setxattr(filepath.Join(up, "r"), whiteout.Trusted.Name(whiteout.Redirect), []byte("a"), 0))
		// A metacopy file whose data is below, under its own name.
		put(t, filepath.Join(l1, "m"), "the data")
		require.NoError(t, os.WriteFile(filepath.Join(up, "m"), nil, 0o600))
		require.NoError(t, os.Truncate(filepath.Join(up, "m"), 8))
		require.NoError(t, unix.Setxattr(filepath.Join(up, "m"), whiteout.Trusted.Name(whiteout.Metacopy), nil, 0))
	})
	x, err := s.Resolve(root, "x")
	require.NoError(t, err)
	defer s.Close(&x)
	m, err := s.Resolve(x.Dirs, "moved")
	require.NoError(t, err)
	defer s.Close(&m)
	require.Len(t, m.Dirs, 2)
	assert.Equal(t, "/a/b", m.Dirs[1].Name, "reached through the absolute redirect")
	assert.Equal(t, []string{"deep"}, names(t, s, m.Dirs))

	r, err := s.Resolve(root, "r")
	require.NoError(t, err)
	defer s.Close(&r)
	require.Len(t, r.Dirs, 2)
	assert.Equal(t, "a", r.Dirs[1].Name, "a relative redirect renames it below")
	p, err := s.Probe(root, "r")
	require.NoError(t, err)
	defer s.Close(&p.Entry)
	assert.False(t, p.Below, "no lower layer shows the name r itself")

	mc, err := s.Resolve(root, "m")
	require.NoError(t, err)
	assert.True(t, mc.Metacopy)
	assert.Equal(t, 1, mc.DataLayer)
	assert.Equal(t, "m", mc.DataName)

	s.NoFollowRedirect, s.NoMetacopy = true, true
	m2, err := s.Resolve(x.Dirs, "moved")
	require.NoError(t, err)
	defer s.Close(&m2)
	assert.Len(t, m2.Dirs, 1, "redirect_dir=nofollow")
	_, err = s.Resolve(root, "m")
	assert.ErrorIs(t, err, unix.EPERM, "metacopy=off refuses metadata-only files")
}

func mustOpen(t *testing.T, p string) int {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}
