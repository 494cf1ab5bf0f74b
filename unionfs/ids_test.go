package unionfs

import (
	"os"
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
	m := []IDMap{{Container: 0, Host: 100000, Size: 65536}}
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
