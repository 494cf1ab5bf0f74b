package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// The changing tools (check --repair, vacuum) refuse layer dirs a mount
// would refuse, and unions that are live, also where they are only known
// by their upper dir; nothing in a lower dir is touched.
func TestToolsRefuseUnsafeLayers(t *testing.T) {
	needRoot(t)
	d := t.TempDir()
	x := filepath.Join(d, "x")
	writeFile(t, filepath.Join(x, "a"), "a")
	writeFile(t, filepath.Join(x, "sub/b"), "b")
	writeFile(t, filepath.Join(x, "work/data"), "precious")
	noErr(t, os.Symlink(x, filepath.Join(d, "y")))
	noErr(t, os.Mkdir(filepath.Join(d, "u"), 0o755))
	noErr(t, os.Mkdir(filepath.Join(d, "w"), 0o755))
	before := snapshot(t, x)

	for _, args := range [][]string{
		{"vacuum", "--lower", x, "--upper", filepath.Join(d, "y"), "--work", filepath.Join(d, "w")},
		{"check", "--repair", "-o", "lowerdir=" + x + ",upperdir=" + filepath.Join(d, "u") + ",workdir=" + x},
		{"check", "--repair", "-o", "lowerdir=" + x + ",upperdir=" + filepath.Join(d, "u") + ",workdir=" + filepath.Join(x, "work")},
		{"vacuum", "--lower", x, "--upper", filepath.Join(d, "u")},
	} {
		r := run(t, binary, args...)
		assert.NotEqual(t, 0, r.code, "%v", args)
		assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "%v: one line: %q", args, r.stderr)
	}
	assert.Equal(t, before, snapshot(t, x), "a lower dir changed")

	// A live layerfs union is seen by its upper dir alone, through the
	// server's status (here with another work dir given).
	tr := newTree(t, 1)
	writeFile(t, filepath.Join(tr.lowers[0], "f"), "same")
	writeFile(t, filepath.Join(tr.upper, "f"), "same")
	tr.mount(t)
	other := filepath.Join(tr.root, "otherwork")
	noErr(t, os.Mkdir(other, 0o755))
	r := run(t, binary, "vacuum", "--lower", tr.lowers[0], "--upper", tr.upper, "--work", other)
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, "layerfs mounted at "+tr.mnt)
	tr.unmount(t)
}

// diff quotes a name that could forge a line; export and diff never show
// names only a marker may have.
func TestDiffAndExportOddNames(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 1)
	writeFile(t, filepath.Join(tr.lowers[0], "etc/passwd"), "p")
	writeFile(t, filepath.Join(tr.upper, "x\nD /etc/f"), "forged")
	writeFile(t, filepath.Join(tr.upper, ".wh.."), "e")
	writeFile(t, filepath.Join(tr.upper, "d/.wh..."), "e")
	r := run(t, binary, "diff", "--upper", tr.upper, "--lower", tr.lowers[0])
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "A /d\nA \"/x\\nD \"\nA \"/x\\nD /etc\"\nA \"/x\\nD /etc/f\"\n", r.stdout)
	out := filepath.Join(tr.root, "layer.tar")
	r = run(t, binary, "export", "--upper", tr.upper, "--lower", tr.lowers[0], "-o", out)
	assert.Equal(t, 0, r.code, r.stderr)
	list := run(t, "tar", "-tf", out)
	assert.NotContains(t, list.stdout, ".wh.")
}
