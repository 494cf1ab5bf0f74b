package driver

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/layerfs/layerfs/unionfs"
	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/layerfs/layerfs/whiteout"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// stack makes a lower, an upper, a work dir and a mount point.
func stack(t *testing.T) unionfs.Options {
	t.Helper()
	root := t.TempDir()
	o := unionfs.Options{
		Lowers:     []string{filepath.Join(root, "l")},
		Upper:      filepath.Join(root, "u"),
		Work:       filepath.Join(root, "w"),
		Mountpoint: filepath.Join(root, "mnt"),
	}
	for _, p := range []string{o.Lowers[0], o.Upper, o.Work, o.Mountpoint} {
		require.NoError(t, os.Mkdir(p, 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(o.Lowers[0], "f"), []byte("f"), 0o644))
	return o
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"auto", "fuse", "kernel"} {
		m, err := ParseMode(s)
		assert.NoError(t, err)
		assert.Equal(t, Mode(s), m)
	}
	_, err := ParseMode("bogus")
	assert.EqualError(t, err, "--driver=bogus: want auto, fuse or kernel")
}

func TestNeedsFUSEOptions(t *testing.T) {
	o := stack(t)
	assert.Equal(t, "", NeedsFUSE(o, false))
	one := uint32(1)
	for _, c := range []struct {
		change func(*unionfs.Options)
		want   string
	}{
		{func(o *unionfs.Options) { o.UIDMap = []unionfs.IDMap{{Stored: 0, Shown: 1, Size: 1}} }, "uid/gid mapping"},
		{func(o *unionfs.Options) { o.SquashUID = &one }, "ownership squashing"},
		{func(o *unionfs.Options) { o.Passthrough = true }, "passthrough"},
		{func(o *unionfs.Options) { o.NoSync = true }, "fsync=0"},
		{func(o *unionfs.Options) { o.Timeout = time.Second }, "timeout"},
		{func(o *unionfs.Options) { o.Debug = true }, "debug log"},
		{func(o *unionfs.Options) { o.Work = "" }, "upperdir given without workdir"},
	} {
		oc := o
		c.change(&oc)
		assert.Equal(t, c.want, NeedsFUSE(oc, false))
	}
	o.NoSync, o.Volatile = true, true
	assert.Equal(t, "", NeedsFUSE(o, false), "volatile implies fsync=0, which the kernel has")
}

func TestNeedsFUSEMarkers(t *testing.T) {
	o := stack(t)
	wh := filepath.Join(o.Lowers[0], "d", whiteout.Prefix+"gone")
	require.NoError(t, os.MkdirAll(filepath.Dir(wh), 0o755))
	require.NoError(t, os.WriteFile(wh, nil, 0o644))
	assert.Equal(t, "OCI whiteout "+wh, NeedsFUSE(o, false))
	require.NoError(t, os.Remove(wh))

	// An opaque xattr of the namespace the kernel does not read.
	dir := filepath.Join(o.Upper, "opq")
	require.NoError(t, os.Mkdir(dir, 0o755))
	if err := unix.Setxattr(dir, whiteout.User.Name(whiteout.Opaque), []byte("y"), 0); err != nil {
		t.Skipf("user xattrs: %v", err)
	}
	assert.Equal(t, whiteout.User.Name(whiteout.Opaque)+" on "+dir, NeedsFUSE(o, false))
	assert.Equal(t, "", NeedsFUSE(o, true), "with userxattr the kernel reads user.overlay.opaque")
}

func TestKernelFeatures(t *testing.T) {
	assert.Equal(t, []string{"redirect_dir=on", "metacopy=on"}, kernelFeatures(unionfs.Options{}))
	assert.Equal(t, []string{"redirect_dir=on"}, kernelFeatures(unionfs.Options{NoMetacopy: true}))
	assert.Nil(t, kernelFeatures(unionfs.Options{NoRedirectDir: true}))
	assert.Equal(t, []string{"redirect_dir=nofollow"}, kernelFeatures(unionfs.Options{NoRedirectDir: true, NoFollowRedirect: true}))
}

func TestChooseFUSE(t *testing.T) {
	o := stack(t)
	var said []string
	say := func(m string) { said = append(said, m) }
	served, err := Choose(o, FUSE, say)
	assert.NoError(t, err)
	assert.Equal(t, FUSE, served)
	assert.Equal(t, []string{"serving the mount with FUSE (layerfs)"}, said)

	said = nil
	o.Passthrough = true
	served, err = Choose(o, Auto, say)
	assert.NoError(t, err)
	assert.Equal(t, FUSE, served)
	assert.Equal(t, []string{"kernel overlay cannot serve this mount (passthrough)", "serving the mount with FUSE (layerfs)"}, said)

	said = nil
	served, err = Choose(o, Kernel, say)
	assert.True(t, errors.Is(err, ErrKernelCannotServe))
	assert.EqualError(t, err, "--driver=kernel: kernel overlay cannot serve this mount: passthrough")
	assert.Equal(t, Mode(""), served)
	assert.Empty(t, said)

	served, err = Choose(o, Auto, nil)
	assert.NoError(t, err, "say may be nil")
	assert.Equal(t, FUSE, served)
}

// As root, Auto mounts kernel overlay, and layout reads it back.
func TestChooseKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must run this as root")
		}
		t.Skip("needs root")
	}
	o := stack(t)
	var said []string
	served, err := Choose(o, Auto, func(m string) { said = append(said, m) })
	require.NoError(t, err, "%v", said)
	require.Equal(t, Kernel, served, "%v", said)
	defer unix.Unmount(o.Mountpoint, unix.MNT_DETACH)
	assert.Equal(t, []string{"serving the mount with kernel overlay"}, said)
	b, err := os.ReadFile(filepath.Join(o.Mountpoint, "f"))
	assert.NoError(t, err)
	assert.Equal(t, "f", string(b))

	d, err := layout.Describe(o.Mountpoint)
	require.NoError(t, err)
	assert.Equal(t, "kernel", d.Driver)
	assert.Equal(t, o.Lowers, d.LowerDirs)
	assert.Equal(t, o.Upper, d.UpperDir)
	assert.Equal(t, o.Work, d.WorkDir)
	assert.True(t, strings.Contains(strings.Join(d.Options, ","), "redirect_dir=on"), "%v", d.Options)
	who, busy := layout.InUse(layout.Layers{Upper: o.Upper})
	assert.True(t, busy)
	assert.Equal(t, "kernel overlay mounted at "+o.Mountpoint, who)
	require.NoError(t, unix.Unmount(o.Mountpoint, 0))
}
