package unionfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(ents)
}

func rssKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	must(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	return 0
}

// Many create/write/read/unlink cycles and copy-ups leave no descriptor
// and no memory behind in the server (it runs in this process).
func TestResourceHygiene(t *testing.T) {
	const copyups = 2000
	cycles := 20000
	if testing.Short() {
		cycles = 2000
	}
	if n, err := strconv.Atoi(os.Getenv("LAYERFS_HYGIENE_CYCLES")); err == nil {
		cycles = n // e.g. 100000 for the full check
	}
	tu := newTestUnion(t, 1, func(l []string, u string) {
		for i := 0; i < copyups; i++ {
			put(t, l[0], fmt.Sprintf("c/%d", i), "lower")
		}
	})
	warm := filepath.Join(tu.mnt, "warm")
	must(t, os.WriteFile(warm, []byte("x"), 0o644))
	must(t, os.Remove(warm))
	fds0, rss0 := openFds(t), rssKiB(t)
	for i := 0; i < cycles; i++ {
		p := tu.m(fmt.Sprintf("f%d", i%50))
		if err := os.WriteFile(p, []byte("cycle"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < copyups; i++ {
		must(t, os.Chmod(tu.m(fmt.Sprintf("c/%d", i)), 0o600))
	}
	// Let the kernel forget what it no longer uses.
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0)
	fds1, rss1 := openFds(t), rssKiB(t)
	t.Logf("%d cycles and %d copy-ups: fds %d -> %d, RSS %d -> %d KiB", cycles, copyups, fds0, fds1, rss0, rss1)
	assert.LessOrEqual(t, fds1, fds0+copyups/100, "descriptors leak")
	assert.Less(t, rss1-rss0, 64<<10, "memory grows")
	tu.unmount(t)
	assert.LessOrEqual(t, openFds(t), fds0-1, "the server kept descriptors after unmount")
}
