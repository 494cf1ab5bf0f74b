package difftest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/layerfs/layerfs/unionfs"
	"golang.org/x/sys/unix"
)

// Side is one mounted union: the kernel's or layerfs's.
type Side struct {
	Name   string
	Lowers []string // top first
	Upper  string
	Work   string
	Mnt    string
	Root   int // O_PATH fd of the mount root, -1 when closed

	srv     *unionfs.Server
	conn    uint32 // FUSE connection number (layerfs)
	aborted bool
}

// Pair is the kernel and layerfs mounts of one stack.
type Pair struct {
	Dir string
	K   *Side
	L   *Side
	// Timeout bounds each layerfs call; a call that takes longer is a
	// hang: the FUSE connection is aborted and the hang reported.
	Timeout time.Duration
	// Keep leaves the materialised layers and upper dirs on disk.
	Keep bool
	// LeakedFds counts the descriptors into layerfs's layers that were
	// still open after its server had ended (set by Close).
	LeakedFds int

	helper *helper // the helper of the last op with a credential
}

// SelfCheck mounts kernel overlay on both sides instead of layerfs on the
// second (a check of the tester itself: it must find no divergence).
var SelfCheck bool

// NewPair materialises s twice below dir (which must exist and be empty)
// and mounts kernel overlay and layerfs on the copies.
func NewPair(dir string, s *Stack) (p *Pair, err error) {
	p = &Pair{Dir: dir, Timeout: 20 * time.Second}
	defer func() {
		if err != nil {
			p.Close()
			p = nil
		}
	}()
	// Helpers running as other users open the mount points by path.
	if err := traversable(dir); err != nil {
		return p, err
	}
	mk := func(name string, kernel bool) (*Side, error) {
		sd := &Side{Name: name, Root: -1}
		base := filepath.Join(dir, name)
		for i := 1; i <= s.Layers; i++ {
			sd.Lowers = append(sd.Lowers, filepath.Join(base, fmt.Sprintf("l%d", i)))
		}
		sd.Upper, sd.Work, sd.Mnt = filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "mnt")
		for _, d := range append(append([]string{}, sd.Lowers...), sd.Upper, sd.Work, sd.Mnt) {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
		}
		if err := s.Materialise(sd.Lowers, kernel); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if r := s.Root; r != nil {
			if err := unix.Chown(sd.Upper, r.Uid, r.Gid); err != nil {
				return nil, err
			}
			if err := unix.Chmod(sd.Upper, r.Mode); err != nil {
				return nil, err
			}
		}
		return sd, nil
	}
	if p.K, err = mk("k", true); err != nil {
		return p, err
	}
	if p.L, err = mk("l", SelfCheck); err != nil {
		return p, err
	}
	if SelfCheck {
		opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,%s", strings.Join(p.L.Lowers, ":"), p.L.Upper, p.L.Work, KernelOptions)
		if err := unix.Mount("overlay", p.L.Mnt, "overlay", 0, opts); err != nil {
			return p, fmt.Errorf("mount -t overlay -o %s: %w", opts, err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,%s", strings.Join(p.K.Lowers, ":"), p.K.Upper, p.K.Work, KernelOptions)
	if err := unix.Mount("overlay", p.K.Mnt, "overlay", 0, opts); err != nil {
		return p, fmt.Errorf("mount -t overlay -o %s: %w", opts, err)
	}
	if p.K.Root, err = openRoot(p.K.Mnt); err != nil {
		return p, err
	}
	if SelfCheck {
		p.L.Root, err = openRoot(p.L.Mnt)
		return p, err
	}
	// No AllowOther: as root, other users may enter by default, as
	// they may enter the kernel's mount; the tester checks that it is so.
	lopts := unionfs.Options{
		Lowers: p.L.Lowers, Upper: p.L.Upper, Work: p.L.Work, Mountpoint: p.L.Mnt, NoSync: true,
		Debug: os.Getenv("DIFFTEST_FUSE_DEBUG") != "", // log every FUSE request
	}
	if !unionfs.OthersMayEnter(lopts) {
		return p, errors.New("layerfs would not let other users in (OthersMayEnter false as root)")
	}
	srv, err := unionfs.Mount(context.Background(), lopts)
	if err != nil {
		return p, fmt.Errorf("layerfs mount: %w", err)
	}
	p.L.srv = srv
	if so := superOptions(p.L.Mnt); !strings.Contains(","+so+",", ",allow_other,") {
		return p, fmt.Errorf("layerfs mount lacks allow_other (super options %q)", so)
	}
	var st unix.Stat_t
	if err := unix.Stat(p.L.Mnt, &st); err != nil {
		return p, err
	}
	p.L.conn = unix.Minor(st.Dev) | unix.Major(st.Dev)<<20
	if p.L.Root, err = openRoot(p.L.Mnt); err != nil {
		return p, err
	}
	return p, nil
}

func openRoot(mnt string) (int, error) {
	return unix.Open(mnt, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// Close unmounts both sides (lazily as a last resort) and removes dir.
func (p *Pair) Close() error {
	p.releaseHelper()
	var errs []error
	for _, sd := range []*Side{p.K, p.L} {
		if sd != nil && sd.Root >= 0 {
			unix.Close(sd.Root)
			sd.Root = -1
		}
	}
	for _, sd := range []*Side{p.K, p.L} {
		if sd == nil || sd.srv != nil || !isMounted(sd.Mnt) {
			continue // not a kernel overlay mount
		}
		err := unix.Unmount(sd.Mnt, 0)
		for try := 0; err == unix.EBUSY && try < 50; try++ {
			time.Sleep(10 * time.Millisecond) // a transient reference
			err = unix.Unmount(sd.Mnt, 0)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("umount %s: %w", sd.Mnt, err))
			unix.Unmount(sd.Mnt, unix.MNT_DETACH)
		}
	}
	if p.L != nil && p.L.srv != nil {
		// go-fuse's Unmount waits for its request loops, which end only
		// when the kernel drops the connection. A copy of the mount in
		// another mount namespace keeps it: then abort the connection.
		srv := p.L.srv
		done := make(chan error, 1)
		go func() {
			err := srv.Unmount()
			if err != nil {
				unix.Unmount(p.L.Mnt, unix.MNT_DETACH)
			}
			srv.Wait()
			done <- err
		}()
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			p.L.abort()
			err = <-done
			if err == nil {
				err = errors.New("layerfs connection did not end after unmount; aborted it")
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("layerfs unmount: %w", err))
		}
		p.L.srv = nil
		// The server is gone: every descriptor it held into its layers
		// should be closed. Count what is left and close it, so that
		// long runs do not run out of descriptors.
		for _, fd := range fdsBelow(filepath.Join(p.Dir, p.L.Name) + "/") {
			unix.Close(fd)
			p.LeakedFds++
		}
	}
	if !p.Keep {
		if err := os.RemoveAll(p.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// fdsBelow lists this process's descriptors whose path is below prefix.
func fdsBelow(prefix string) []int {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []int
	for _, e := range ents {
		t, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(strings.TrimSuffix(t, " (deleted)")+"/", prefix) {
			continue
		}
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, fd)
		}
	}
	return out
}

// superOptions returns the super block options of the mount at mnt.
func superOptions(mnt string) string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if f, g := strings.Fields(pre), strings.Fields(post); ok && len(f) > 4 && f[4] == mnt && len(g) > 2 {
			return g[2]
		}
	}
	return ""
}

func isMounted(mnt string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == mnt {
			return true
		}
	}
	return false
}

// abort cuts the FUSE connection of a hung layerfs, so that every blocked
// call returns.
func (sd *Side) abort() {
	if sd.aborted {
		return
	}
	sd.aborted = true
	const ctl = "/sys/fs/fuse/connections"
	if ents, _ := os.ReadDir(ctl); len(ents) == 0 {
		unix.Mount("fusectl", ctl, "fusectl", 0, "")
	}
	os.WriteFile(fmt.Sprintf("%s/%d/abort", ctl, sd.conn), []byte("1"), 0)
}

var errHang = errors.New("layerfs did not answer in time (hang); FUSE connection aborted")

// onL runs fn (which talks to the layerfs mount) under the hang timeout.
func (p *Pair) onL(fn func()) error {
	if p.L.aborted {
		return errHang
	}
	done := make(chan struct{})
	go func() { fn(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(p.Timeout):
		p.L.abort()
		<-done
		return errHang
	}
}

// apply runs o on side sd: in the tester when o has no credential, else in
// a helper process running as it (the same helper for both sides).
func (p *Pair) apply(sd *Side, o Op) (Result, error) {
	c := o.As
	if c == nil && o.Umask == 0 {
		return Apply(sd.Root, o), nil
	}
	if c == nil {
		c = &Cred{} // root, with a umask of its own
	}
	if p.helper == nil || p.helper.key != c.String() {
		p.releaseHelper()
		h, err := helpers.get(c)
		if err != nil {
			return Result{}, err
		}
		p.helper = h
	}
	r, err := p.helper.do(sd.Mnt, o, o.Umask)
	if err != nil {
		p.helper.kill()
		p.helper = nil
		return Result{}, err
	}
	if r.Out == "(opening the mount root)" && sd == p.K {
		return r, fmt.Errorf("as %s: opening the kernel mount root %s: %v", c, sd.Mnt, r.Errno)
	}
	return r, nil
}

// releaseHelper gives the helper the pair holds back to the pool.
func (p *Pair) releaseHelper() {
	if p.helper != nil {
		helpers.put(p.helper)
		p.helper = nil
	}
}

// Divergence is a difference between kernel overlay and layerfs that no
// known entry accepts.
type Divergence struct {
	Seed    uint64
	Stack   *Stack
	Ops     []Op // the ops applied, up to the diverging one
	Step    int  // index of the diverging op in Ops, -1: the final trees differ
	Kernel  string
	Layerfs string
	Diffs   []TreeDiff
	Sig     string // what kind of divergence, kept while shrinking
}

func (d *Divergence) String() string {
	var b strings.Builder
	if d.Step >= 0 {
		fmt.Fprintf(&b, "op %d %q: kernel: %s; layerfs: %s\n", d.Step+1, d.Ops[d.Step].String(), d.Kernel, d.Layerfs)
	} else {
		fmt.Fprintf(&b, "final trees differ after %d ops:\n", len(d.Ops))
		for i, td := range d.Diffs {
			if i == 20 {
				fmt.Fprintf(&b, "  ... %d more\n", len(d.Diffs)-i)
				break
			}
			fmt.Fprintf(&b, "  %s\n", td)
		}
	}
	return b.String()
}

// Report is the full readable repro of a divergence.
func (d *Divergence) Report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, signature %s\n%s", d.Seed, d.Sig, d)
	fmt.Fprintf(&b, "stack:\n%s", indent(d.Stack.String()))
	fmt.Fprintf(&b, "ops:\n%s", indent(FormatOps(d.Ops)))
	return b.String()
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// Run is one sequence over one mount pair.
type Run struct {
	Dir   string // scratch dir for the pair; made and removed by Run
	Seed  uint64
	Stack *Stack
	// Ops replays a fixed sequence; when nil, N ops are generated from
	// rng as the run goes, over the kernel's merged view.
	Ops []Op
	N   int
	Rng *rand.Rand

	// Trace, when set, sees every op with both results.
	Trace func(i int, o Op, k, l Result)
	// Keep leaves the scratch dir (layers, upper dirs) for inspection.
	Keep bool
	// NoBugSkips disables the temporary "BUG-" entries of KnownDiffs, so
	// that a regression case of an open bug still shows it.
	NoBugSkips bool
	// Unskip disables one entry of KnownDiffs (by name).
	Unskip string

	Applied   []Op
	Stopped   string // a known difference ended the run early
	LeakedFds int    // see Pair.LeakedFds
}

func (r *Run) skips() skips {
	return skips{none: SelfCheck, noBugs: r.NoBugSkips, unskip: r.Unskip}
}

// Execute runs the sequence; it returns the first divergence or nil. err
// is a failure of the tester itself (setup, teardown).
func (r *Run) Execute() (div *Divergence, err error) {
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return nil, err
	}
	p, err := NewPair(r.Dir, r.Stack)
	if err != nil {
		os.RemoveAll(r.Dir)
		return nil, err
	}
	p.Keep = r.Keep
	defer func() {
		if cerr := p.Close(); cerr != nil && err == nil && div == nil {
			err = cerr
		}
		r.LeakedFds = p.LeakedFds
	}()
	mkDiv := func(step int, k, l string, sig string, diffs []TreeDiff) *Divergence {
		return &Divergence{Seed: r.Seed, Stack: r.Stack, Ops: append([]Op(nil), r.Applied...), Step: step, Kernel: k, Layerfs: l, Diffs: diffs, Sig: sig}
	}

	// Inode numbers at the start, for the identity checks.
	startK, err := WalkMerged(p.K.Root)
	if err != nil {
		return nil, fmt.Errorf("kernel walk: %w", err)
	}
	var startL Tree
	var lerr error
	if herr := p.onL(func() { startL, lerr = WalkMerged(p.L.Root) }); herr != nil || lerr != nil {
		return mkDiv(-1, "walk ok", fmt.Sprint(herr, lerr), "walk", nil), nil
	}
	ids := newIdentity(startK)
	tainted := map[string]*Known{}

	n := r.N
	if r.Ops != nil {
		n = len(r.Ops)
	}
	for i := 0; i < n; i++ {
		var o Op
		if r.Ops != nil {
			o = r.Ops[i]
		} else {
			v, err := WalkView(p.K.Root)
			if err != nil {
				return nil, fmt.Errorf("kernel view: %w", err)
			}
			o = GenOp(r.Rng, v, r.Stack)
		}
		r.Applied = append(r.Applied, o)
		if skipped(o, func() *unix.Stat_t { return statNoFollow(p.K.Root, o.Path) }, r.skips()) != nil {
			continue
		}
		if kn := layerfsOnly(o, r.skips()); kn != nil {
			var lr Result
			var lerr error
			if herr := p.onL(func() { lr, lerr = p.apply(p.L, o) }); herr != nil {
				return mkDiv(i, "(not run: "+kn.Name+")", herr.Error(), "hang:"+o.Kind, nil), nil
			}
			if lerr != nil {
				return nil, lerr
			}
			if lr.Errno == 0 {
				return mkDiv(i, "(not run: "+kn.Name+")", lr.String()+" (known difference "+kn.Name+" expects an error)", "layerfs-only:"+o.Kind, nil), nil
			}
			continue
		}
		same := ids.sameInode(p.K.Root, o)
		pre := statNoFollow(p.K.Root, o.Path)
		kr, kerr := p.apply(p.K, o)
		if kerr != nil {
			return nil, kerr
		}
		var lr Result
		var lerr error
		if herr := p.onL(func() { lr, lerr = p.apply(p.L, o) }); herr != nil {
			return mkDiv(i, kr.String(), herr.Error(), "hang:"+o.Kind, nil), nil
		}
		if lerr != nil {
			return nil, lerr
		}
		if r.Trace != nil {
			r.Trace(i, o, kr, lr)
		}
		taints(tainted, o, pre, kr, lr, r.skips())
		if kr != lr {
			if kn := knownOp(o, pre, kr, lr, r.skips()); kn != nil {
				if kn.Stop && (kr.Errno == 0) != (lr.Errno == 0) {
					r.Stopped = kn.Name
					return nil, nil
				}
				continue
			}
			sig := fmt.Sprintf("op:%s:%s/%s", o.Kind, errnoName(kr.Errno), errnoName(lr.Errno))
			if kr.Errno == lr.Errno {
				sig = "op:" + o.Kind + ":output"
			}
			return mkDiv(i, kr.String(), lr.String(), sig, nil), nil
		}
		if kr.Errno == 0 {
			ids.update(o, same)
		}
	}

	// Final comparison.
	endK, err := WalkMerged(p.K.Root)
	if err != nil {
		return nil, fmt.Errorf("kernel walk: %w", err)
	}
	var endL Tree
	if herr := p.onL(func() { endL, lerr = WalkMerged(p.L.Root) }); herr != nil || lerr != nil {
		return mkDiv(-1, "walk ok", fmt.Sprint(herr, lerr), "walk", nil), nil
	}
	diffs := compareMerged(endK, endL)
	diffs = append(diffs, ids.compare(startK, startL, endK, endL)...)
	// The upper dirs are read with the mounts still up (the roots
	// closed), as both sides write through to them synchronously.
	for _, sd := range []*Side{p.K, p.L} {
		unix.Close(sd.Root)
		sd.Root = -1
	}
	upK, uerr := openRoot(p.K.Upper)
	if uerr != nil {
		return nil, uerr
	}
	defer unix.Close(upK)
	upL, uerr := openRoot(p.L.Upper)
	if uerr != nil {
		return nil, uerr
	}
	defer unix.Close(upL)
	uk, err := WalkUpper(upK)
	if err != nil {
		return nil, fmt.Errorf("kernel upper: %w", err)
	}
	ul, err := WalkUpper(upL)
	if err != nil {
		return nil, fmt.Errorf("layerfs upper: %w", err)
	}
	diffs = append(diffs, compareUpper(uk, ul)...)
	diffs = filterTree(untainted(diffs, tainted), r.skips())
	if len(diffs) > 0 {
		return mkDiv(-1, "", "", "final:"+diffs[0].Where, diffs), nil
	}
	return nil, nil
}

// identity follows each starting entry through renames and links, so that
// st_ino can be checked to stay the same across copy-up and rename.
type identity struct {
	origin map[string]string // current path -> path at the start
}

func newIdentity(start Tree) *identity {
	id := &identity{origin: map[string]string{}}
	for p := range start {
		if p != "" {
			id.origin[p] = p
		}
	}
	return id
}

// sameInode reports whether a rename's two names are one inode on the
// kernel side (then the rename does nothing).
func (id *identity) sameInode(root int, o Op) bool {
	if o.Kind != "rename" {
		return false
	}
	a, b := statNoFollow(root, o.Path), statNoFollow(root, o.Path2)
	return a != nil && b != nil && a.Ino == b.Ino && a.Dev == b.Dev
}

func statNoFollow(root int, p string) *unix.Stat_t {
	pfd, base, err := openParent(root, p)
	if err != nil {
		return nil
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return nil
	}
	return &st
}

func (id *identity) take(p string) map[string]string {
	sub := map[string]string{}
	for k, v := range id.origin {
		if k == p || strings.HasPrefix(k, p+"/") {
			sub[k[len(p):]] = v
			delete(id.origin, k)
		}
	}
	return sub
}

func (id *identity) put(p string, sub map[string]string) {
	for rest, v := range sub {
		id.origin[p+rest] = v
	}
}

func (id *identity) update(o Op, same bool) {
	switch o.Kind {
	case "create", "tmpfile", "mkdir", "mkfifo", "symlink", "unlink", "rmdir":
		id.take(o.Path)
	case "link":
		if v, ok := id.origin[o.Path]; ok {
			id.origin[o.Path2] = v
		} else {
			delete(id.origin, o.Path2)
		}
	case "rename":
		if same {
			return
		}
		if o.Flags == "exchange" {
			a, b := id.take(o.Path), id.take(o.Path2)
			id.put(o.Path2, a)
			id.put(o.Path, b)
			return
		}
		a := id.take(o.Path)
		id.take(o.Path2)
		id.put(o.Path2, a)
	}
}

// compare checks that each entry that kept its identity kept its st_ino
// on layerfs exactly when it did on the kernel, and that the entries
// sharing an inode number are the same on both sides.
func (id *identity) compare(startK, startL, endK, endL Tree) []TreeDiff {
	var out []TreeDiff
	for _, p := range unionKeys(endK, endL) {
		o, ok := id.origin[p]
		kn, ln := endK[p], endL[p]
		if !ok || kn == nil || ln == nil || startK[o] == nil || startL[o] == nil {
			continue
		}
		ks, ls := kn.Ino == startK[o].Ino, ln.Ino == startL[o].Ino
		if ks != ls {
			out = append(out, TreeDiff{"ino", p, stableWord(ks, o), stableWord(ls, o)})
		}
	}
	gk, gl := inoGroups(endK), inoGroups(endL)
	for _, p := range unionKeys(endK, endL) {
		if endK[p] == nil || endL[p] == nil {
			continue
		}
		if gk[p] != gl[p] {
			out = append(out, TreeDiff{"ino-shared", p, "same st_ino as [" + gk[p] + "]", "same st_ino as [" + gl[p] + "]"})
		}
	}
	return out
}

func stableWord(stable bool, origin string) string {
	if stable {
		return "st_ino same as at start (of " + origin + ")"
	}
	return "st_ino changed since start (of " + origin + ")"
}

// inoGroups maps each path to the other paths with the same st_ino.
func inoGroups(t Tree) map[string]string {
	by := map[uint64][]string{}
	for _, p := range unionKeys(t, nil) {
		by[t[p].Ino] = append(by[t[p].Ino], p)
	}
	out := map[string]string{}
	for p, n := range t {
		var others []string
		for _, q := range by[n.Ino] {
			if q != p {
				others = append(others, q)
			}
		}
		out[p] = strings.Join(others, " ")
	}
	return out
}
