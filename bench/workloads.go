package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// env is what a workload works on: the merged view of a fresh mount, or,
// for the plain contender, the equivalent plain directories.
type env struct {
	ds      *dataset
	plain   bool
	roots   []string // the whole view: [mnt] or [lower1, lower2]
	goDir   string   // the GOROOT copy
	big     string   // the big file
	repo    string   // the git repository
	write   string   // writable directory: mnt, or a fresh empty dir for plain
	scratch string   // a fresh empty directory of the trial, outside any mount
	home    string   // HOME for git
	m       *mount   // nil for plain
	st      *store   // a store workload's containers-storage (buildah.go)

	cleanups []func()
	bytes    int64 // bytes a read workload saw, for its check
}

// cache says how the page cache stands when the timed part starts.
func (w *workload) cache() string {
	switch {
	case w.cold:
		return "cold"
	case w.warm != nil:
		return "warm"
	}
	return "no drop"
}

func (e *env) onCleanup(f func()) { e.cleanups = append(e.cleanups, f) }

// workload is one timed operation. Phases, each under the trial timeout:
// setup (untimed), then sync and, if cold, drop caches, then warm
// (untimed), then run (timed), then check (untimed).
type workload struct {
	name  string
	desc  string
	plain string // what "plain" measures
	cold  bool
	uses  string // lower data read by prime: tree, big, tar, repo or none
	// store: the harness mounts nothing; the contender is the mount
	// program of a containers-storage store the workload uses (buildah.go)
	store bool
	setup func(ctx context.Context, e *env) error
	warm  func(ctx context.Context, e *env) error
	run   func(ctx context.Context, e *env) error
	check func(e *env) error
}

const absentString = "zq7Xv-layerfs-bench-no-such-string-K3p"

const randReads = 20000

func workloadNames() []string {
	var out []string
	for _, w := range allWorkloads() {
		out = append(out, w.name)
	}
	return out
}

func selectWorkloads(only []string) []*workload {
	all := allWorkloads()
	if len(only) == 0 {
		return all
	}
	var out []*workload
	for _, w := range all {
		if contains(only, w.name) {
			out = append(out, w)
		}
	}
	return out
}

func allWorkloads() []*workload {
	readAll := func(ctx context.Context, e *env) error {
		n, err := readTree(ctx, e.goDir)
		e.bytes = n
		return err
	}
	checkReadAll := func(e *env) error {
		if e.bytes != e.ds.TreeBytes {
			return fmt.Errorf("read %d bytes, the tree holds %d", e.bytes, e.ds.TreeBytes)
		}
		return nil
	}
	gitStatus := func(ctx context.Context, e *env) error {
		var out bytes.Buffer
		err := cmdRun(ctx, e.repo, gitEnv(e.home), &out, "git",
			"-c", "safe.directory=*", "-c", "core.fsmonitor=false", "status", "--porcelain")
		if err == nil && out.Len() > 0 {
			err = fmt.Errorf("git status shows changes: %s", lastLines(out.String(), 3))
		}
		return err
	}
	return []*workload{
		{
			name:  "find-cold",
			uses:  "tree",
			desc:  "`find ROOT > /dev/null` over the whole merged view",
			plain: "`find lower1 lower2`",
			cold:  true,
			run: func(ctx context.Context, e *env) error {
				return cmdRun(ctx, "", nil, nil, "find", e.roots...)
			},
		},
		{
			name:  "stat-cold",
			uses:  "tree",
			desc:  "`find ROOT -printf '%s %m %i\\n' > /dev/null`: lstat of every entry",
			plain: "the same on lower1 and lower2",
			cold:  true,
			run: func(ctx context.Context, e *env) error {
				return cmdRun(ctx, "", nil, nil, "find", append(e.roots, "-printf", "%s %m %i\\n")...)
			},
		},
		{
			name:  "read-cold",
			uses:  "tree",
			desc:  "read every regular file of the GOROOT copy (Go, 1 MiB buffer), caches dropped",
			plain: "the lower directory itself",
			cold:  true,
			run:   readAll,
			check: checkReadAll,
		},
		{
			name:  "read-warm",
			uses:  "tree",
			desc:  "read every regular file of the GOROOT copy after one untimed pass in the same mount",
			plain: "the lower directory itself",
			warm:  readAll,
			run:   readAll,
			check: checkReadAll,
		},
		{
			name:  "grep-warm",
			uses:  "tree",
			desc:  "`grep -r` for an absent string in the GOROOT copy (LC_ALL=C), after one untimed pass",
			plain: "the lower directory itself",
			warm:  func(ctx context.Context, e *env) error { return grepAbsent(ctx, e.goDir) },
			run:   func(ctx context.Context, e *env) error { return grepAbsent(ctx, e.goDir) },
		},
		{
			name:  "seqread-cold",
			uses:  "big",
			desc:  "sequential read of the big lower file (Go, 1 MiB buffer), caches dropped",
			plain: "the lower file itself",
			cold:  true,
			run: func(ctx context.Context, e *env) error {
				n, err := readFile(ctx, e.big, make([]byte, 1<<20))
				if err == nil && n != e.ds.bigSize {
					err = fmt.Errorf("read %d bytes of %d", n, e.ds.bigSize)
				}
				return err
			},
		},
		{
			name:  "randread-cold",
			uses:  "big",
			desc:  fmt.Sprintf("%d preads of 4 KiB at random 4 KiB-aligned offsets of the big file (fixed seed), caches dropped", randReads),
			plain: "the lower file itself",
			cold:  true,
			run:   func(ctx context.Context, e *env) error { return randomReads(ctx, e.big, e.ds.bigSize) },
		},
		{
			name:  "seqwrite-fsync",
			desc:  "write a new file as big as the big file (1 MiB writes) and fsync it",
			plain: "a fresh empty directory on the same filesystem",
			run: func(ctx context.Context, e *env) error {
				return writeNew(ctx, filepath.Join(e.write, "new.bin"), e.ds.bigSize)
			},
		},
		{
			name:  "copyup-append",
			uses:  "big",
			desc:  "append one byte to the big lower file (copy-up), then fsync; caches dropped",
			plain: "`cp` of the lower file into a fresh dir, then the same append + fsync (a copy-up by hand)",
			cold:  true,
			run: func(ctx context.Context, e *env) error {
				target := e.big
				if e.plain {
					target = filepath.Join(e.scratch, "big.bin")
					if err := cmdRun(ctx, "", nil, nil, "cp", e.big, target); err != nil {
						return err
					}
				}
				return appendByte(target)
			},
			check: func(e *env) error {
				target := e.big
				if e.plain {
					target = filepath.Join(e.scratch, "big.bin")
				}
				return wantSize(target, e.ds.bigSize+1)
			},
		},
		{
			name:  "chmod-copyup",
			uses:  "big",
			desc:  "chmod 0600 of the big lower file (copy-up, of metadata only where supported); caches dropped",
			plain: "chmod of the lower file in place (restored afterwards)",
			cold:  true,
			setup: func(ctx context.Context, e *env) error {
				if e.plain {
					st, err := os.Stat(e.big)
					if err != nil {
						return err
					}
					e.onCleanup(func() { os.Chmod(e.big, st.Mode().Perm()) })
				}
				return nil
			},
			run: func(ctx context.Context, e *env) error { return os.Chmod(e.big, 0o600) },
			check: func(e *env) error {
				st, err := os.Stat(e.big)
				if err != nil {
					return err
				}
				if st.Mode().Perm() != 0o600 || st.Size() != e.ds.bigSize {
					return fmt.Errorf("after chmod: mode %v size %d", st.Mode(), st.Size())
				}
				return nil
			},
		},
		{
			name:  "chown-r",
			uses:  "tree",
			desc:  "`chown -R 1234:1234 go` over the lower Go tree (copy-up of every entry: of metadata only where supported, kernel metacopy); caches dropped",
			plain: "`chown -R` of a copy (`cp -a`, untimed)",
			cold:  true,
			setup: func(ctx context.Context, e *env) error {
				if e.plain {
					return cmdRun(ctx, "", nil, nil, "cp", "-a", e.goDir, filepath.Join(e.scratch, "go"))
				}
				return nil
			},
			run: func(ctx context.Context, e *env) error {
				return cmdRun(ctx, "", nil, nil, "chown", "-R", "1234:1234", chownTarget(e))
			},
			check: func(e *env) error {
				return filepath.WalkDir(chownTarget(e), func(p string, d fs.DirEntry, err error) error {
					if err != nil {
						return err
					}
					var st unix.Stat_t
					if err := unix.Lstat(p, &st); err != nil {
						return err
					}
					if st.Uid != 1234 || st.Gid != 1234 {
						return fmt.Errorf("%s: owner %d:%d after chown -R", p, st.Uid, st.Gid)
					}
					return nil
				})
			},
		},
		{
			name:  "untar",
			uses:  "tar",
			desc:  "`tar -xf` of the prepared tarball into a new directory",
			plain: "a fresh empty directory on the same filesystem",
			setup: func(ctx context.Context, e *env) error {
				return os.Mkdir(filepath.Join(e.write, "untar"), 0o755)
			},
			run: func(ctx context.Context, e *env) error {
				return cmdRun(ctx, "", nil, nil, "tar", "-xf", e.ds.tarball, "-C", filepath.Join(e.write, "untar"))
			},
			check: func(e *env) error {
				n, _, err := countTree(filepath.Join(e.write, "untar"))
				if err == nil && n-1 != e.ds.TarEntries {
					// The tarball may name a directory more than once; only complain when short.
					if n-1 < e.ds.TarEntries {
						err = fmt.Errorf("extracted %d entries of %d", n-1, e.ds.TarEntries)
					}
				}
				return err
			},
		},
		{
			name:  "rm-rf",
			uses:  "tree",
			desc:  "`rm -rf go/src` of the lower tree (whiteouts); caches dropped",
			plain: "`rm -rf` of a hard-linked copy (`cp -al`, untimed): unlinks only, no data freed, as in a union",
			cold:  true,
			setup: func(ctx context.Context, e *env) error {
				if e.plain {
					return cmdRun(ctx, "", nil, nil, "cp", "-al", filepath.Join(e.goDir, "src"), filepath.Join(e.scratch, "src"))
				}
				return nil
			},
			run: func(ctx context.Context, e *env) error {
				return cmdRun(ctx, "", nil, nil, "rm", "-rf", rmTarget(e))
			},
			check: func(e *env) error {
				if _, err := os.Lstat(rmTarget(e)); !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("still there after rm -rf (%v)", err)
				}
				return nil
			},
		},
		{
			name:  "rename-dir",
			uses:  "tree",
			desc:  "`mv go/src/net go/src/net2` of a lower directory (EXDEV and a copy where not supported); caches dropped",
			plain: "`mv` of a hard-linked copy (`cp -al`, untimed): one rename(2)",
			cold:  true,
			setup: func(ctx context.Context, e *env) error {
				if e.plain {
					if err := os.Mkdir(filepath.Join(e.scratch, "src"), 0o755); err != nil {
						return err
					}
					return cmdRun(ctx, "", nil, nil, "cp", "-al", filepath.Join(e.goDir, "src", "net"), filepath.Join(e.scratch, "src", "net"))
				}
				return nil
			},
			run: func(ctx context.Context, e *env) error {
				src := renameParent(e)
				return cmdRun(ctx, "", nil, nil, "mv", filepath.Join(src, "net"), filepath.Join(src, "net2"))
			},
			check: func(e *env) error {
				src := renameParent(e)
				if _, err := os.Lstat(filepath.Join(src, "net")); !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("source still there after mv (%v)", err)
				}
				n, _, err := countTree(filepath.Join(src, "net2"))
				if err == nil && n != e.ds.NetEntries {
					err = fmt.Errorf("renamed tree has %d entries, want %d", n, e.ds.NetEntries)
				}
				return err
			},
		},
		{
			name:  "git-status-warm",
			uses:  "repo",
			desc:  "`git status` in the lower git repository, after one untimed run (which may refresh the index)",
			plain: "the lower repository itself",
			warm:  gitStatus,
			run:   gitStatus,
		},
		buildWorkload(),
		buildahWorkload(),
	}
}

func rmTarget(e *env) string {
	if e.plain {
		return filepath.Join(e.scratch, "src")
	}
	return filepath.Join(e.goDir, "src")
}

func renameParent(e *env) string {
	if e.plain {
		return filepath.Join(e.scratch, "src")
	}
	return filepath.Join(e.goDir, "src")
}

func grepAbsent(ctx context.Context, dir string) error {
	var out bytes.Buffer
	// Exit 1: no match, which is what we want; 0 would mean a match.
	err := cmdRunCodes(ctx, "", nil, &out, []int{1}, "grep", "-r", absentString, dir)
	if err == nil && out.Len() > 0 {
		err = fmt.Errorf("grep found the absent string: %s", lastLines(out.String(), 1))
	}
	return err
}

// readTree reads every regular file under dir and returns the byte count.
func readTree(ctx context.Context, dir string) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !d.Type().IsRegular() {
			return nil
		}
		n, err := readFile(ctx, p, buf)
		total += n
		return err
	})
	return total, err
}

func readFile(ctx context.Context, path string, buf []byte) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	for {
		n, err := f.Read(buf)
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if ctx.Err() != nil {
			return total, ctx.Err()
		}
	}
}

func randomReads(ctx context.Context, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(1, 2))
	pages := size / 4096
	buf := make([]byte, 4096)
	for i := 0; i < randReads; i++ {
		off := r.Int64N(pages) * 4096
		n, err := f.ReadAt(buf, off)
		if err != nil {
			return fmt.Errorf("pread at %d: %w", off, err)
		}
		if n != len(buf) {
			return fmt.Errorf("pread at %d: %d bytes", off, n)
		}
		if i%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func writeNew(ctx context.Context, path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	(&rng{s: 0x2545f4914f6cdd1d}).fill(buf)
	for left := size; left > 0; {
		n := int64(len(buf))
		if left < n {
			n = left
		}
		// Vary each block so that nothing can dedupe it.
		buf[0], buf[1] = byte(left>>20), byte(left>>28)
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
		if ctx.Err() != nil {
			f.Close()
			return ctx.Err()
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func appendByte(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte{'\n'}); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func wantSize(path string, size int64) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() != size {
		return fmt.Errorf("%s: size %d, want %d", filepath.Base(path), st.Size(), size)
	}
	return nil
}

// trialResult is the outcome of one (workload, contender, repetition).
type trialResult struct {
	dur      time.Duration
	err      string
	rssKiB   int64
	timedOut bool
	fstype   string
	warn     []string // did not spoil the timing, but is worth knowing
	// requests are the FUSE requests a layerfs server got during the
	// timed phase, by kind; nil for other contenders.
	requests map[string]uint64
}

// trial runs one workload on one contender in a fresh scratch directory
// (and fresh mount), and always unmounts and removes what it made.
func (b *bench) trial(w *workload, contender string, rep int) (tr trialResult) {
	b.seq++
	dir := filepath.Join(b.runDir, fmt.Sprintf("%03d-%s-%s", b.seq, w.name, contender))
	upper := filepath.Join(dir, "upper")
	work := filepath.Join(dir, "work")
	mnt := filepath.Join(dir, "mnt")
	scratch := filepath.Join(dir, "scratch")
	home := filepath.Join(dir, "home")
	for _, d := range []string{upper, work, mnt, scratch, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tr.err = err.Error()
			return tr
		}
	}
	defer func() {
		removeIfUnmounted(dir)
		unix.Sync() // so that freeing this trial's blocks does not land in the next one
	}()

	ds := b.ds
	e := &env{ds: ds, scratch: scratch, home: home}
	// Whatever happens, the lower big file must come out unchanged.
	if before, err := os.Stat(ds.bigPath()); err == nil {
		defer func() {
			after, err := os.Stat(ds.bigPath())
			if err == nil && (after.Size() != before.Size() || after.Mode() != before.Mode()) {
				err = fmt.Errorf("big.bin was %v %d bytes, now %v %d bytes", before.Mode(), before.Size(), after.Mode(), after.Size())
			}
			if err != nil && tr.err == "" {
				tr.err = "LOWER LAYER MODIFIED: " + err.Error()
			}
		}()
	}

	if w.store {
		st, err := b.newStore(contender, dir)
		if err != nil {
			tr.err = err.Error()
			return tr
		}
		e.st = st
		e.plain = contender == cPlain
		defer func() {
			st.close()
			tr.fstype = st.fstype
		}()
	} else if contender == cPlain {
		e.plain = true
		e.roots = []string{ds.lower1, ds.lower2}
		e.goDir = filepath.Join(ds.lower1, "go")
		e.big = ds.bigPath()
		e.repo = filepath.Join(ds.lower1, "repo")
		e.write = filepath.Join(dir, "plain")
		if err := os.Mkdir(e.write, 0o755); err != nil {
			tr.err = err.Error()
			return tr
		}
	} else {
		m, err := b.mountUnion(b.ctx, contender, []string{ds.lower1, ds.lower2}, upper, work, mnt, filepath.Join(dir, "mount.log"))
		if err != nil {
			tr.err = err.Error()
			return tr
		}
		e.m = m
		tr.fstype = m.fstype
		defer func() {
			if err := m.unmount(); err != nil && tr.err == "" {
				tr.err = "unmount: " + err.Error()
			}
			tr.warn = append(tr.warn, m.warn...)
		}()
		e.roots = []string{mnt}
		e.goDir = filepath.Join(mnt, "go")
		e.big = filepath.Join(mnt, "big.bin")
		e.repo = filepath.Join(mnt, "repo")
		e.write = mnt
	}
	defer func() {
		for i := len(e.cleanups) - 1; i >= 0; i-- {
			e.cleanups[i]()
		}
	}()
	phase := func(name string, f func(ctx context.Context, e *env) error) (time.Duration, error) {
		d, err, timedOut := b.timed(e, f)
		if timedOut {
			tr.timedOut = true
		}
		if err != nil && name != "run" {
			err = fmt.Errorf("%s: %w", name, err)
		}
		return d, err
	}
	if w.setup != nil {
		if _, err := phase("setup", w.setup); err != nil {
			tr.err = err.Error()
			return tr
		}
	}
	if w.cold && b.cold {
		dropCaches()
	} else {
		unix.Sync()
	}
	if w.warm != nil {
		if _, err := phase("warm-up", w.warm); err != nil {
			tr.err = err.Error()
			return tr
		}
	}
	before := e.m.requests()
	d, err := phase("run", w.run)
	tr.requests = requestsSince(before, e.m.requests())
	tr.rssKiB = e.m.peakRSS()
	if err != nil {
		tr.err = err.Error()
		return tr
	}
	if w.check != nil {
		if err := w.check(e); err != nil {
			tr.err = "check: " + err.Error()
			return tr
		}
	}
	tr.dur = d
	return tr
}

// timed runs f under the trial timeout and returns how long it took. On
// timeout it kills the FUSE server, so that calls blocked in it return.
func (b *bench) timed(e *env, f func(ctx context.Context, e *env) error) (time.Duration, error, bool) {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.timeout)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- f(ctx, e) }()
	select {
	case err := <-done:
		return time.Since(start), err, false
	case <-ctx.Done():
		e.m.abort()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
		if b.ctx.Err() != nil {
			return 0, errors.New("interrupted"), false
		}
		return 0, fmt.Errorf("timed out after %v", b.cfg.timeout), true
	}
}

// prime reads the lower data a workload uses, untimed, before the first
// contender of each repetition runs it. This machine's disk is cached by
// its host, which drop_caches cannot empty: without priming, whichever
// contender came first after the data had left the host's cache paid for
// it alone.
func (b *bench) prime(w *workload) error {
	ds := b.ds
	var err error
	switch w.uses {
	case "tree":
		_, err = readTree(b.ctx, filepath.Join(ds.lower1, "go"))
	case "repo":
		_, err = readTree(b.ctx, filepath.Join(ds.lower1, "repo"))
	case "big":
		_, err = readFile(b.ctx, ds.bigPath(), make([]byte, 1<<20))
	case "tar":
		_, err = readFile(b.ctx, ds.tarball, make([]byte, 1<<20))
	}
	return err
}

// chownTarget is the tree chown-r changes: the union's view, or the
// plain contender's copy.
func chownTarget(e *env) string {
	if e.plain {
		return filepath.Join(e.scratch, "go")
	}
	return e.goDir
}
