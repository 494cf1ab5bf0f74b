package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// fsType returns the filesystem type mounted at p, from /proc/self/mounts.
func fsType(t *testing.T, p string) string {
	t.Helper()
	b, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && unescapeMount(f[1]) == p {
			return f[2]
		}
	}
	return ""
}

// --driver=auto defers to kernel overlay where it can serve the mount,
// and serves FUSE where an option or a layer needs layerfs.
func TestDriverChoice(t *testing.T) {
	needRoot(t)
	cases := []struct {
		name   string
		extra  string
		oci    bool
		want   string
		reason string
	}{
		{"plain root mount", "", false, "overlay", "kernel overlay"},
		{"uid mapping", ",uidmapping=0:100000:65536,gidmapping=0:100000:65536", false, "fuse.layerfs", "uid/gid mapping"},
		{"OCI whiteout in a lower", "", true, "fuse.layerfs", "OCI whiteout"},
		{"passthrough", ",passthrough", false, "fuse.layerfs", "passthrough"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := newTree(t, 2)
			writeFile(t, filepath.Join(tr.lowers[1], "f"), "f")
			writeFile(t, filepath.Join(tr.lowers[1], "gone"), "g")
			if c.oci {
				writeFile(t, filepath.Join(tr.lowers[0], ".wh.gone"), "")
			}
			cleanupMount(t, tr.mnt)
			r := run(t, binary, "-v", "-o", tr.opts()+c.extra, tr.mnt)
			assert.Equal(t, 0, r.code, r.stderr)
			assert.Equal(t, c.want, fsType(t, tr.mnt))
			assert.Contains(t, r.stderr, c.reason)
			assert.Equal(t, "f", readFile(t, filepath.Join(tr.mnt, "f")))
			_, err := os.Stat(filepath.Join(tr.mnt, "gone"))
			assert.Equal(t, c.oci, os.IsNotExist(err))
			unmountAny(t, tr.mnt)
		})
	}
}

func TestDriverKernelForced(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 1)
	cleanupMount(t, tr.mnt)
	r := run(t, binary, "--driver=kernel", "-o", tr.opts()+",uidmapping=0:1:1", tr.mnt)
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "kernel overlay cannot serve this mount: uid/gid mapping")
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"))
	assert.False(t, isMounted(tr.mnt))

	r = run(t, binary, "--driver=bogus", tr.mnt)
	assert.Equal(t, 2, r.code)
}

// The new mount API passes each layer on its own: hundreds of layers with
// long paths do not hit the one-page option limit of mount(2).
func TestKernelManyLongLayers(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 0)
	long := strings.Repeat("a-rather-long-directory-name-", 6)
	for i := 0; i < 200; i++ {
		p := filepath.Join(tr.root, fmt.Sprintf("%s%03d", long, i))
		writeFile(t, filepath.Join(p, fmt.Sprintf("file%03d", i)), fmt.Sprint(i))
		tr.lowers = append(tr.lowers, p)
	}
	assert.Greater(t, len(tr.opts()), 4096)
	cleanupMount(t, tr.mnt)
	r := run(t, binary, "--driver=kernel", "-o", tr.opts(), tr.mnt)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	assert.Equal(t, "overlay", fsType(t, tr.mnt))
	assert.Equal(t, "199", readFile(t, filepath.Join(tr.mnt, "file199")))
	unmountAny(t, tr.mnt)
	// The same stack through FUSE.
	tr.mount(t)
	assert.Equal(t, "0", readFile(t, filepath.Join(tr.mnt, "file000")))
	unmountAny(t, tr.mnt)
}

// mount -t fuse.layerfs goes through mount.fuse3, which runs
// "layerfs SOURCE MOUNTPOINT -o OPTIONS" found in PATH: an /etc/fstab line
// works the same way. mount(8) runs helpers with a fixed PATH, so the test
// calls mount.fuse3 as mount(8) would, with the test binary in PATH
// (installing into /usr/bin is not a test's business).
func TestMountHelper(t *testing.T) {
	needRoot(t)
	needCmd(t, "mount.fuse3")
	tr := newTree(t, 1)
	writeFile(t, filepath.Join(tr.lowers[0], "f"), "via mount(8)")
	bindir := t.TempDir()
	if err := os.Symlink(binary, filepath.Join(bindir, "layerfs")); err != nil {
		t.Fatal(err)
	}
	for _, driver := range []string{"fuse", "auto"} {
		cleanupMount(t, tr.mnt)
		cmd := exec.Command("mount.fuse3", "layerfs", tr.mnt, "-t", "fuse.layerfs", "-o", tr.opts()+",driver="+driver)
		cmd.Env = append(os.Environ(), "PATH="+bindir+":"+os.Getenv("PATH"))
		r := runCmd(t, cmd)
		if r.code != 0 {
			t.Fatalf("mount -t fuse.layerfs (driver=%s): %s", driver, r.stderr)
		}
		want := map[string]string{"fuse": "fuse.layerfs", "auto": "overlay"}[driver]
		assert.Equal(t, want, fsType(t, tr.mnt))
		assert.Equal(t, "via mount(8)", readFile(t, filepath.Join(tr.mnt, "f")))
		unmountAny(t, tr.mnt)
	}
}
