package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// uidmapping/gidmapping read as fuse-overlayfs reads them (podman sends
// them for --userns=keep-id and --uidmap): STORED:SHOWN:LENGTH triples.
// The same mapping over the same layers shows the same owners through
// layerfs and through fuse-overlayfs, and a chown through either stores
// the same ids.
func TestIDMappingAsFuseOverlayfs(t *testing.T) {
	needRoot(t)
	needCmd(t, "fuse-overlayfs")
	mapping := "uidmapping=0:1000:1:1:110000:65536,gidmapping=0:1000:1:1:110000:65536"
	shown := map[string]string{}
	stored := map[string]string{}
	for _, prog := range []string{binary, "fuse-overlayfs"} {
		tr := newTree(t, 1)
		writeFile(t, filepath.Join(tr.lowers[0], "a"), "a")
		writeFile(t, filepath.Join(tr.lowers[0], "b"), "b")
		writeFile(t, filepath.Join(tr.lowers[0], "c"), "c")
		if err := os.Lchown(filepath.Join(tr.lowers[0], "b"), 1, 1); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(tr.lowers[0], "c"), 7, 7); err != nil {
			t.Fatal(err)
		}
		cleanupMount(t, tr.mnt)
		args := []string{"-o", tr.opts() + "," + mapping, tr.mnt}
		if prog == binary {
			args = append([]string{"--driver=fuse"}, args...)
		}
		if r := run(t, prog, args...); r.code != 0 {
			t.Fatalf("%s: exit %d: %s", prog, r.code, r.stderr)
		}
		out, err := exec.Command("stat", "-c", "%n %u:%g", tr.mnt+"/a", tr.mnt+"/b", tr.mnt+"/c").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: stat: %v %s", prog, err, out)
		}
		shown[prog] = strings.ReplaceAll(string(out), tr.mnt, "M")
		if err := os.WriteFile(filepath.Join(tr.mnt, "new"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, ids := range [][2]int{{1000, 1000}, {110005, 110005}} {
			if err := os.Lchown(filepath.Join(tr.mnt, "new"), ids[0], ids[1]); err != nil {
				t.Fatalf("%s: chown %v: %v", prog, ids, err)
			}
			out, err = exec.Command("stat", "-c", "%u:%g", filepath.Join(tr.upper, "new")).CombinedOutput()
			if err != nil {
				t.Fatal(err)
			}
			stored[prog] += string(out)
		}
		tr.unmount(t)
	}
	assert.Equal(t, "M/a 1000:1000\nM/b 110000:110000\nM/c 110006:110006\n", shown[binary])
	assert.Equal(t, shown["fuse-overlayfs"], shown[binary])
	assert.Equal(t, "0:0\n6:6\n", stored[binary])
	assert.Equal(t, stored["fuse-overlayfs"], stored[binary])
}
