package unionfs

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestConcurrencyStress runs many goroutines and two shell processes against one mount for a
// bounded time: each has its own directory (a lower one, so parents are
// copied up under contention) where it creates, writes, renames, unlinks
// and lists while a model records what should be there; all of them also
// copy up, read and list the same shared lower files. A watchdog fails
// the test on a deadlock. At the end every private directory matches its
// model and lookups agree with listings.
func TestConcurrencyStress(t *testing.T) {
	const workers = 8
	duration := 3 * time.Second
	tu := newTestUnion(t, 2, func(l []string, u string) {
		for w := 0; w < workers; w++ {
			put(t, l[1], fmt.Sprintf("w%d/seed", w), "seed")
		}
		for i := 0; i < 20; i++ {
			put(t, l[0], fmt.Sprintf("shared/f%02d", i), fmt.Sprintf("shared %d", i))
		}
	})
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(duration + 60*time.Second):
			panic("watchdog: the stress test is stuck (deadlock?)")
		}
	}()
	defer close(done)

	deadline := time.Now().Add(duration)
	models := make([]map[string]string, workers)
	var wg sync.WaitGroup
	// Other processes hammer the same mount meanwhile (no model: they
	// must only never hang or break it).
	for p := 0; p < 2; p++ {
		must(t, os.MkdirAll(tu.m(fmt.Sprintf("proc%d", p)), 0o755))
		script := fmt.Sprintf(`end=$(($(date +%%s) + %d)); i=0
			while [ $(date +%%s) -lt $end ]; do i=$((i+1))
				echo $i > %[2]s/f$((i%%7)); cat %[2]s/f* >/dev/null 2>&1
				mv %[2]s/f$((i%%3)) %[2]s/g$((i%%4)) 2>/dev/null; rm -f %[2]s/g$((i%%5))
				ls %[3]s >/dev/null; cat %[3]s/f0$((i%%10)) >/dev/null
			done`, int(duration.Seconds()), tu.m(fmt.Sprintf("proc%d", p)), tu.m("shared"))
		cmd := exec.Command("sh", "-c", script)
		must(t, cmd.Start())
		wg.Add(1)
		go func() { defer wg.Done(); cmd.Wait() }()
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			dir := tu.m(fmt.Sprintf("w%d", w))
			model := map[string]string{"seed": "seed"}
			for n := 0; time.Now().Before(deadline); n++ {
				name := fmt.Sprintf("f%d", rng.IntN(12))
				p := filepath.Join(dir, name)
				switch rng.IntN(7) {
				case 0, 1:
					c := fmt.Sprintf("w%d-%d", w, n)
					if os.WriteFile(p, []byte(c), 0o644) == nil {
						model[name] = c
					}
				case 2:
					if os.Remove(p) == nil {
						delete(model, name)
					}
				case 3:
					to := fmt.Sprintf("f%d", rng.IntN(12))
					if os.Rename(p, filepath.Join(dir, to)) == nil && to != name {
						model[to] = model[name]
						delete(model, name)
					}
				case 4:
					os.ReadDir(dir)
				case 5: // contention on shared lower files: copy-up and read
					s := tu.m(fmt.Sprintf("shared/f%02d", rng.IntN(20)))
					if f, err := os.OpenFile(s, os.O_WRONLY|os.O_APPEND, 0); err == nil {
						f.Write([]byte("+"))
						f.Close()
					}
					os.ReadFile(s)
				case 6:
					os.ReadDir(tu.m("shared"))
					os.Chmod(tu.m(fmt.Sprintf("shared/f%02d", rng.IntN(20))), 0o600)
				}
			}
			models[w] = model
		}(w)
	}
	wg.Wait()
	for w := 0; w < workers; w++ {
		dir := tu.m(fmt.Sprintf("w%d", w))
		var want []string
		for n := range models[w] {
			want = append(want, n)
		}
		sort.Strings(want)
		assert.Equal(t, want, names(t, dir), "worker %d", w)
		for n, c := range models[w] {
			assert.Equal(t, c, readFile(t, filepath.Join(dir, n)), "worker %d %s", w, n)
		}
	}
	assert.Len(t, names(t, tu.m("shared")), 20)
	checkLookupMatchesListing(t, tu)
	tu.unmount(t)
	tu.mount(t)
	checkLookupMatchesListing(t, tu)
}
