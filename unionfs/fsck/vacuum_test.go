package fsck

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// cpA copies src to dst as `cp -a` does: content, mode, owner, xattrs and
// times, which is what an identical upper copy looks like.
func cpA(t *testing.T, src, dst string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v: %s", src, dst, err, out)
	}
}

// touchLike gives p the times of ref (after p was changed).
func touchLike(t *testing.T, p, ref string) {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(ref, &st))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW))
}

// upperNames lists every path under the upper dir.
func upperNames(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	must(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(dir, p); rel != "." {
			out = append(out, rel)
		}
		return nil
	}))
	sort.Strings(out)
	return out
}

// vacuumFixture builds lowers and an upper holding identical copies (to
// go) and copies that differ in one respect each (to stay).
func vacuumFixture(t *testing.T) (f *fixture, kept []string) {
	f = newFixture(t, 2)
	l1, l2, up := f.lowers[0], f.lowers[1], f.upper
	old := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	lower := func(dir, name, content string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, content)
		must(t, os.Chtimes(p, old, old))
		return p
	}
	for _, n := range []string{"same", "content", "mode", "uid", "xattr", "mtime", "hardlink", "metacopy", "metacopy-mode", "redirect", "origin-ok", "origin-other", "beside-wh", "whited", "shadowed"} {
		lower(l2, n, "lower content of "+n)
	}
	lower(l1, "shadowed", "the top version")
	charWhiteout(t, filepath.Join(l1, "whited"))
	lower(l1, "sub/same2", "s2")
	lower(l1, "opq/f", "o")
	lower(l2, "rd/f", "r")
	must(t, os.Symlink("target", filepath.Join(l2, "link")))
	must(t, os.Symlink("target", filepath.Join(l2, "link-other")))
	lh := lower(l2, "lowerhl", "hard")
	must(t, os.Link(lh, filepath.Join(l2, "lowerhl2")))
	mkdir(t, filepath.Join(l2, "emptydir"))
	mkdir(t, filepath.Join(l2, "emptydir-mtime"))
	mkdir(t, filepath.Join(l2, "whdir"))
	for _, d := range []string{"sub", "opq", "rd", "emptydir", "emptydir-mtime", "whdir"} {
		for _, l := range []string{l1, l2} {
			if _, err := os.Stat(filepath.Join(l, d)); err == nil {
				must(t, os.Chtimes(filepath.Join(l, d), old, old))
			}
		}
	}

	// Identical copies: these go. A metacopy file reads its data from
	// the lower file at its path: its metadata decides.
	for _, n := range []string{"same", "link", "origin-ok", "emptydir", "metacopy"} {
		cpA(t, filepath.Join(l2, n), filepath.Join(up, n))
	}
	setXattr(t, filepath.Join(up, "metacopy"), "trusted.overlay.metacopy", "")
	cpA(t, filepath.Join(l1, "sub"), filepath.Join(up, "sub")) // a directory left empty goes too
	cpA(t, filepath.Join(l1, "shadowed"), filepath.Join(up, "shadowed"))
	setXattr(t, filepath.Join(up, "origin-ok"), "trusted.overlay.origin", originOf(t, filepath.Join(l2, "origin-ok")))

	// Copies that differ in one respect each: these stay.
	for _, n := range []string{"content", "mode", "uid", "xattr", "mtime", "hardlink", "metacopy-mode", "redirect", "origin-other", "beside-wh", "whited", "lowerhl", "emptydir-mtime", "whdir"} {
		cpA(t, filepath.Join(l2, n), filepath.Join(up, n))
	}
	must(t, os.WriteFile(filepath.Join(up, "content"), []byte("LOWER CONTENT OF content"), 0o644))
	touchLike(t, filepath.Join(up, "content"), filepath.Join(l2, "content"))
	must(t, os.Chmod(filepath.Join(up, "mode"), 0o600))
	must(t, os.Lchown(filepath.Join(up, "uid"), 1234, 0))
	touchLike(t, filepath.Join(up, "uid"), filepath.Join(l2, "uid"))
	setXattr(t, filepath.Join(up, "xattr"), "user.tag", "v")
	must(t, os.Chtimes(filepath.Join(up, "mtime"), old, old.Add(time.Nanosecond)))
	must(t, os.Link(filepath.Join(up, "hardlink"), filepath.Join(up, "hardlink2")))
	setXattr(t, filepath.Join(up, "metacopy-mode"), "trusted.overlay.metacopy", "")
	must(t, os.Chmod(filepath.Join(up, "metacopy-mode"), 0o600))
	setXattr(t, filepath.Join(up, "redirect"), "trusted.overlay.redirect", "/same")
	setXattr(t, filepath.Join(up, "origin-other"), "trusted.overlay.origin", originOf(t, filepath.Join(l2, "same")))
	fileWhiteout(t, filepath.Join(up, "beside-wh"))
	must(t, os.Symlink("other", filepath.Join(up, "link-other")))
	must(t, os.Chtimes(filepath.Join(up, "emptydir-mtime"), old, old.Add(time.Second)))
	charWhiteout(t, filepath.Join(up, "whdir/gone"))
	touchLike(t, filepath.Join(up, "whdir"), filepath.Join(l2, "whdir"))
	cpA(t, filepath.Join(l1, "opq"), filepath.Join(up, "opq"))
	setXattr(t, filepath.Join(up, "opq"), "trusted.overlay.opaque", "y")
	cpA(t, filepath.Join(l2, "rd"), filepath.Join(up, "rd"))
	setXattr(t, filepath.Join(up, "rd"), "trusted.overlay.redirect", "rd")
	writeFile(t, filepath.Join(up, "upper-only"), "u")

	kept = []string{".wh.beside-wh", "beside-wh", "content", "emptydir-mtime", "hardlink", "hardlink2", "link-other", "lowerhl",
		"metacopy-mode", "mode", "mtime", "opq", "opq/f", "origin-other", "rd", "rd/f", "redirect", "uid", "upper-only", "whdir", "whdir/gone", "whited", "xattr"}
	return f, kept
}

func TestVacuum(t *testing.T) {
	needRoot(t)
	f, kept := vacuumFixture(t)
	view := mergedView(t, f.all())
	lowers := snapshotLowers(t, f)
	before := upperNames(t, f.upper)
	findings := checkKinds(t, f)

	var dry []string
	res, err := Vacuum(f.layers(), VacuumOptions{DryRun: true, Removed: func(p string, isDir bool, bytes int64) {
		rel, _ := filepath.Rel(f.upper, p)
		dry = append(dry, rel)
	}})
	require.NoError(t, err)
	assert.Empty(t, res.Errors)
	assert.Equal(t, before, upperNames(t, f.upper), "a dry run removed something")
	assert.Equal(t, view, mergedView(t, f.all()))

	var removed []string
	res, err = Vacuum(f.layers(), VacuumOptions{Removed: func(p string, isDir bool, bytes int64) {
		rel, _ := filepath.Rel(f.upper, p)
		removed = append(removed, rel)
	}})
	require.NoError(t, err)
	assert.Empty(t, res.Errors)
	sort.Strings(removed)
	sort.Strings(dry)
	assert.Equal(t, []string{"emptydir", "link", "metacopy", "origin-ok", "same", "shadowed", "sub", "sub/same2"}, removed)
	assert.Equal(t, removed, dry, "the dry run listed something else")
	assert.Equal(t, 6, res.Files)
	assert.Equal(t, 2, res.Dirs)
	assert.Greater(t, res.Bytes, int64(0))
	assert.Equal(t, kept, upperNames(t, f.upper))
	assert.Equal(t, view, mergedView(t, f.all()), "vacuum changed the merged view")
	assert.Equal(t, lowers, snapshotLowers(t, f), "vacuum changed a lower layer")

	// A second run finds nothing more.
	res, err = Vacuum(f.layers(), VacuumOptions{})
	require.NoError(t, err)
	assert.Equal(t, 0, res.Files+res.Dirs)
	// Vacuum makes no new problems (the fixture has a few on purpose).
	assert.Equal(t, findings, checkKinds(t, f))
}

func checkKinds(t *testing.T, f *fixture) []string {
	t.Helper()
	rep, err := Check(f.layers(), Options{})
	require.NoError(t, err)
	return kinds(rep, f)
}

// A lower entry reached through a symlink is never compared: a hostile
// layer must not lead vacuum outside the layers. Here a malformed
// redirect in a lower dir makes the stack look through a symlink.
func TestVacuumDoesNotFollowLowerSymlinks(t *testing.T) {
	needRoot(t)
	f := newFixture(t, 2)
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "sub/secret"), "s")
	must(t, os.Symlink(outside, filepath.Join(f.lowers[1], "esc")))
	mkdir(t, filepath.Join(f.lowers[0], "d"))
	setXattr(t, filepath.Join(f.lowers[0], "d"), "trusted.overlay.redirect", "esc/sub")
	cpA(t, filepath.Join(outside, "sub/secret"), filepath.Join(f.upper, "d/secret"))
	res, err := Vacuum(f.layers(), VacuumOptions{})
	require.NoError(t, err)
	// The stack ignores the malformed redirect; and had it followed it,
	// vacuum's own RESOLVE_BENEATH open would refuse the symlink.
	assert.Equal(t, 0, res.Files)
	_, err = os.Stat(filepath.Join(f.upper, "d/secret"))
	assert.NoError(t, err)
}
