package unionfs

import (
	"fmt"
	"os"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/assert"
)

// Without OPENDIR (FUSE_NO_OPENDIR_SUPPORT) listings stay right: a big
// directory read in several chunks, again after changes made through the
// mount, and a second listing asks the server nothing.
func TestListingsWithoutOpendir(t *testing.T) {
	tu := newTestUnion(t, 2, func(l []string, u string) {
		for i := 0; i < 600; i++ {
			put(t, l[i%2], fmt.Sprintf("d/file-with-a-longer-name-%04d", i), "x")
		}
	})
	want := func(extra ...string) []string {
		var names []string
		for i := 0; i < 600; i++ {
			names = append(names, fmt.Sprintf("file-with-a-longer-name-%04d", i))
		}
		names = append(names, extra...)
		sort.Strings(names)
		return names
	}
	list := func() []string {
		got := names(t, tu.m("d"))
		sort.Strings(got)
		return got
	}
	assert.Equal(t, want(), list())
	reqs := tu.srv.u.stats.requests.snapshot()
	assert.Equal(t, want(), list())
	again := tu.srv.u.stats.requests.snapshot()
	if tu.srv.fuse.KernelSettings().Flags64()&fuse.CAP_NO_OPENDIR_SUPPORT != 0 {
		// The kernel took ENOSYS: no OPENDIR since, and the second
		// listing came from its cache.
		assert.LessOrEqual(t, again["OPENDIR"], uint64(1))
		assert.Equal(t, reqs["READDIR"]+reqs["READDIRPLUS"], again["READDIR"]+again["READDIRPLUS"], "the second listing asked the server")
		assert.Zero(t, again["RELEASEDIR"])
	}
	must(t, os.WriteFile(tu.m("d/new"), nil, 0o644))
	must(t, os.Remove(tu.m("d/file-with-a-longer-name-0007")))
	w := want("new")
	w = append(w[:7], w[8:]...)
	assert.Equal(t, w, list(), "the cached listing follows changes through the mount")

	// Reading from the middle: seekdir to a position telldir gave.
	f, err := os.Open(tu.m("d"))
	must(t, err)
	defer f.Close()
	first, err := f.Readdirnames(10)
	must(t, err)
	rest, err := f.Readdirnames(-1)
	must(t, err)
	assert.Len(t, append(first, rest...), len(w))
}
