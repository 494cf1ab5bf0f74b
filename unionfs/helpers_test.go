package unionfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/layerfs/layerfs/test/testns"
	"golang.org/x/sys/unix"
)

// The unions the tests mount live in a mount namespace of this package's
// own (see testns).
func TestMain(m *testing.M) {
	testns.Enter("unionfs")
	os.Exit(m.Run())
}

// needRoot fails loudly in CI and skips elsewhere when a capability is
// missing.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := os.Stat("/dev/fuse"); err == nil {
			return
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("this test needs root and /dev/fuse, and CI must provide them")
	}
	t.Skip("needs root and /dev/fuse")
}

// needInCI fails in CI and skips elsewhere for a missing tool.
func needInCI(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("this test needs %s, and CI must provide it", what)
	}
	t.Skip("needs " + what)
}

// testUnion is a mounted union over fresh temp dirs.
type testUnion struct {
	dir     string
	lowers  []string
	upper   string
	work    string
	mnt     string
	srv     *Server
	mounted bool
	// opts are extra options for every mount of this union.
	opts Options
}

// newTestUnion makes n lower dirs (filled by fill, may be nil), an upper
// and work dir and mounts them.
func newTestUnion(t *testing.T, n int, fill func(lowers []string, upper string)) *testUnion {
	t.Helper()
	return newTestUnionOpts(t, n, Options{}, fill)
}

func newTestUnionOpts(t *testing.T, n int, opts Options, fill func(lowers []string, upper string)) *testUnion {
	t.Helper()
	needRoot(t)
	tu := &testUnion{dir: t.TempDir(), opts: opts}
	for i := 0; i < n; i++ {
		p := filepath.Join(tu.dir, "lower"+string(rune('1'+i)))
		must(t, os.Mkdir(p, 0o755))
		tu.lowers = append(tu.lowers, p)
	}
	tu.upper = filepath.Join(tu.dir, "upper")
	tu.work = filepath.Join(tu.dir, "work")
	tu.mnt = filepath.Join(tu.dir, "merged")
	for _, p := range []string{tu.upper, tu.work, tu.mnt} {
		must(t, os.Mkdir(p, 0o755))
	}
	if fill != nil {
		fill(tu.lowers, tu.upper)
	}
	tu.mount(t)
	return tu
}

func (tu *testUnion) mount(t *testing.T) {
	t.Helper()
	o := tu.opts
	o.Lowers, o.Upper, o.Work, o.Mountpoint = tu.lowers, tu.upper, tu.work, tu.mnt
	srv, err := Mount(context.Background(), o)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	tu.srv, tu.mounted = srv, true
	t.Cleanup(func() { tu.unmount(t) })
}

func (tu *testUnion) unmount(t *testing.T) {
	if !tu.mounted {
		return
	}
	tu.mounted = false
	if err := tu.srv.Unmount(); err != nil {
		t.Errorf("unmount: %v", err)
		exec.Command("umount", "-l", tu.mnt).Run()
	}
	tu.srv.Wait()
}

func (tu *testUnion) m(p string) string { return filepath.Join(tu.mnt, p) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(content), 0o644))
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mkCharWhiteout writes a kernel-form whiteout into a layer dir.
func mkCharWhiteout(t *testing.T, p string) {
	t.Helper()
	must(t, unix.Mknod(p, unix.S_IFCHR, 0))
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
