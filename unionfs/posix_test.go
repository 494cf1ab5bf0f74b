package unionfs

import (
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixExcluded lists posixtest cases layerfs does not run, with the
// reason. Keep it empty unless a case tests something a union cannot do.
var posixExcluded = map[string]string{}

func runPosix(t *testing.T, fill func(lowers []string, upper string)) {
	for k, why := range posixExcluded {
		t.Logf("excluded %s: %s", k, why)
	}
	for _, k := range sortedPosixKeys() {
		t.Run(k, func(t *testing.T) {
			tu := newTestUnion(t, 1, fill)
			posixtest.All[k](t, tu.mnt)
		})
	}
}

func TestPosixEmptyLower(t *testing.T) {
	runPosix(t, nil)
}

// A populated lower: the suite runs in "suite", a directory that exists
// only in the lowers and looks empty because every entry in it is whited
// out (in both forms), so each create copies the directory up first and
// every listing must hide the markers.
func TestPosixPopulatedLower(t *testing.T) {
	keys := sortedPosixKeys()
	for _, k := range keys {
		t.Run(k, func(t *testing.T) {
			tu := newTestUnion(t, 2, func(lowers []string, upper string) {
				writeFile(t, filepath.Join(lowers[1], "suite", "hidden_oci"), "x")
				writeFile(t, filepath.Join(lowers[1], "suite", "hidden_char"), "x")
				writeFile(t, filepath.Join(lowers[1], "suite", "sub", "deep"), "x")
				writeFile(t, filepath.Join(lowers[0], "suite", ".wh.hidden_oci"), "")
				mkCharWhiteout(t, filepath.Join(lowers[0], "suite", "hidden_char"))
				writeFile(t, filepath.Join(lowers[0], "suite", ".wh.sub"), "")
				writeFile(t, filepath.Join(lowers[0], "beside"), "lower")
			})
			posixtest.All[k](t, tu.m("suite"))
		})
	}
}

func sortedPosixKeys() []string {
	var keys []string
	for k := range posixtest.All {
		if _, ok := posixExcluded[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}
