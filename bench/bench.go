// Package bench compares layerfs with kernel overlayfs, fuse-overlayfs and a
// plain directory on a fixed set of filesystem workloads, and writes the
// medians, ratios to kernel overlay and the FUSE servers' peak memory as
// a table (stdout, results.md), as JSON (results.json) and as a chart
// (ratios.svg). With --baseline, a second layerfs build runs beside the
// first as contender layerfs-base, and results.md compares the two.
//
// Main is the entry point; it must run as root on a machine with /dev/fuse
// and kernel overlay. Data (a copy of GOROOT, a large random file, a git
// repository and a tarball) is prepared once and cached under --data; every
// (workload, contender, repetition) gets a fresh upper, work dir and mount
// under --data/runs, all of it removed afterwards.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Contender names, in table order.
const (
	cPlain  = "plain"
	cKernel = "kernel"
	cLayer  = "layerfs"
	cFuseOv = "fuse-overlayfs"
	// cLayerPT is layerfs with -o passthrough: open handles, the kernel
	// doing file I/O on the layer files (root only).
	cLayerPT = "layerfs-pt"
	// cLayerBase is a second layerfs binary (--baseline), mounted exactly
	// like layerfs, so that two builds meet the same machine noise.
	cLayerBase = "layerfs-base"
)

// allContenders are the contenders of a run without --baseline, in table
// order.
var allContenders = []string{cPlain, cKernel, cLayer, cLayerPT, cFuseOv}

// tableOrder is allContenders with, if base, layerfs-base right after
// layerfs.
func tableOrder(base bool) []string {
	var out []string
	for _, c := range allContenders {
		out = append(out, c)
		if c == cLayer && base {
			out = append(out, cLayerBase)
		}
	}
	return out
}

type config struct {
	reps       int
	quick      bool
	out        string
	layerfs    string
	baseline   string // --baseline: layerfs binary measured as layerfs-base
	data       string
	only       []string
	contenders []string
	timeout    time.Duration
	list       bool
	driver     string // --layerfs-driver
	kovl       string // --kovl: buildah-bud's mount program for kernel overlay
}

// listFlag collects comma-separated values from a repeatable flag.
type listFlag struct{ vals *[]string }

func (l listFlag) String() string {
	if l.vals == nil {
		return ""
	}
	return strings.Join(*l.vals, ",")
}

func (l listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l.vals = append(*l.vals, v)
		}
	}
	return nil
}

var errHelp = errors.New("help")

const usageText = `Usage: layerfs-bench [flags]   (make bench, or: go run ./bench/cmd/layerfs-bench [flags])

Benchmarks layerfs against kernel overlay, fuse-overlayfs and a plain
directory. Runs as root; needs /dev/fuse. Lower data is prepared once under
--data; results go to --out as results.json, results.md and ratios.svg.

To compare two layerfs builds in one run (the same machine noise for both),
give the older one as --baseline: it runs as one more contender,
layerfs-base, and results.md compares the two workload by workload.

Flags:
`

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fl := flag.NewFlagSet("layerfs-bench", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.IntVar(&c.reps, "reps", 3, "repetitions of every (workload, contender) pair (--quick: 1)")
	fl.BoolVar(&c.quick, "quick", false, "small data (100 MiB file, part of GOROOT) and one repetition")
	fl.StringVar(&c.out, "out", "bench/results", "directory for results.json, results.md and ratios.svg")
	fl.StringVar(&c.layerfs, "layerfs", "./bin/layerfs", "layerfs binary to test")
	fl.StringVar(&c.baseline, "baseline", "", "a second layerfs binary (the build before a change), measured as contender layerfs-base, mounted like layerfs")
	fl.StringVar(&c.data, "data", "/var/tmp/layerfs-bench-data", "cache of prepared lower data; scratch mounts live here too")
	fl.Var(listFlag{&c.only}, "only", "run only these workloads (comma-separated, repeatable; see --list)")
	fl.Var(listFlag{&c.contenders}, "contenders", "contenders to run (default "+strings.Join(allContenders, ",")+", and layerfs-base with --baseline)")
	fl.DurationVar(&c.timeout, "timeout", 5*time.Minute, "limit for each phase of a trial; a contender that times out is skipped in later repetitions")
	fl.StringVar(&c.kovl, "kovl", "test/e2e/buildah/kovl", "the mount program that puts kernel overlay behind containers/storage, for buildah-bud's kernel contender (the buildah e2e suite's)")
	fl.StringVar(&c.driver, "layerfs-driver", "fuse", "pass --driver=VALUE to layerfs when it has that flag (fuse: measure the FUSE server even where layerfs would defer to kernel overlay; empty: pass nothing)")
	fl.BoolVar(&c.list, "list", false, "list the workloads and exit")
	fl.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, err
	}
	if fl.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fl.Args(), " "))
	}
	set := map[string]bool{}
	fl.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.quick && !set["reps"] {
		c.reps = 1
	}
	if c.quick && !set["timeout"] {
		c.timeout = 2 * time.Minute
	}
	if c.reps < 1 {
		return nil, fmt.Errorf("--reps must be at least 1")
	}
	base := c.baseline != ""
	if len(c.contenders) == 0 {
		c.contenders = tableOrder(base)
	}
	for _, name := range c.contenders {
		if name == cLayerBase && !base {
			return nil, fmt.Errorf("contender %s needs --baseline", cLayerBase)
		}
		if !contains(tableOrder(true), name) {
			return nil, fmt.Errorf("unknown contender %q (have %s)", name, strings.Join(tableOrder(true), ", "))
		}
	}
	if base && !contains(c.contenders, cLayerBase) {
		return nil, fmt.Errorf("--baseline given but --contenders leaves out %s", cLayerBase)
	}
	// Keep table order whatever order they were given in.
	var ordered []string
	for _, name := range tableOrder(base) {
		if contains(c.contenders, name) {
			ordered = append(ordered, name)
		}
	}
	c.contenders = ordered
	names := workloadNames()
	for _, w := range c.only {
		if !contains(names, w) {
			return nil, fmt.Errorf("unknown workload %q (have %s)", w, strings.Join(names, ", "))
		}
	}
	return c, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Main runs the benchmark with the given command-line arguments (without
// the program name) and returns the process exit status: 0 when it ran (even
// if some trials failed; they show as "error"), 1 when it could not run,
// 2 for bad arguments.
func Main(args []string) int {
	cfg, err := parseFlags(args, os.Stderr)
	if err != nil {
		if errors.Is(err, errHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "layerfs-bench: %v\n", err)
		return 2
	}
	if cfg.list {
		for _, w := range selectWorkloads(nil) {
			fmt.Printf("%-16s %-7s  %s\n", w.name, w.cache(), w.desc)
		}
		return 0
	}
	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "layerfs-bench: %v\n", err)
		return 1
	}
	return 0
}

// bench is the state of one run.
type bench struct {
	cfg         *config
	ds          *dataset
	runDir      string   // scratch for this run: DATA/runs/<id>
	layerfs     string   // absolute path of the binary
	layerfsArgs []string // given to layerfs before -o
	baseline    string   // absolute path of the --baseline binary
	baseArgs    []string // given to the baseline before -o
	fuseOv      string   // path of fuse-overlayfs
	ctx         context.Context
	cold        bool // drop_caches works
	results     *Results
	workloads   []*workload
	seq         int
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func run(cfg *config) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (mounts kernel overlay and FUSE filesystems, drops caches)")
	}
	start := time.Now()
	loadStart := loadAvg()
	b := &bench{cfg: cfg}
	var notes []string
	var err error
	if b.cfg.data, err = absReal(cfg.data, true); err != nil {
		return fmt.Errorf("--data: %w", err)
	}
	if contains(cfg.contenders, cLayer) || contains(cfg.contenders, cLayerPT) {
		p, err := filepath.Abs(cfg.layerfs)
		if err != nil {
			return err
		}
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return fmt.Errorf("layerfs binary %s not found (build it: go build -o bin/layerfs ./cmd/layerfs, or pass --layerfs)", p)
		}
		b.layerfs = p
		args, note, err := driverArgs(p, cfg.driver)
		if err != nil {
			return err
		}
		b.layerfsArgs = args
		if note != "" {
			notes = append(notes, note)
		}
	}
	if contains(cfg.contenders, cLayerBase) {
		p, err := filepath.Abs(cfg.baseline)
		if err != nil {
			return err
		}
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return fmt.Errorf("--baseline: layerfs binary %s not found", p)
		}
		b.baseline = p
		// The baseline may predate --driver: ask it, as for layerfs.
		args, note, err := driverArgs(p, cfg.driver)
		if err != nil {
			return fmt.Errorf("--baseline: %w", err)
		}
		b.baseArgs = args
		if note != "" {
			notes = append(notes, cLayerBase+": "+note)
		}
	}
	if contains(cfg.contenders, cFuseOv) {
		p, err := ensureFuseOverlayfs()
		if err != nil {
			notes = append(notes, "fuse-overlayfs unavailable, left out: "+err.Error())
			cfg.contenders = remove(cfg.contenders, cFuseOv)
		} else {
			b.fuseOv = p
		}
	}
	if contains(cfg.contenders, cLayer) || contains(cfg.contenders, cLayerPT) || contains(cfg.contenders, cLayerBase) || contains(cfg.contenders, cFuseOv) {
		if _, err := os.Stat("/dev/fuse"); err != nil {
			return fmt.Errorf("/dev/fuse: %w", err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ctx = ctx
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		logf("layerfs-bench: %v: unmounting and cleaning up", s)
		cancel()
		unmountAllActive()
		if b.runDir != "" {
			removeIfUnmounted(b.runDir)
		}
		os.Exit(130)
	}()

	// One run per data directory: a second would detach the first one's
	// mounts as stale, and spoil its numbers anyway.
	lock, err := os.OpenFile(filepath.Join(b.cfg.data, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("another benchmark is running with --data %s (%v)", b.cfg.data, err)
	}
	runsDir := filepath.Join(b.cfg.data, "runs")
	cleanStale(runsDir)

	spec := fullSpec()
	if cfg.quick {
		spec = quickSpec()
	}
	logf("preparing data under %s (%s set; cached after the first run)", b.cfg.data, spec.Name)
	if b.ds, err = prepareData(ctx, b.cfg.data, spec); err != nil {
		return fmt.Errorf("preparing data: %w", err)
	}
	logf("data: %d entries in the tree, %s file, %d tar entries", b.ds.TreeEntries, humanBytes(b.ds.bigSize), b.ds.TarEntries)

	if err := os.MkdirAll(runsDir, 0o755); err != nil {
		return err
	}
	if b.runDir, err = os.MkdirTemp(runsDir, time.Now().Format("20060102-150405-")); err != nil {
		return err
	}
	defer func() {
		unmountAllActive()
		removeIfUnmounted(b.runDir)
	}()

	b.cold = dropCaches() == nil
	if !b.cold {
		notes = append(notes, "could not write /proc/sys/vm/drop_caches: \"cold\" workloads ran with warm caches")
	}
	b.workloads = selectWorkloads(cfg.only)
	if n := busyNote(loadStart); n != "" {
		logf("warning: %s", n)
		notes = append(notes, n)
	}
	b.results = newResults(b, notes)
	b.results.Machine.LoadAvgStart = loadStart
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}

	b.loop()

	b.results.Elapsed = time.Since(start).Round(time.Second).String()
	b.results.Machine.LoadAvgEnd = loadAvg()
	b.results.finish()
	table := b.results.markdownTable()
	fmt.Println()
	fmt.Print(table)
	if ab := b.results.abTable(); ab != "" {
		fmt.Println()
		fmt.Print(ab)
	}
	fmt.Println()
	fmt.Print(b.results.rssTable())
	if err := b.results.write(cfg.out); err != nil {
		return fmt.Errorf("writing results: %w", err)
	}
	logf("results in %s (results.md, results.json, ratios.svg); took %s", cfg.out, b.results.Elapsed)
	return nil
}

func remove(list []string, s string) []string {
	var out []string
	for _, v := range list {
		if v != s {
			out = append(out, v)
		}
	}
	return out
}

// loop runs every repetition; within one, each workload runs on every
// contender before the next workload starts, and the contender order
// rotates from one repetition to the next.
func (b *bench) loop() {
	skip := map[string]string{} // workload/contender -> reason
	cs := b.cfg.contenders
	for rep := 0; rep < b.cfg.reps; rep++ {
		for _, w := range b.workloads {
			if err := b.prime(w); err != nil {
				logf("priming the data of %s: %v", w.name, err)
			}
			for i := range cs {
				c := cs[(i+rep)%len(cs)]
				if b.ctx.Err() != nil {
					return
				}
				key := w.name + "/" + c
				if why, ok := skip[key]; ok {
					b.results.add(w.name, c, trialResult{err: "skipped: " + why})
					continue
				}
				tr := b.trial(w, c, rep)
				b.results.add(w.name, c, tr)
				status := fmtDuration(tr.dur.Seconds())
				if tr.err != "" {
					status = "ERROR: " + tr.err
				}
				for _, w := range tr.warn {
					status += "  [warning: " + w + "]"
				}
				if tr.rssKiB > 0 {
					status += fmt.Sprintf("  (server peak RSS %.1f MiB)", float64(tr.rssKiB)/1024)
				}
				logf("[rep %d/%d] %-16s %-15s %s", rep+1, b.cfg.reps, w.name, c, status)
				if tr.timedOut {
					skip[key] = "timed out in an earlier repetition"
				}
			}
		}
		b.results.finish()
		if err := b.results.write(b.cfg.out); err != nil {
			logf("writing partial results: %v", err)
		}
	}
}

// absReal makes p absolute with symlinks resolved, creating it if asked.
func absReal(p string, create bool) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if create {
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return "", err
		}
	}
	return filepath.EvalSymlinks(abs)
}

// dropCaches writes back dirty data and empties the page, dentry and inode
// caches.
func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}

// driverArgs says how to ask layerfs for a driver: binaries from before
// --driver existed only had FUSE.
func driverArgs(bin, driver string) ([]string, string, error) {
	if driver == "" {
		return nil, "", nil
	}
	out, _ := exec.Command(bin, "--help").CombinedOutput()
	if strings.Contains(string(out), "--driver") {
		return []string{"--driver=" + driver}, "", nil
	}
	if driver == "fuse" {
		return nil, "this layerfs has no --driver flag; it always serves through FUSE", nil
	}
	return nil, "", fmt.Errorf("--layerfs-driver=%s: %s has no --driver flag", driver, bin)
}
