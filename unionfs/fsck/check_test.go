package fsck

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// checkCase is one kind of damage made by hand: what check must report,
// and what --repair must leave (unfixable findings).
type checkCase struct {
	name  string
	setup func(t *testing.T, f *fixture)
	want  []string // kinds(report) of the first check
	left  []string // kinds(report) still there after --repair
	force bool
}

var checkCases = []checkCase{
	{
		name: "stale work entries",
		setup: func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.work, "work/#lfs1"), "half a copy")
			writeFile(t, filepath.Join(f.work, "work/#1f/deep/file"), "a kernel temp dir")
		},
		want: []string{"stale-work work/work/#1f", "stale-work work/work/#lfs1"},
	},
	{
		name: "volatile marker, repair without force",
		setup: func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.work, "work/incompat/volatile/dirty"), "")
			writeFile(t, filepath.Join(f.work, "work/#lfs2"), "")
		},
		want: []string{"stale-work work/work/#lfs2", "volatile-dirty work/work/incompat/volatile"},
		left: []string{"volatile-dirty work/work/incompat/volatile"},
	},
	{
		name: "volatile marker, repair with force",
		setup: func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.work, "work/incompat/volatile/dirty"), "")
		},
		want:  []string{"volatile-dirty work/work/incompat/volatile"},
		force: true,
	},
	{
		name: "whiteouts that hide nothing",
		setup: func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.lowers[1], "d/real"), "r")
			charWhiteout(t, filepath.Join(f.upper, "ghost"))
			fileWhiteout(t, filepath.Join(f.upper, "d/ghost2"))
			charWhiteout(t, filepath.Join(f.upper, "d/real")) // hides lower2's: fine
			// Inside an opaque directory nothing below shows.
			mkdir(t, filepath.Join(f.lowers[0], "opq"))
			writeFile(t, filepath.Join(f.lowers[0], "opq/x"), "x")
			mkdir(t, filepath.Join(f.upper, "opq"))
			setXattr(t, filepath.Join(f.upper, "opq"), "trusted.overlay.opaque", "y")
			charWhiteout(t, filepath.Join(f.upper, "opq/x"))
		},
		want: []string{"whiteout-hides-nothing upper/d/.wh.ghost2", "whiteout-hides-nothing upper/ghost", "whiteout-hides-nothing upper/opq/x"},
	},
	{
		name: "two whiteout forms for one name",
		setup: func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.lowers[0], "dup"), "d")
			charWhiteout(t, filepath.Join(f.upper, "dup"))
			fileWhiteout(t, filepath.Join(f.upper, "dup"))
		},
		want: []string{"whiteout-duplicate upper/.wh.dup"},
	},
	{
		name: "whiteout file beside a real entry",
		setup: func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.lowers[0], "c"), "lower c")
			writeFile(t, filepath.Join(f.upper, "c"), "upper c")
			fileWhiteout(t, filepath.Join(f.upper, "c"))
			// A directory that merges: which one wins is not ours to say.
			writeFile(t, filepath.Join(f.lowers[0], "cd/x"), "x")
			mkdir(t, filepath.Join(f.upper, "cd"))
			fileWhiteout(t, filepath.Join(f.upper, "cd"))
			// An opaque directory: nothing merges, the marker can go.
			writeFile(t, filepath.Join(f.lowers[0], "co/x"), "x")
			mkdir(t, filepath.Join(f.upper, "co"))
			setXattr(t, filepath.Join(f.upper, "co"), "user.overlay.opaque", "y")
			fileWhiteout(t, filepath.Join(f.upper, "co"))
		},
		want: []string{"whiteout-contradiction upper/.wh.c", "whiteout-contradiction upper/.wh.cd", "whiteout-contradiction upper/.wh.co"},
		left: []string{"whiteout-contradiction upper/.wh.cd"},
	},
	{
		name: "markers that are not empty files, reserved names",
		setup: func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.lowers[0], "full"), "f")
			writeFile(t, filepath.Join(f.upper, ".wh.full"), "data")
			mkdir(t, filepath.Join(f.upper, "d/.wh..wh..opq"))
			writeFile(t, filepath.Join(f.upper, ".wh."), "")
			writeFile(t, filepath.Join(f.upper, ".wh..wh.plnk"), "")
		},
		want: []string{"bad-marker upper/.wh.full", "bad-marker upper/d/.wh..wh..opq", "reserved-name upper/.wh.", "reserved-name upper/.wh..wh.plnk"},
		left: []string{"bad-marker upper/.wh.full", "bad-marker upper/d/.wh..wh..opq", "reserved-name upper/.wh.", "reserved-name upper/.wh..wh.plnk"},
	},
	{
		name: "broken origin records",
		setup: func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.lowers[0], "ok"), "o")
			writeFile(t, filepath.Join(f.upper, "ok"), "o2")
			setXattr(t, filepath.Join(f.upper, "ok"), "trusted.overlay.origin", originOf(t, filepath.Join(f.lowers[0], "ok")))
			writeFile(t, filepath.Join(f.upper, "null"), "n")
			setXattr(t, filepath.Join(f.upper, "null"), "trusted.overlay.origin", "")
			writeFile(t, filepath.Join(f.upper, "garbage"), "g")
			setXattr(t, filepath.Join(f.upper, "garbage"), "trusted.overlay.origin", "/lower/path/as/text/not/a/handle")
			mkdir(t, filepath.Join(f.upper, "short"))
			setXattr(t, filepath.Join(f.upper, "short"), "user.overlay.origin", "\x00\xfb\x05")
			rec := originOf(t, filepath.Join(f.lowers[0], "ok"))
			writeFile(t, filepath.Join(f.upper, "badlen"), "b")
			setXattr(t, filepath.Join(f.upper, "badlen"), "trusted.overlay.origin", rec+"xx")
		},
		want: []string{"bad-origin upper/badlen", "bad-origin upper/garbage", "bad-origin upper/short"},
	},
	{
		name: "malformed redirects",
		setup: func(t *testing.T, f *fixture) {
			// Nothing below either way: the redirect can go.
			mkdir(t, filepath.Join(f.upper, "r1"))
			setXattr(t, filepath.Join(f.upper, "r1"), "trusted.overlay.redirect", "a//b")
			// "/src/" is malformed (the kernel refuses it, layerfs
			// and the stack ignore it): removing it changes nothing.
			writeFile(t, filepath.Join(f.lowers[0], "src/file"), "s")
			mkdir(t, filepath.Join(f.upper, "r2"))
			setXattr(t, filepath.Join(f.upper, "r2"), "trusted.overlay.redirect", "/src/")
			// On an opaque directory a redirect is not followed.
			writeFile(t, filepath.Join(f.lowers[0], "r3/file"), "s")
			mkdir(t, filepath.Join(f.upper, "r3"))
			setXattr(t, filepath.Join(f.upper, "r3"), "user.overlay.redirect", "")
			setXattr(t, filepath.Join(f.upper, "r3"), "user.overlay.opaque", "y")
		},
		want: []string{"bad-redirect upper/r1", "bad-redirect upper/r2", "bad-redirect upper/r3"},
	},
	{
		name: "redirects that lead nowhere",
		setup: func(t *testing.T, f *fixture) {
			// The own name has a lower directory: made opaque, so it
			// does not start to show.
			writeFile(t, filepath.Join(f.lowers[1], "gone/lowerfile"), "l")
			writeFile(t, filepath.Join(f.upper, "gone/upperfile"), "u")
			setXattr(t, filepath.Join(f.upper, "gone"), "trusted.overlay.redirect", "/nowhere/at/all")
			// Nothing at the own name: the redirect just goes.
			writeFile(t, filepath.Join(f.upper, "lost/upperfile"), "u")
			setXattr(t, filepath.Join(f.upper, "lost"), "user.overlay.redirect", "vanished")
			// A valid one, for contrast.
			writeFile(t, filepath.Join(f.lowers[0], "old/file"), "o")
			mkdir(t, filepath.Join(f.upper, "new"))
			setXattr(t, filepath.Join(f.upper, "new"), "trusted.overlay.redirect", "old")
			charWhiteout(t, filepath.Join(f.upper, "old"))
		},
		want: []string{"dangling-redirect upper/gone", "dangling-redirect upper/lost"},
	},
	{
		name: "redirects and opaque markers where they mean nothing",
		setup: func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.upper, "file"), "f")
			setXattr(t, filepath.Join(f.upper, "file"), "trusted.overlay.redirect", "/elsewhere")
			writeFile(t, filepath.Join(f.lowers[0], "mc"), "data")
			writeFile(t, filepath.Join(f.upper, "mc"), "")
			setXattr(t, filepath.Join(f.upper, "mc"), "trusted.overlay.metacopy", "")
			setXattr(t, filepath.Join(f.upper, "mc"), "trusted.overlay.redirect", "/mc") // fine on metacopy
			mkdir(t, filepath.Join(f.upper, "d"))
			setXattr(t, filepath.Join(f.upper, "d"), "trusted.overlay.opaque", "n")
			setXattr(t, filepath.Join(f.upper, "file"), "user.overlay.opaque", "y")
			setXattr(t, filepath.Join(f.upper, "d"), "user.fuseoverlayfs.opaque", "yes")
		},
		want: []string{"bad-opaque upper/d", "bad-opaque upper/d", "bad-opaque upper/file", "misplaced-redirect upper/file"},
	},
	{
		// Unions ignore opacity on a layer root: the upper whiteout
		// for "two" does hide lower2's, whatever the markers say.
		name: "opaque markers on layer roots",
		setup: func(t *testing.T, f *fixture) {
			writeFile(t, filepath.Join(f.lowers[1], "two"), "2")
			writeFile(t, filepath.Join(f.lowers[1], "three"), "3")
			charWhiteout(t, filepath.Join(f.upper, "two"))
			setXattr(t, f.upper, "trusted.overlay.opaque", "y")
			setXattr(t, f.lowers[0], "user.overlay.opaque", "y")
		},
		want: []string{"bad-opaque lower1/.", "bad-opaque upper/."},
		left: []string{"bad-opaque lower1/."},
	},
	{
		name: "problems in lower layers are reported, never repaired",
		setup: func(t *testing.T, f *fixture) {
			charWhiteout(t, filepath.Join(f.lowers[0], "nothing"))
			writeFile(t, filepath.Join(f.lowers[1], "something"), "s")
			charWhiteout(t, filepath.Join(f.lowers[0], "something"))
			fileWhiteout(t, filepath.Join(f.lowers[1], "bottom")) // the bottom layer hides nothing
			writeFile(t, filepath.Join(f.lowers[1], "bad"), "b")
			setXattr(t, filepath.Join(f.lowers[1], "bad"), "trusted.overlay.origin", "xyz")
		},
		want: []string{"bad-origin lower2/bad", "whiteout-hides-nothing lower1/nothing", "whiteout-hides-nothing lower2/.wh.bottom"},
		left: []string{"bad-origin lower2/bad", "whiteout-hides-nothing lower1/nothing", "whiteout-hides-nothing lower2/.wh.bottom"},
	},
}

func TestCheckFindings(t *testing.T) {
	needRoot(t)
	for _, c := range checkCases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, 2)
			c.setup(t, f)
			lowers := snapshotLowers(t, f)
			view := mergedView(t, f.all())

			rep, err := Check(f.layers(), Options{})
			require.NoError(t, err)
			assert.Equal(t, c.want, kinds(rep, f))
			assert.Empty(t, rep.Errors)
			assert.Equal(t, 4, rep.ExitCode())

			rep, err = Check(f.layers(), Options{Repair: true, Force: c.force})
			require.NoError(t, err)
			assert.Equal(t, c.want, kinds(rep, f))
			code := 0
			if len(c.left) < len(c.want) {
				code |= 1
			}
			if len(c.left) > 0 {
				code |= 4
			}
			assert.Equal(t, code, rep.ExitCode())
			for _, x := range rep.Findings {
				assert.Empty(t, x.FixError, "%s", x.Path)
			}

			rep, err = Check(f.layers(), Options{})
			require.NoError(t, err)
			assert.Equal(t, c.left, kinds(rep, f), "after repair")
			assert.Equal(t, view, mergedView(t, f.all()), "repair changed the merged view")
			assert.Equal(t, lowers, snapshotLowers(t, f), "repair changed a lower layer")
		})
	}
}

// Layers a union would write in normal use check clean: whiteouts that
// hide something, opaque directories in every form (twice is fine),
// valid origins and redirects, xattr whiteouts, metacopy files.
func TestCheckClean(t *testing.T) {
	needRoot(t)
	f := newFixture(t, 2)
	writeFile(t, filepath.Join(f.lowers[1], "etc/passwd"), "root")
	writeFile(t, filepath.Join(f.lowers[1], "etc/gone"), "g")
	writeFile(t, filepath.Join(f.lowers[1], "var/x"), "x")
	writeFile(t, filepath.Join(f.lowers[0], "etc/oci-gone"), "g")
	writeFile(t, filepath.Join(f.lowers[0], "moved/file"), "m")
	charWhiteout(t, filepath.Join(f.lowers[0], "var")) // lower1 deletes lower2's var
	charWhiteout(t, filepath.Join(f.upper, "etc/gone"))
	fileWhiteout(t, filepath.Join(f.upper, "etc/oci-gone"))
	mkdir(t, filepath.Join(f.upper, "var"))
	setXattr(t, filepath.Join(f.upper, "var"), "trusted.overlay.opaque", "y")
	writeFile(t, filepath.Join(f.upper, "var/.wh..wh..opq"), "")
	writeFile(t, filepath.Join(f.upper, "etc/passwd"), "root\nme")
	setXattr(t, filepath.Join(f.upper, "etc/passwd"), "trusted.overlay.origin", originOf(t, filepath.Join(f.lowers[1], "etc/passwd")))
	setXattr(t, filepath.Join(f.upper, "etc"), "trusted.overlay.impure", "y")
	mkdir(t, filepath.Join(f.upper, "renamed"))
	setXattr(t, filepath.Join(f.upper, "renamed"), "trusted.overlay.redirect", "/moved")
	charWhiteout(t, filepath.Join(f.upper, "moved"))
	// Kernel 6.7+ xattr whiteouts, in a directory marked for them.
	writeFile(t, filepath.Join(f.lowers[1], "xw/hidden"), "h")
	writeFile(t, filepath.Join(f.lowers[0], "xw/hidden"), "")
	setXattr(t, filepath.Join(f.lowers[0], "xw"), "trusted.overlay.opaque", "x")
	setXattr(t, filepath.Join(f.lowers[0], "xw/hidden"), "trusted.overlay.whiteout", "")
	// Spare kernel whiteout and index: notes, not problems.
	charWhiteout(t, filepath.Join(f.work, "work/#5a"))
	mkdir(t, filepath.Join(f.work, "index"))

	rep, err := Check(f.layers(), Options{})
	require.NoError(t, err)
	assert.Empty(t, kinds(rep, f))
	assert.Empty(t, rep.Errors)
	assert.Len(t, rep.Notes, 2)
	assert.Equal(t, 0, rep.ExitCode())
}

// --repair and vacuum refuse while a layerfs server holds the work dir;
// a read-only check still runs.
func TestRefuseWhileLocked(t *testing.T) {
	f := newFixture(t, 1)
	fd, err := unix.Open(f.work, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, unix.Flock(fd, unix.LOCK_EX))

	_, err = Check(f.layers(), Options{Repair: true})
	assert.True(t, errors.Is(err, ErrInUse), "check --repair: %v", err)
	_, err = Vacuum(f.layers(), VacuumOptions{})
	assert.True(t, errors.Is(err, ErrInUse), "vacuum: %v", err)
	rep, err := Check(f.layers(), Options{})
	assert.NoError(t, err)
	assert.Equal(t, 0, rep.ExitCode())
	_, err = Vacuum(f.layers(), VacuumOptions{DryRun: true})
	assert.NoError(t, err)
	assert.Contains(t, InUseWarning(f.layers()), "layerfs server")
}

// An upper whose root origin (kernel index=on) names another top lower
// dir was used with other lowers: nothing is repaired, vacuum refuses.
func TestCheckLowerMismatch(t *testing.T) {
	needRoot(t)
	f := newFixture(t, 1)
	other := t.TempDir()
	setXattr(t, f.upper, "trusted.overlay.origin", originOf(t, other))
	charWhiteout(t, filepath.Join(f.upper, "ghost"))
	rep, err := Check(f.layers(), Options{Repair: true})
	require.NoError(t, err)
	assert.Equal(t, []string{"lower-mismatch upper/.", "whiteout-hides-nothing upper/ghost"}, kinds(rep, f))
	assert.Equal(t, 4, rep.ExitCode())
	_, err = os.Lstat(filepath.Join(f.upper, "ghost"))
	assert.NoError(t, err, "the whiteout was judged against the wrong lowers and removed")
	_, err = Vacuum(f.layers(), VacuumOptions{DryRun: true})
	assert.ErrorContains(t, err, "top lower dir")

	setXattr(t, f.upper, "trusted.overlay.origin", originOf(t, f.lowers[0]))
	rep, err = Check(f.layers(), Options{})
	require.NoError(t, err)
	assert.Equal(t, []string{"whiteout-hides-nothing upper/ghost"}, kinds(rep, f))
}

// A work dir on another filesystem than the upper is reported.
func TestCheckWorkOtherFilesystem(t *testing.T) {
	f := newFixture(t, 1)
	shm, err := os.MkdirTemp("/dev/shm", "fsck-work")
	if err != nil {
		t.Skip("no /dev/shm")
	}
	defer os.RemoveAll(shm)
	var a, b unix.Stat_t
	if unix.Stat(shm, &a) != nil || unix.Stat(f.upper, &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm is on the same filesystem as the temp dir")
	}
	f.work = shm
	rep, err := Check(f.layers(), Options{})
	require.NoError(t, err)
	require.Len(t, rep.Findings, 1)
	assert.Equal(t, WorkCrossDevice, rep.Findings[0].Kind)
	assert.Equal(t, 4, rep.ExitCode())
}

func TestCheckOperationalErrors(t *testing.T) {
	f := newFixture(t, 1)
	_, err := Check(layout.Layers{Lowers: []string{filepath.Join(f.upper, "missing")}}, Options{})
	assert.Error(t, err)
	_, err = Check(layout.Layers{}, Options{})
	assert.Error(t, err)
	writeFile(t, filepath.Join(f.upper, "file"), "")
	_, err = Check(layout.Layers{Upper: filepath.Join(f.upper, "file")}, Options{})
	assert.Error(t, err)
	_, err = Vacuum(layout.Layers{Lowers: f.lowers}, VacuumOptions{})
	assert.Error(t, err, "vacuum without an upper dir")
	_, err = Check(layout.Layers{Upper: f.upper}, Options{})
	assert.Error(t, err, "an upper without its lowers: every whiteout would seem useless")
}
