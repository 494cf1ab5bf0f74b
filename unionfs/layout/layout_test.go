package layout

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// dirs makes the named directories under a temporary root.
func dirs(t *testing.T, names ...string) map[string]string {
	t.Helper()
	root := t.TempDir()
	m := map[string]string{"root": root}
	for _, n := range names {
		p := filepath.Join(root, n)
		require.NoError(t, os.MkdirAll(p, 0o755))
		m[n] = p
	}
	return m
}

func TestValidateMount(t *testing.T) {
	d := dirs(t, "l1", "l2", "u", "w", "mnt", "l1/in", "u/in")
	require.NoError(t, os.WriteFile(filepath.Join(d["root"], "file"), nil, 0o644))
	link := filepath.Join(d["root"], "link")
	require.NoError(t, os.Symlink(d["l2"], link))

	l, mnt, err := ValidateMount(Layers{Lowers: []string{d["l1"], link}, Upper: d["u"], Work: d["w"]}, d["mnt"])
	require.NoError(t, err)
	assert.Equal(t, Layers{Lowers: []string{d["l1"], d["l2"]}, Upper: d["u"], Work: d["w"]}, l, "symlinks resolved")
	assert.Equal(t, d["mnt"], mnt)

	l, _, err = ValidateMount(Layers{Lowers: []string{d["l1"]}}, d["mnt"])
	require.NoError(t, err)
	assert.Equal(t, Layers{Lowers: []string{d["l1"]}}, l, "read-only: no upper, no work")

	missing := filepath.Join(d["root"], "missing")
	file := filepath.Join(d["root"], "file")
	for _, c := range []struct {
		l    Layers
		mnt  string
		want string
	}{
		{Layers{}, d["mnt"], "no lower directory given (lowerdir=DIR[:DIR...] or --lower DIR)"},
		{Layers{Lowers: []string{d["l1"]}, Work: d["w"]}, d["mnt"], "workdir given without upperdir"},
		{Layers{Lowers: []string{d["l1"]}, Upper: d["u"]}, d["mnt"], "upperdir given without workdir"},
		{Layers{Lowers: []string{missing}}, d["mnt"], fmt.Sprintf("lowerdir %q does not exist", missing)},
		{Layers{Lowers: []string{file}}, d["mnt"], fmt.Sprintf("lowerdir %q is not a directory", file)},
		{Layers{Lowers: []string{""}}, d["mnt"], "lowerdir: empty path"},
		{Layers{Lowers: []string{d["l1"]}}, "", "mountpoint: empty path"},
		{Layers{Lowers: []string{d["l1"]}}, d["l1/in"], fmt.Sprintf("mountpoint %q is inside lowerdir %q", d["l1/in"], d["l1"])},
		{Layers{Lowers: []string{d["l1"]}, Upper: d["u"], Work: d["u"]}, d["mnt"], "upperdir and workdir are the same directory"},
		{Layers{Lowers: []string{d["l1"]}, Upper: d["u"], Work: d["u/in"]}, d["mnt"], fmt.Sprintf("workdir %q is inside upperdir %q", d["u/in"], d["u"])},
		{Layers{Lowers: []string{d["l1"]}, Upper: d["l1/in"], Work: d["w"]}, d["mnt"], fmt.Sprintf("upperdir %q is inside lowerdir %q", d["l1/in"], d["l1"])},
		{Layers{Lowers: []string{d["u/in"]}, Upper: d["u"], Work: d["w"]}, d["mnt"], fmt.Sprintf("lowerdir %q is inside upperdir %q", d["u/in"], d["u"])},
		{Layers{Lowers: []string{d["l1"]}, Upper: d["u"], Work: d["w"]}, d["u/in"], fmt.Sprintf("mountpoint %q is inside upperdir or workdir", d["u/in"])},
		{Layers{Lowers: []string{d["l1"]}, Upper: d["u"], Work: d["w"]}, d["root"], fmt.Sprintf("upperdir %q is inside the mountpoint %q", d["u"], d["root"])},
	} {
		_, _, err := ValidateMount(c.l, c.mnt)
		if assert.Error(t, err, "%+v on %s", c.l, c.mnt) {
			assert.Equal(t, c.want, err.Error())
			assert.True(t, IsConfigError(err), "%v", err)
		}
	}
}

func TestValidateLayers(t *testing.T) {
	d := dirs(t, "l1", "l2", "u", "w", "l1/in")
	assert.NoError(t, ValidateLayers(Layers{Lowers: []string{d["l1"], d["l2"]}, Upper: d["u"], Work: d["w"]}))
	assert.NoError(t, ValidateLayers(Layers{Lowers: []string{d["l1"]}}), "lowers only")
	assert.NoError(t, ValidateLayers(Layers{Upper: d["u"]}), "an upper only")

	link := filepath.Join(d["root"], "link")
	require.NoError(t, os.Symlink(d["l2"], link))
	for _, c := range []struct {
		l    Layers
		want string
	}{
		{Layers{Lowers: []string{d["l1"], link}, Upper: d["l2"]}, fmt.Sprintf("upperdir %q and lowerdir %q are the same directory", d["l2"], link)},
		{Layers{Lowers: []string{d["l1"]}, Upper: d["u"], Work: d["u"]}, fmt.Sprintf("workdir %q and upperdir %q are the same directory", d["u"], d["u"])},
		{Layers{Lowers: []string{d["l1"]}, Upper: d["l1/in"]}, fmt.Sprintf("upperdir %q is inside lowerdir %q", d["l1/in"], d["l1"])},
		{Layers{Lowers: []string{d["l1/in"]}, Work: d["l1"]}, fmt.Sprintf("lowerdir %q is inside workdir %q", d["l1/in"], d["l1"])},
		{Layers{Lowers: []string{filepath.Join(d["root"], "missing")}}, fmt.Sprintf("lowerdir %q does not exist", filepath.Join(d["root"], "missing"))},
	} {
		err := ValidateLayers(c.l)
		if assert.Error(t, err, "%+v", c.l) {
			assert.Equal(t, c.want, err.Error())
			assert.True(t, IsConfigError(err))
		}
	}
}

func TestIsConfigError(t *testing.T) {
	err := ConfigErrorf("bad %s", "input")
	assert.Equal(t, "bad input", err.Error())
	assert.True(t, IsConfigError(err))
	assert.True(t, IsConfigError(fmt.Errorf("wrapped: %w", err)))
	assert.False(t, IsConfigError(os.ErrNotExist))
	assert.False(t, IsConfigError(nil))
}

func TestParseMountInfo(t *testing.T) {
	const info = `22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
95 22 0:50 / /tmp/a\040b rw,relatime shared:40 master:3 - overlay overlay rw,lowerdir=/l/one\134\072x:/l/two,upperdir=/u,workdir=/w
96 22 0:51 / /tmp/new rw - overlay overlay rw,lowerdir+=/l/a:b,lowerdir+=/l/c,upperdir=/u2,workdir=/w2
97 22 0:52 / /tmp/fuse rw,nosuid - fuse.layerfs layerfs rw,user_id=0
short line
`
	ms, err := parseMountInfo(strings.NewReader(info))
	require.NoError(t, err)
	require.Len(t, ms, 4)
	assert.Equal(t, MountInfo{Mountpoint: "/", FSType: "ext4", Source: "/dev/sda1", Options: []string{"rw"}}, ms[0])
	assert.Equal(t, "/tmp/a b", ms[1].Mountpoint, "octal escapes undone, optional fields skipped")
	assert.Equal(t, "overlay", ms[1].FSType)
	assert.Equal(t, Layers{Lowers: []string{`/l/one:x`, "/l/two"}, Upper: "/u", Work: "/w"}, ms[1].OverlayDirs(), `"\:" escapes a colon in lowerdir`)
	assert.Equal(t, Layers{Lowers: []string{"/l/a:b", "/l/c"}, Upper: "/u2", Work: "/w2"}, ms[2].OverlayDirs(), "lowerdir+ names one layer each")
	assert.Equal(t, "fuse.layerfs", ms[3].FSType)
	assert.Equal(t, Layers{}, ms[3].OverlayDirs())
}

func TestUnescapeOctal(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b\134c`: `/a b\c`,
		`/plain`:       `/plain`,
		`/end\040`:     `/end `,
		`/short\04`:    `/short\04`,
		`/not\9999`:    `/not\9999`,
	} {
		assert.Equal(t, want, unescapeOctal(in), in)
	}
}

func TestFindMount(t *testing.T) {
	m, err := FindMount("/proc")
	require.NoError(t, err)
	assert.Equal(t, "proc", m.FSType)
	dir := t.TempDir()
	_, err = FindMount(dir)
	assert.EqualError(t, err, dir+" is not a mount point")
}

// A layerfs server holds its work dir's lock: InUse sees it also where
// mountinfo does not show the mount (another mount namespace).
func TestInUseByLock(t *testing.T) {
	d := dirs(t, "u", "w")
	l := Layers{Upper: d["u"], Work: d["w"]}
	who, busy := InUse(l)
	assert.False(t, busy, who)
	fd, err := unix.Open(d["w"], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, unix.Flock(fd, unix.LOCK_EX))
	who, busy = InUse(l)
	assert.True(t, busy)
	assert.Equal(t, "a layerfs server (it holds the lock on "+d["w"]+")", who)
}

// A server that lets go of its work dir shortly after its mount is gone
// (as one does while it exits) does not count as using it.
func TestInUseWhileAServerLetsGo(t *testing.T) {
	d := dirs(t, "u", "w")
	l := Layers{Upper: d["u"], Work: d["w"]}
	fd, err := unix.Open(d["w"], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, unix.Flock(fd, unix.LOCK_EX))
	go func() {
		time.Sleep(300 * time.Millisecond)
		unix.Close(fd)
	}()
	who, busy := InUse(l)
	assert.False(t, busy, who)
}

func TestDescribeNotAUnion(t *testing.T) {
	_, err := Describe("/proc")
	assert.EqualError(t, err, "/proc is a proc mount, not a union")
}
