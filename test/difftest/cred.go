package difftest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Credentials. A union serves the processes of many users, so each op
// runs as a credential (Op.As): uid, gid and supplementary groups. A
// process's credentials are its own (Go's setuid changes every thread),
// so an op with a credential runs in a helper process: the test binary
// re-executed as that credential (SysProcAttr.Credential), long-lived,
// reading ops from a pipe and answering results. The same helper runs
// the op on the kernel mount and then on the layerfs mount, opening each
// mount's root by path, as a process of that user would. An op without a
// credential runs in the tester itself, as root with umask 0 (what every
// op did before credentials; old regression cases mean that).

// credIDs are the uids and gids ops run as; the generated layers and
// chown ops use the same ids for owners.
var credIDs = []int{0, 1000, 1001, 1002}

// Cred is the credential of an op.
type Cred struct {
	Uid, Gid int
	Groups   []int // supplementary, sorted, without duplicates
}

// String is the op text form: "1001:1001+1002+1000" (uid:gid+groups).
func (c *Cred) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d:%d", c.Uid, c.Gid)
	for _, g := range c.Groups {
		fmt.Fprintf(&b, "+%d", g)
	}
	return b.String()
}

func parseCred(s string) (*Cred, error) {
	u, rest, ok := strings.Cut(s, ":")
	if !ok {
		return nil, fmt.Errorf("credential %q: want uid:gid[+group...]", s)
	}
	f := strings.Split(rest, "+")
	c := &Cred{}
	var err error
	if c.Uid, err = strconv.Atoi(u); err != nil {
		return nil, fmt.Errorf("credential %q: %v", s, err)
	}
	if c.Gid, err = strconv.Atoi(f[0]); err != nil {
		return nil, fmt.Errorf("credential %q: %v", s, err)
	}
	for _, g := range f[1:] {
		n, err := strconv.Atoi(g)
		if err != nil {
			return nil, fmt.Errorf("credential %q: %v", s, err)
		}
		c.Groups = append(c.Groups, n)
	}
	return c, nil
}

func (c *Cred) inGroup(gid int) bool {
	if c.Gid == gid {
		return true
	}
	for _, g := range c.Groups {
		if g == gid {
			return true
		}
	}
	return false
}

// Credentials enables credentials in generated ops; without it every op
// runs as root, in the tester.
var Credentials = true

// credTable is every credential generated ops run as: a few users with
// a primary group and some supplementary ones. A fixed table keeps the
// helper processes few (one per credential and pair at most).
var credTable = func() []*Cred {
	var out []*Cred
	for _, s := range []string{
		"0:0", "0:1000", "0:1002+1001",
		"1000:1000", "1001:1001", "1002:1002", "65534:65534",
		"1000:1001", "1001:1002", "1002:1000", "1000:0", "1001:0",
		"1000:1000+1001", "1001:1001+1002", "1002:1002+1000",
		"1000:1002+0+1001", "1001:1000+0", "1002:1001+0+1000",
		"1002:0+1001", "65534:65534+1002",
	} {
		c, err := parseCred(s)
		if err != nil {
			panic(err)
		}
		out = append(out, c)
	}
	return out
}()

// genCred draws the credential of an op whose target is owned by
// uid:gid: root; the owner; a member of the owner group who is not the
// owner (by primary or supplementary group); another user; another user
// with supplementary groups (none of them the file's group).
func (g *opGen) genCred(uid, gid int) *Cred {
	roles := []func(c *Cred) bool{
		func(c *Cred) bool { return c.Uid == 0 && c.Gid == 0 },
		func(c *Cred) bool { return c.Uid == uid },
		func(c *Cred) bool { return c.Uid != uid && c.Uid != 0 && c.inGroup(gid) },
		func(c *Cred) bool { return c.Uid != uid && c.Uid != 0 && !c.inGroup(gid) && len(c.Groups) == 0 },
		func(c *Cred) bool { return c.Uid != uid && c.Uid != 0 && !c.inGroup(gid) && len(c.Groups) > 0 },
	}
	weights := []int{20, 40, 16, 12, 12}
	r := g.rng.IntN(100)
	role := 0
	for r >= weights[role] {
		r -= weights[role]
		role++
	}
	for ; ; role = (role + 1) % len(roles) {
		var cands []*Cred
		for _, c := range credTable {
			if roles[role](c) {
				cands = append(cands, c)
			}
		}
		if len(cands) > 0 {
			return cands[g.rng.IntN(len(cands))]
		}
	}
}

// The protocol between the tester and a helper: one JSON object a line.
// The helper first says who it is (helperHello), then answers each
// helperReq with a helperResp.
type helperHello struct {
	Uid, Gid, Euid, Egid int
	Groups               []int
	Err                  string
}

type helperReq struct {
	Root  string // the mount point
	Op    Op
	Umask int
}

type helperResp struct {
	Errno int
	Out   string
	Root  bool // opening the mount root failed (Errno says how)
}

// helper is one helper process.
type helper struct {
	key   string
	cmd   *exec.Cmd
	in    io.WriteCloser
	enc   *json.Encoder
	dec   *json.Decoder
	stamp int64 // last use, for evicting the least recently used
}

// helperPool keeps helper processes by credential, at most maxIdle of
// them idle (the least recently used idle one is ended beyond that).
type helperPool struct {
	mu      sync.Mutex
	idle    map[string][]*helper
	nIdle   int
	clock   int64
	spawned int
}

const maxIdleHelpers = 48

var helpers = &helperPool{idle: map[string][]*helper{}}

// get returns a helper running as c, idle or new.
func (p *helperPool) get(c *Cred) (*helper, error) {
	key := c.String()
	p.mu.Lock()
	if hs := p.idle[key]; len(hs) > 0 {
		h := hs[len(hs)-1]
		p.idle[key] = hs[:len(hs)-1]
		p.nIdle--
		p.mu.Unlock()
		return h, nil
	}
	p.spawned++
	p.mu.Unlock()
	return spawnHelper(c)
}

// put returns h to the pool.
func (p *helperPool) put(h *helper) {
	p.mu.Lock()
	p.clock++
	h.stamp = p.clock
	p.idle[h.key] = append(p.idle[h.key], h)
	p.nIdle++
	var evict *helper
	if p.nIdle > maxIdleHelpers {
		for _, hs := range p.idle {
			for _, x := range hs {
				if evict == nil || x.stamp < evict.stamp {
					evict = x
				}
			}
		}
		hs := p.idle[evict.key]
		for i, x := range hs {
			if x == evict {
				p.idle[evict.key] = append(hs[:i:i], hs[i+1:]...)
				break
			}
		}
		p.nIdle--
	}
	p.mu.Unlock()
	if evict != nil {
		evict.close()
	}
}

// started is how many helpers were started.
func (p *helperPool) started() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.spawned
}

// closeAll ends every idle helper.
func (p *helperPool) closeAll() {
	p.mu.Lock()
	var all []*helper
	for _, hs := range p.idle {
		all = append(all, hs...)
	}
	p.idle, p.nIdle = map[string][]*helper{}, 0
	p.mu.Unlock()
	for _, h := range all {
		h.close()
	}
}

func (h *helper) close() {
	h.in.Close() // the helper ends at EOF
	h.cmd.Wait()
}

// kill ends a helper that may be stuck or out of step.
func (h *helper) kill() {
	h.cmd.Process.Kill()
	h.in.Close()
	h.cmd.Wait()
}

func spawnHelper(c *Cred) (*helper, error) {
	// /proc/self/exe is opened without searching the directories above
	// the test binary (go test's work dir is private to root).
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), "DIFFTEST_HELPER=1", "GOMAXPROCS=1")
	cmd.Dir = "/"
	cmd.Stderr = os.Stderr
	groups := make([]uint32, len(c.Groups))
	for i, g := range c.Groups {
		groups[i] = uint32(g)
	}
	// No Pdeathsig: it fires when the thread that started the helper
	// ends, which the Go runtime may do. A helper ends at EOF on its
	// stdin instead, which the tester's death gives it too.
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(c.Uid), Gid: uint32(c.Gid), Groups: groups},
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("helper as %s: %w", c, err)
	}
	h := &helper{key: c.String(), cmd: cmd, in: in, enc: json.NewEncoder(in), dec: json.NewDecoder(bufio.NewReader(out))}
	var hello helperHello
	if err := h.dec.Decode(&hello); err != nil {
		h.kill()
		return nil, fmt.Errorf("helper as %s: %w", c, err)
	}
	want := append([]int{}, c.Groups...)
	sort.Ints(hello.Groups)
	if hello.Err != "" || hello.Uid != c.Uid || hello.Euid != c.Uid || hello.Gid != c.Gid || hello.Egid != c.Gid || fmt.Sprint(hello.Groups) != fmt.Sprint(want) {
		h.kill()
		return nil, fmt.Errorf("helper as %s runs as %+v", c, hello)
	}
	return h, nil
}

// do runs o on the mount at mnt in the helper.
func (h *helper) do(mnt string, o Op, umask int) (Result, error) {
	if err := h.enc.Encode(helperReq{Root: mnt, Op: o, Umask: umask}); err != nil {
		return Result{}, fmt.Errorf("helper %s: %w", h.key, err)
	}
	var resp helperResp
	if err := h.dec.Decode(&resp); err != nil {
		return Result{}, fmt.Errorf("helper %s: %w", h.key, err)
	}
	r := Result{Errno: syscall.Errno(resp.Errno), Out: resp.Out}
	if resp.Root {
		r.Out = "(opening the mount root)"
	}
	return r, nil
}

// helperMain is the helper process: it serves requests on stdin until
// EOF. It runs in place of the tests (TestMain), as its credential.
func helperMain() int {
	enc := json.NewEncoder(os.Stdout)
	var hello helperHello
	r, e, _ := unix.Getresuid()
	hello.Uid, hello.Euid = r, e
	r, e, _ = unix.Getresgid()
	hello.Gid, hello.Egid = r, e
	gs, err := unix.Getgroups()
	if err != nil {
		hello.Err = err.Error()
	}
	hello.Groups = gs
	if err := enc.Encode(hello); err != nil {
		return 1
	}
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	for {
		var req helperReq
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return 0
			}
			fmt.Fprintf(os.Stderr, "difftest helper: %v\n", err)
			return 1
		}
		unix.Umask(req.Umask)
		var resp helperResp
		root, err := openRoot(req.Root)
		if err != nil {
			resp.Errno, resp.Root = int(toErrno(err)), true
		} else {
			res := Apply(root, req.Op)
			unix.Close(root)
			resp.Errno, resp.Out = int(res.Errno), res.Out
		}
		if err := enc.Encode(resp); err != nil {
			return 1
		}
	}
}

// traversable lets every user search the directories from dir up to the
// temp dir (os.MkdirTemp makes them 0700), so that helpers reach the
// mount points below dir.
func traversable(dir string) error {
	stop := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); d != "/" && d != stop && d != "."; d = filepath.Dir(d) {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err != nil {
			return err
		}
		if st.Mode&0o055 != 0o055 {
			if err := unix.Chmod(d, st.Mode&0o7777|0o055); err != nil {
				return err
			}
		}
	}
	return nil
}
