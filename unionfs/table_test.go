package unionfs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// location is where a name lives in a two-lower stack.
type location struct {
	name    string
	path    string // the name's path in the merged view
	visible string // its merged content, "" when hidden
	setup   func(t *testing.T, upper, l1, l2 string)
}

func put(t *testing.T, layer, p, content string) { writeFile(t, filepath.Join(layer, p), content) }

func setOpaque(t *testing.T, dir string) {
	must(t, unix.Setxattr(dir, "trusted.overlay.opaque", []byte("y"), 0))
}

var locations = []location{
	{"upper only", "x", "upper", func(t *testing.T, u, l1, l2 string) { put(t, u, "x", "upper") }},
	{"lower only", "x", "lower1", func(t *testing.T, u, l1, l2 string) { put(t, l1, "x", "lower1") }},
	{"bottom lower only", "x", "lower2", func(t *testing.T, u, l1, l2 string) { put(t, l2, "x", "lower2") }},
	{"upper and lower", "x", "upper", func(t *testing.T, u, l1, l2 string) {
		put(t, u, "x", "upper")
		put(t, l1, "x", "lower1")
	}},
	{"char whiteout in upper", "x", "", func(t *testing.T, u, l1, l2 string) {
		mkCharWhiteout(t, filepath.Join(u, "x"))
		put(t, l1, "x", "lower1")
	}},
	{"OCI whiteout in upper", "x", "", func(t *testing.T, u, l1, l2 string) {
		put(t, u, ".wh.x", "")
		put(t, l1, "x", "lower1")
	}},
	{"char whiteout in middle lower", "x", "", func(t *testing.T, u, l1, l2 string) {
		mkCharWhiteout(t, filepath.Join(l1, "x"))
		put(t, l2, "x", "lower2")
	}},
	{"OCI whiteout in middle lower", "x", "", func(t *testing.T, u, l1, l2 string) {
		put(t, l1, ".wh.x", "")
		put(t, l2, "x", "lower2")
	}},
	{"under xattr-opaque upper dir", "d/x", "", func(t *testing.T, u, l1, l2 string) {
		must(t, os.Mkdir(filepath.Join(u, "d"), 0o755))
		setOpaque(t, filepath.Join(u, "d"))
		put(t, l2, "d/x", "lower2")
	}},
	{"under OCI-opaque middle dir", "d/x", "", func(t *testing.T, u, l1, l2 string) {
		put(t, l1, "d/.wh..wh..opq", "")
		put(t, l1, "d/other", "o")
		put(t, l2, "d/x", "lower2")
	}},
}

// op is one operation on the name, with its check of the result.
type op struct {
	name string
	run  func(tu *testUnion, p string) error
	// check runs after a successful op; loc tells what was there before.
	check func(t *testing.T, tu *testUnion, p string, loc location)
}

func inLowersUntouched(t *testing.T, tu *testUnion, before []string) {
	t.Helper()
	for i, l := range tu.lowers {
		assert.Equal(t, before[i], snapshotDir(t, l), "lower %d changed", i+1)
	}
}

var ops = []op{
	{"read", func(tu *testUnion, p string) error {
		_, err := os.ReadFile(tu.m(p))
		return err
	}, func(t *testing.T, tu *testUnion, p string, loc location) {
		assert.Equal(t, loc.visible, readFile(t, tu.m(p)))
	}},
	{"append", func(tu *testUnion, p string) error {
		f, err := os.OpenFile(tu.m(p), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		f.WriteString("+")
		return f.Close()
	}, func(t *testing.T, tu *testUnion, p string, loc location) {
		assert.Equal(t, loc.visible+"+", readFile(t, tu.m(p)))
		assert.Equal(t, loc.visible+"+", readFile(t, filepath.Join(tu.upper, p)))
	}},
	{"truncate", func(tu *testUnion, p string) error { return os.Truncate(tu.m(p), 2) },
		func(t *testing.T, tu *testUnion, p string, loc location) {
			assert.Equal(t, loc.visible[:2], readFile(t, filepath.Join(tu.upper, p)))
		}},
	{"O_TRUNC", func(tu *testUnion, p string) error {
		f, err := os.OpenFile(tu.m(p), os.O_WRONLY|os.O_TRUNC, 0)
		if err == nil {
			err = f.Close()
		}
		return err
	}, func(t *testing.T, tu *testUnion, p string, loc location) {
		assert.Equal(t, "", readFile(t, tu.m(p)))
	}},
	{"create", func(tu *testUnion, p string) error {
		f, err := os.OpenFile(tu.m(p), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
		if err == nil {
			f.WriteString("new")
			err = f.Close()
		}
		return err
	}, func(t *testing.T, tu *testUnion, p string, loc location) {
		assert.Equal(t, "new", readFile(t, tu.m(p)))
		assert.Equal(t, "new", readFile(t, filepath.Join(tu.upper, p)))
		_, err := os.Lstat(filepath.Join(tu.upper, filepath.Dir(p), ".wh."+filepath.Base(p)))
		assert.True(t, os.IsNotExist(err), "the whiteout file stayed")
	}},
	{"mkdir", func(tu *testUnion, p string) error { return os.Mkdir(tu.m(p), 0o755) },
		func(t *testing.T, tu *testUnion, p string, loc location) {
			assert.Empty(t, names(t, tu.m(p)))
			fi, err := os.Lstat(filepath.Join(tu.upper, p))
			must(t, err)
			assert.True(t, fi.IsDir())
		}},
	{"symlink", func(tu *testUnion, p string) error { return os.Symlink("target", tu.m(p)) },
		func(t *testing.T, tu *testUnion, p string, loc location) {
			s, err := os.Readlink(tu.m(p))
			must(t, err)
			assert.Equal(t, "target", s)
		}},
	{"unlink", func(tu *testUnion, p string) error { return os.Remove(tu.m(p)) },
		func(t *testing.T, tu *testUnion, p string, loc location) {
			_, err := os.Lstat(tu.m(p))
			assert.True(t, os.IsNotExist(err))
			assert.NotContains(t, names(t, filepath.Dir(tu.m(p))), filepath.Base(p))
			hasLower := loc.name != "upper only"
			wh := isWhiteoutIn(filepath.Join(tu.upper, filepath.Dir(p)), filepath.Base(p))
			assert.Equal(t, hasLower, wh, "whiteout left")
		}},
	{"rename", func(tu *testUnion, p string) error { return os.Rename(tu.m(p), tu.m(p+".moved")) },
		func(t *testing.T, tu *testUnion, p string, loc location) {
			assert.Equal(t, loc.visible, readFile(t, tu.m(p+".moved")))
			_, err := os.Lstat(tu.m(p))
			assert.True(t, os.IsNotExist(err))
		}},
	{"chmod", func(tu *testUnion, p string) error { return os.Chmod(tu.m(p), 0o600) },
		func(t *testing.T, tu *testUnion, p string, loc location) {
			fi, err := os.Stat(filepath.Join(tu.upper, p))
			must(t, err)
			assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
			assert.Equal(t, loc.visible, readFile(t, tu.m(p)))
		}},
	{"setxattr", func(tu *testUnion, p string) error { return unix.Setxattr(tu.m(p), "user.k", []byte("v"), 0) },
		func(t *testing.T, tu *testUnion, p string, loc location) {
			buf := make([]byte, 10)
			n, err := unix.Getxattr(filepath.Join(tu.upper, p), "user.k", buf)
			must(t, err)
			assert.Equal(t, "v", string(buf[:n]))
		}},
	{"link", func(tu *testUnion, p string) error { return os.Link(tu.m(p), tu.m(p+".link")) },
		func(t *testing.T, tu *testUnion, p string, loc location) {
			assert.Equal(t, loc.visible, readFile(t, tu.m(p+".link")))
			var a, b syscall.Stat_t
			must(t, syscall.Stat(tu.m(p), &a))
			must(t, syscall.Stat(tu.m(p+".link"), &b))
			assert.Equal(t, a.Ino, b.Ino)
			assert.Equal(t, uint64(2), uint64(b.Nlink))
		}},
}

func isWhiteoutIn(dir, name string) bool {
	var st unix.Stat_t
	if unix.Lstat(filepath.Join(dir, name), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
		return true
	}
	_, err := os.Lstat(filepath.Join(dir, ".wh."+name))
	return err == nil
}

// expected errno of an op on a hidden (absent) or visible name.
func wantErr(o op, visible bool) error {
	creates := map[string]bool{"create": true, "mkdir": true, "symlink": true}
	switch {
	case visible && creates[o.name]:
		return syscall.EEXIST
	case !visible && !creates[o.name]:
		return syscall.ENOENT
	}
	return nil
}

// TestOperationsByLocation runs each operation on a name in each place it
// can live, and checks the merged view, the upper dir and the lowers.
func TestOperationsByLocation(t *testing.T) {
	for _, loc := range locations {
		for _, o := range ops {
			t.Run(loc.name+"/"+o.name, func(t *testing.T) {
				tu := newTestUnion(t, 2, func(lowers []string, upper string) {
					loc.setup(t, upper, lowers[0], lowers[1])
				})
				var before []string
				for _, l := range tu.lowers {
					before = append(before, snapshotDir(t, l))
				}
				visible := loc.visible != ""
				err := o.run(tu, loc.path)
				want := wantErr(o, visible)
				if want != nil {
					assert.ErrorIs(t, err, want)
				} else if assert.NoError(t, err) {
					o.check(t, tu, loc.path, loc)
				}
				inLowersUntouched(t, tu, before)
				// The merged listing never shows markers.
				for _, n := range names(t, filepath.Dir(tu.m(loc.path))) {
					assert.False(t, strings.HasPrefix(n, ".wh."), "marker %s listed", n)
				}
				// Survives a remount unchanged.
				view := snapshotDir(t, tu.mnt)
				tu.unmount(t)
				tu.mount(t)
				assert.Equal(t, view, snapshotDir(t, tu.mnt), "view changed across remount")
			})
		}
	}
}

// Directories: merged listing, ENOTEMPTY and rmdir of every kind.
func TestDirectoryRemoval(t *testing.T) {
	tu := newTestUnion(t, 2, func(l []string, u string) {
		put(t, l[1], "merged/a", "a")
		put(t, l[0], "merged/b", "b")
		put(t, u, "merged/c", "c")
		put(t, l[1], "hiddenonly/x", "x")
		put(t, l[0], "hiddenonly/.wh.x", "")
		put(t, u, "upperdir/y", "y")
	})
	assert.Equal(t, []string{"a", "b", "c"}, names(t, tu.m("merged")))
	assert.ErrorIs(t, os.Remove(tu.m("merged")), syscall.ENOTEMPTY)
	for _, n := range []string{"a", "b", "c"} {
		must(t, os.Remove(tu.m("merged/"+n)))
	}
	assert.Empty(t, names(t, tu.m("merged")))
	must(t, os.Remove(tu.m("merged")))
	assert.True(t, isWhiteoutIn(tu.upper, "merged"))
	// Empty only because of whiteouts in a lower: removable.
	assert.Empty(t, names(t, tu.m("hiddenonly")))
	must(t, os.Remove(tu.m("hiddenonly")))
	assert.True(t, isWhiteoutIn(tu.upper, "hiddenonly"))
	must(t, os.Remove(tu.m("upperdir/y")))
	must(t, os.Remove(tu.m("upperdir")))
	assert.False(t, isWhiteoutIn(tu.upper, "upperdir"))
	_, err := os.Lstat(filepath.Join(tu.upper, "upperdir"))
	assert.True(t, os.IsNotExist(err))
	// Re-created: opaque, the lower content stays hidden.
	must(t, os.Mkdir(tu.m("merged"), 0o755))
	assert.Empty(t, names(t, tu.m("merged")))
	tu.unmount(t)
	tu.mount(t)
	assert.Empty(t, names(t, tu.m("merged")))
	assert.True(t, isWhiteoutIn(tu.upper, "hiddenonly"))
}

// snapshotDir describes a tree: names, types, modes, sizes and contents.
func snapshotDir(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			b.WriteString("error " + err.Error() + "\n")
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		b.WriteString(rel + " " + fi.Mode().String())
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			b.WriteString(" " + string(data))
		}
		b.WriteString("\n")
		return nil
	})
	return b.String()
}
