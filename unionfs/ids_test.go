package unionfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
)

func owner(t *testing.T, p string) [2]uint32 {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Lstat(p, &st))
	return [2]uint32{st.Uid, st.Gid}
}

// uidmapping/gidmapping as podman sends them: ids are translated both
// ways, unmapped ones show as the overflow id.
func TestIDMapping(t *testing.T) {
	m := []IDMap{{Stored: 100000, Shown: 0, Size: 65536}}
	tu := newTestUnionOpts(t, 1, Options{UIDMap: m, GIDMap: m}, func(l []string, u string) {
		put(t, l[0], "root-file", "r")
		put(t, l[0], "user-file", "u")
		put(t, l[0], "unmapped", "x")
		must(t, os.Lchown(filepath.Join(l[0], "root-file"), 100000, 100000))
		must(t, os.Lchown(filepath.Join(l[0], "user-file"), 100500, 100501))
		must(t, os.Lchown(filepath.Join(l[0], "unmapped"), 5, 6))
	})
	assert.Equal(t, [2]uint32{0, 0}, owner(t, tu.m("root-file")))
	assert.Equal(t, [2]uint32{500, 501}, owner(t, tu.m("user-file")))
	assert.Equal(t, [2]uint32{65534, 65534}, owner(t, tu.m("unmapped")))

	must(t, os.Lchown(tu.m("root-file"), 1000, 1001))
	assert.Equal(t, [2]uint32{1000, 1001}, owner(t, tu.m("root-file")))
	assert.Equal(t, [2]uint32{101000, 101001}, owner(t, filepath.Join(tu.upper, "root-file")))
	assert.ErrorIs(t, os.Lchown(tu.m("user-file"), 70000, -1), syscall.EINVAL)

	// A new file made by (host) root is stored as the mapped root.
	must(t, os.WriteFile(tu.m("new"), nil, 0o644))
	assert.Equal(t, [2]uint32{100000, 100000}, owner(t, filepath.Join(tu.upper, "new")))
	assert.Equal(t, [2]uint32{0, 0}, owner(t, tu.m("new")))
}

func TestSquashToRoot(t *testing.T) {
	zero := uint32(0)
	tu := newTestUnionOpts(t, 1, Options{SquashUID: &zero, SquashGID: &zero}, func(l []string, u string) {
		put(t, l[0], "f", "x")
		must(t, os.Lchown(filepath.Join(l[0], "f"), 1234, 5678))
	})
	assert.Equal(t, [2]uint32{0, 0}, owner(t, tu.m("f")))
	assert.Equal(t, [2]uint32{1234, 5678}, owner(t, filepath.Join(tu.lowers[0], "f")))
}

// The ids in POSIX ACLs are mapped like owners: shown as the mount maps
// them, stored as the layers keep them, and the kernel checks the mapped
// entries.
func TestIDMappingACL(t *testing.T) {
	if _, err := exec.LookPath("setfacl"); err != nil {
		needInCI(t, "setfacl (package acl)")
	}
	m := []IDMap{{Stored: 100000, Shown: 0, Size: 65536}}
	tu := newTestUnionOpts(t, 1, Options{UIDMap: m, GIDMap: m}, func(l []string, u string) {
		put(t, l[0], "f", "secret")
		p := filepath.Join(l[0], "f")
		must(t, os.Chmod(p, 0o640))
		must(t, os.Lchown(p, 100000, 100000))
		out, err := exec.Command("setfacl", "-m", "u:101000:r,g:101001:-", p).CombinedOutput()
		if err != nil {
			t.Fatalf("setfacl: %v %s", err, out)
		}
	})
	acl := func(p string) string {
		out, err := exec.Command("getfacl", "-n", "-c", p).CombinedOutput()
		must(t, err)
		return string(out)
	}
	assert.Contains(t, acl(tu.m("f")), "user:1000:r--")
	assert.Contains(t, acl(tu.m("f")), "group:1001:---")
	must(t, os.Chmod(tu.dir, 0o755)) // other users reach the mount point
	must(t, os.Chmod(filepath.Dir(tu.dir), 0o755))
	out, err := exec.Command("setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "cat", tu.m("f")).CombinedOutput()
	assert.NoError(t, err, "the mapped ACL entry grants read: %s", out)

	out, err = exec.Command("setfacl", "-m", "u:1002:rw", tu.m("f")).CombinedOutput()
	assert.NoError(t, err, "%s", out)
	assert.Contains(t, acl(filepath.Join(tu.upper, "f")), "user:101002:rw-", "stored as the layers keep ids")
	out, _ = exec.Command("setfacl", "-m", "u:70000:r", tu.m("f")).CombinedOutput()
	assert.Contains(t, string(out), "Invalid argument", "an id without a mapping")
}
