package difftest

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/layerfs/layerfs/test/testns"
	"golang.org/x/sys/unix"
)

var (
	flagN         = flag.Int("n", 300, "number of random sequences")
	flagOps       = flag.Int("ops", 50, "operations per sequence")
	flagSeed      = flag.Uint64("seed", 1, "seed of the first sequence (sequence i uses seed+i); 0 picks one from the clock")
	flagPar       = flag.Int("par", 2, "sequences run at once")
	flagShrink    = flag.Bool("shrink", true, "shrink each new kind of divergence to a minimal repro")
	flagShrinkFor = flag.Duration("shrinktime", 30*time.Second, "time budget for shrinking one divergence")
	flagShrinkAll = flag.Duration("shrinkbudget", 2*time.Minute, "time budget for shrinking all divergences of a run")
	flagStrict    = flag.Bool("strict", false, "regression cases of open bugs fail instead of skip")
	flagLinks     = flag.Bool("links", true, "generate hard links (lower layers and link ops)")
	flagBugSkips  = flag.Bool("bugskips", true, "apply the temporary BUG- entries of KnownDiffs")
	flagFdLeaks   = flag.Bool("fdleaks", true, "fail when layerfs leaves descriptors open after unmount")
	flagSelfCheck = flag.Bool("selfcheck", false, "mount kernel overlay on both sides: checks the tester itself (must find nothing)")
	flagCreds     = flag.Bool("creds", true, "run ops as several users (helper processes), with ACLs in the layers; false: every op as root")
	flagStats     = flag.Bool("stats", false, "log how often each op kind succeeded or failed on the kernel, as root and as other users")
	flagEvict     = flag.Duration("evict", 0, "drop the dentry and inode caches this often while tests run (FUSE FORGETs at random points, as a busy machine gives them); 0: never")
)

// TestMain runs the tests in a private mount namespace of their own (as
// root): the mounts they make are invisible to other processes, so that a
// mount namespace made meanwhile by someone else cannot copy and pin them,
// and they all vanish with the process, even when it is killed.
//
// Re-executed with DIFFTEST_HELPER set, the binary is a helper process
// running ops as one credential (cred.go) instead of the tests.
func TestMain(m *testing.M) {
	if os.Getenv("DIFFTEST_HELPER") != "" {
		os.Exit(helperMain())
	}
	testns.Enter("difftest")
	stop := evictor()
	code := m.Run()
	stop()
	helpers.closeAll()
	os.Exit(code)
}

// evictor drops the dentry and inode caches every -evict until stopped.
func evictor() (stop func()) {
	if !flag.Parsed() {
		flag.Parse()
	}
	if *flagEvict <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(*flagEvict)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// requireEnv fails in CI and skips elsewhere when the machine cannot run
// the tester: it needs root, /dev/fuse and kernel overlayfs.
func requireEnv(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "root"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "/dev/fuse"
	} else if err := probeOverlay(t.TempDir()); err != nil {
		why = "kernel overlayfs (" + err.Error() + ")"
	}
	if why == "" {
		unix.Umask(0) // layerfs sets it too; make both sides start equal
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("the differential tester needs %s, and CI must provide it", why)
	}
	t.Skipf("needs %s", why)
}

func probeOverlay(dir string) error {
	var ds []string
	for _, n := range []string{"l", "u", "w", "m"} {
		d := filepath.Join(dir, n)
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
		ds = append(ds, d)
	}
	if err := unix.Mount("overlay", ds[3], "overlay", 0, fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,%s", ds[0], ds[1], ds[2], KernelOptions)); err != nil {
		return err
	}
	return unix.Unmount(ds[3], 0)
}

// seqSeed derives the rng of one sequence.
func seqRng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x6c61796572667321)) }

func TestDifferential(t *testing.T) {
	requireEnv(t)
	Hardlinks, SelfCheck, Credentials = *flagLinks, *flagSelfCheck, *flagCreds
	defer func() { Hardlinks, SelfCheck, Credentials = true, false, true }()
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano() % 1e9)
	}
	t.Logf("seeds %d..%d, %d ops each (rerun: go test ./test/difftest -run TestDifferential -args -seed=%d -n=%d -ops=%d)",
		seed, seed+uint64(*flagN)-1, *flagOps, seed, *flagN, *flagOps)
	scratch := t.TempDir()
	start := time.Now()

	type outcome struct {
		seed    uint64
		ops     int
		stopped string
		leaked  int
		div     *Divergence
		err     error
	}
	st := newOpStats()
	seeds := make(chan uint64)
	results := make(chan outcome)
	var wg sync.WaitGroup
	for w := 0; w < max(*flagPar, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range seeds {
				rng := seqRng(s)
				r := &Run{Dir: filepath.Join(scratch, fmt.Sprint(s)), Seed: s, Stack: GenStack(rng), N: *flagOps, Rng: rng, NoBugSkips: !*flagBugSkips, Trace: st.add}
				div, err := r.Execute()
				results <- outcome{s, len(r.Applied), r.Stopped, r.LeakedFds, div, err}
			}
		}()
	}
	go func() {
		for i := 0; i < *flagN; i++ {
			seeds <- seed + uint64(i)
		}
		close(seeds)
		wg.Wait()
		close(results)
	}()

	var (
		nOps, nSeq int
		nLeaky     int
		nLeaked    int
		leakSeed   uint64
		stopped    = map[string]int{}
		bySig      = map[string][]*Divergence{}
		errs       []string
	)
	for o := range results {
		nSeq++
		nOps += o.ops
		if o.stopped != "" {
			stopped[o.stopped]++
		}
		if o.leaked > 0 {
			if nLeaky == 0 || o.seed < leakSeed {
				leakSeed = o.seed
			}
			nLeaky++
			nLeaked += o.leaked
		}
		if o.err != nil {
			errs = append(errs, fmt.Sprintf("seed %d: %v", o.seed, o.err))
		}
		if o.div != nil {
			bySig[o.div.Sig] = append(bySig[o.div.Sig], o.div)
		}
	}
	elapsed := time.Since(start)
	nDiv := 0
	for _, ds := range bySig {
		nDiv += len(ds)
	}
	t.Logf("%d sequences, %d ops in %v; %d diverged (%d kinds); ended early by known differences: %v; %d helper processes started",
		nSeq, nOps, elapsed.Round(time.Millisecond), nDiv, len(bySig), stopped, helpers.started())
	if *flagStats {
		t.Logf("kernel results by op kind (ok or errno: count), as root | as users:\n%s", st)
	}
	for _, e := range errs {
		t.Errorf("tester error: %s", e)
	}
	if nLeaky > 0 {
		msg := fmt.Sprintf("layerfs left %d descriptors into its layers open after unmount, in %d of %d sequences (e.g. seed %d)", nLeaked, nLeaky, nSeq, leakSeed)
		if *flagFdLeaks {
			t.Error(msg)
		} else {
			t.Log(msg)
		}
	}

	sigs := make([]string, 0, len(bySig))
	for s := range bySig {
		sigs = append(sigs, s)
	}
	sort.Strings(sigs)
	shrinkEnd := time.Now().Add(*flagShrinkAll)
	for _, sig := range sigs {
		ds := bySig[sig]
		sort.Slice(ds, func(i, j int) bool { return len(ds[i].Ops) < len(ds[j].Ops) })
		var seedList []string
		for _, d := range ds {
			seedList = append(seedList, fmt.Sprint(d.Seed))
		}
		d := ds[0]
		if *flagShrink {
			sh := &Shrinker{Scratch: scratch, Deadline: earliest(time.Now().Add(*flagShrinkFor), shrinkEnd), Log: t.Logf, NoBugSkips: !*flagBugSkips}
			d = sh.Shrink(d)
		}
		t.Errorf("DIVERGENCE %s (seeds %s)\n%s\nregression case:\n%s", sig, strings.Join(seedList, " "), d.Report(), regressCase(d))
	}
}

// opStats counts the kernel's results by op kind, for ops run as root
// (in the tester or a helper) and as other users.
type opStats struct {
	mu sync.Mutex
	n  map[string]map[string]int // kind -> "root ok", "user EACCES", ...
}

func newOpStats() *opStats { return &opStats{n: map[string]map[string]int{}} }

func (s *opStats) add(_ int, o Op, k, _ Result) {
	who := "root"
	if o.As != nil && o.As.Uid != 0 {
		who = "user"
	}
	res := "ok"
	if k.Errno != 0 {
		res = errnoName(k.Errno)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[o.Kind] == nil {
		s.n[o.Kind] = map[string]int{}
	}
	s.n[o.Kind][who+" "+res]++
}

func (s *opStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var kinds []string
	for k := range s.n {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	for _, k := range kinds {
		var root, user []string
		var keys []string
		for r := range s.n[k] {
			keys = append(keys, r)
		}
		sort.Slice(keys, func(i, j int) bool { return s.n[k][keys[i]] > s.n[k][keys[j]] })
		for _, r := range keys {
			who, res, _ := strings.Cut(r, " ")
			e := fmt.Sprintf("%s:%d", res, s.n[k][r])
			if who == "root" {
				root = append(root, e)
			} else {
				user = append(user, e)
			}
		}
		fmt.Fprintf(&b, "  %-12s %s | %s\n", k, strings.Join(root, " "), strings.Join(user, " "))
	}
	return b.String()
}

// regressCase formats d as an entry of the regressions table.
func regressCase(d *Divergence) string {
	return fmt.Sprintf("\t{\n\t\tname: %q,\n\t\tseed: %d,\n\t\topen: \"BUG: ...\",\n\t\tstack: `\n%s`,\n\t\tops: `\n%s`,\n\t},\n",
		d.Sig, d.Seed, d.Stack.String(), FormatOps(d.Ops))
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// FuzzDifferential drives a mount pair with random operation sequences
// chosen by the fuzzer (a seed and a length); any divergence from kernel
// overlay outside the known list fails. The seed corpus holds sequences
// that once found bugs. make fuzz runs it for a bounded time.
func FuzzDifferential(f *testing.F) {
	for _, s := range []uint64{1, 14, 36, 226, 235, 241, 268, 275, 287, 1707} {
		f.Add(s, uint8(50))
	}
	f.Fuzz(func(t *testing.T, seed uint64, n uint8) {
		requireEnv(t)
		Hardlinks, Credentials = true, *flagCreds
		rng := seqRng(seed)
		r := &Run{Dir: t.TempDir(), Seed: seed, Stack: GenStack(rng), N: int(n)%80 + 1, Rng: rng}
		div, err := r.Execute()
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if div != nil {
			t.Fatalf("seed %d, %d ops: divergence\n%s\nshrink it with: go test ./test/difftest -run 'TestDifferential$' -args -seed=%d -n=1 -ops=%d\n"+
				"(add -evict=2ms where it does not diverge again: the fuzzer's workers drop each other's caches)",
				seed, r.N, div.Report(), seed, r.N)
		}
	})
}
