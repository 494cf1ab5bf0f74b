package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The permission tests make system calls as other users through a
// helper: this test binary, copied where every user may run it and
// started again with the user's credentials (uid, gid and supplementary
// groups, no setpriv needed). It reads the calls as JSON on stdin and
// writes one result per call as JSON on stdout.

// permHelperEnv, set to 1, makes the test binary the helper.
const permHelperEnv = "LAYERFS_PERM_HELPER"

func init() {
	if os.Getenv(permHelperEnv) == "1" {
		os.Exit(permHelperMain())
	}
}

// permOp is one call. Paths are relative to the request's root (a mount
// point); the umask is set before every call.
type permOp struct {
	Op    string   `json:"op"`
	Path  string   `json:"path,omitempty"`
	Path2 string   `json:"path2,omitempty"`
	Mode  uint32   `json:"mode,omitempty"`
	Umask int      `json:"umask"`
	UID   int      `json:"uid,omitempty"`
	GID   int      `json:"gid,omitempty"`
	Name  string   `json:"name,omitempty"`  // xattr name
	Value string   `json:"value,omitempty"` // xattr value, data to write
	Sec   int64    `json:"sec,omitempty"`   // explicit times: atime Sec, mtime Sec+1
	Args  []string `json:"args,omitempty"`  // run: a command, $M is the root
}

type permReq struct {
	Root string   `json:"root"`
	Ops  []permOp `json:"ops"`
}

// permOut is a call's result: "OK", an errno name ("EACCES"), or for run
// "exit N"; Out is what a read read, how an exec ended, what run printed.
type permOut struct {
	Err string `json:"err"`
	Out string `json:"out,omitempty"`
}

func permHelperMain() int {
	var req permReq
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "perm helper:", err)
		return 2
	}
	outs := make([]permOut, len(req.Ops))
	for i, o := range req.Ops {
		outs[i] = permDo(req.Root, o)
	}
	if err := json.NewEncoder(os.Stdout).Encode(outs); err != nil {
		fmt.Fprintln(os.Stderr, "perm helper:", err)
		return 2
	}
	return 0
}

func permErr(err error) string {
	if err == nil {
		return "OK"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
	}
	return err.Error()
}

// permDo makes one call as the helper's user.
func permDo(root string, o permOp) permOut {
	syscall.Umask(o.Umask)
	p, p2 := filepath.Join(root, o.Path), filepath.Join(root, o.Path2)
	now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	times := []unix.Timespec{{Sec: o.Sec}, {Sec: o.Sec + 1}}
	var err error
	out := ""
	switch o.Op {
	case "read":
		var b []byte
		b, err = os.ReadFile(p)
		out = string(b)
	case "readdir":
		var ents []os.DirEntry
		ents, err = os.ReadDir(p)
		for _, e := range ents {
			out += e.Name() + " "
		}
	case "write":
		var f *os.File
		if f, err = os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			_, err = f.WriteString(o.Value)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	case "exec":
		cmd := exec.Command(p)
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		err = cmd.Run()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			out, err = fmt.Sprintf("exit %d", ee.ExitCode()), nil
		case err == nil:
			out = "exit 0"
		}
	case "creat":
		var fd int
		if fd, err = unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, o.Mode); err == nil {
			unix.Close(fd)
		}
	case "mkdir":
		err = unix.Mkdir(p, o.Mode)
	case "rmdir":
		err = unix.Rmdir(p)
	case "unlink":
		err = unix.Unlink(p)
	case "rename":
		err = unix.Rename(p, p2)
	case "chmod":
		err = unix.Chmod(p, o.Mode)
	case "chown":
		err = unix.Chown(p, o.UID, o.GID)
	case "lchown":
		err = unix.Lchown(p, o.UID, o.GID)
	case "setxattr":
		err = unix.Setxattr(p, o.Name, []byte(o.Value), 0)
	case "lsetxattr":
		err = unix.Lsetxattr(p, o.Name, []byte(o.Value), 0)
	case "utimes":
		err = unix.UtimesNanoAt(unix.AT_FDCWD, p, times, 0)
	case "lutimes":
		err = unix.UtimesNanoAt(unix.AT_FDCWD, p, times, unix.AT_SYMLINK_NOFOLLOW)
	case "touch": // both UTIME_NOW: the permission rule of utimes(NULL)
		err = unix.UtimesNanoAt(unix.AT_FDCWD, p, now, 0)
	case "ltouch":
		err = unix.UtimesNanoAt(unix.AT_FDCWD, p, now, unix.AT_SYMLINK_NOFOLLOW)
	case "truncate":
		err = unix.Truncate(p, 4)
	case "lstat": // as the caller sees it; Name "mtime" adds the mtime
		var st unix.Stat_t
		if err = unix.Lstat(p, &st); err == nil {
			out = fmt.Sprintf("mode=%o uid=%d gid=%d size=%d", st.Mode, st.Uid, st.Gid, st.Size)
			if o.Name == "mtime" {
				out += fmt.Sprintf(" mtime=%d", st.Mtim.Sec)
			}
		}
	case "run":
		args := make([]string, len(o.Args))
		for i, a := range o.Args {
			args[i] = strings.ReplaceAll(a, "$M", root)
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = root
		b, rerr := cmd.CombinedOutput()
		out = strings.ReplaceAll(string(b), root, "$M")
		var ee *exec.ExitError
		if errors.As(rerr, &ee) {
			return permOut{Err: fmt.Sprintf("exit %d", ee.ExitCode()), Out: out}
		}
		err = rerr
	default:
		err = fmt.Errorf("unknown op %q", o.Op)
	}
	return permOut{Err: permErr(err), Out: out}
}

// permUser is whom a call is made as.
type permUser struct {
	name     string
	uid, gid int
	groups   []uint32
}

// The ids of the permission tests, numeric only (no names needed). Files
// under test belong to owner:1002 (permFileUID:permFileGID); member is in
// that group; other is not; every user but root and stranger is in
// permSharedGID; nobody is permForeignUID. In the ACL tests other is the
// named user of the ACLs and stranger an unnamed one.
var (
	permRoot     = permUser{"root", 0, 0, []uint32{0}}
	permOwner    = permUser{"owner", 1001, 1001, []uint32{1001, 1005}}
	permMember   = permUser{"member", 1002, 1002, []uint32{1002, 1005}}
	permOther    = permUser{"other", 1003, 1003, []uint32{1003, 1005}}
	permStranger = permUser{"stranger", 1004, 1004, []uint32{1004}}
)

const (
	permFileUID    = 1001
	permFileGID    = 1002
	permSharedGID  = 1005
	permForeignUID = 1006
)

var permHelper struct {
	once sync.Once
	path string
	err  error
}

// permHelperPath copies the test binary next to the layerfs binary (a
// directory every user may enter) once.
func permHelperPath(t *testing.T) string {
	t.Helper()
	permHelper.once.Do(func() {
		exe, err := os.Executable()
		if err != nil {
			permHelper.err = err
			return
		}
		b, err := os.ReadFile(exe)
		if err != nil {
			permHelper.err = err
			return
		}
		dst := filepath.Join(filepath.Dir(binary), "perm-helper")
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			permHelper.err = err
			return
		}
		permHelper.path = dst
	})
	if permHelper.err != nil {
		t.Fatalf("perm helper: %v", permHelper.err)
	}
	return permHelper.path
}

// permHelperCmd is the helper as u, reading req (root and ops) on stdin.
func permHelperCmd(t *testing.T, u permUser, req permReq) *exec.Cmd {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(permHelperPath(t))
	cmd.Env = append(permHelperEnviron(), permHelperEnv+"=1")
	cmd.Dir = "/"
	cmd.Stdin = bytes.NewReader(b)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: u.groups,
	}}
	return cmd
}

// permHelperEnviron is the helper's environment: a PATH, and no
// second's sleep at exit when it is built with the race detector.
func permHelperEnviron() []string {
	return []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GORACE=atexit_sleep_ms=0"}
}

// permAs makes the calls ops, relative to root, as u, in one process.
func permAs(t *testing.T, u permUser, root string, ops []permOp) []permOut {
	t.Helper()
	if len(ops) == 0 {
		return nil
	}
	r := runCmd(t, permHelperCmd(t, u, permReq{Root: root, Ops: ops}))
	if r.code != 0 {
		t.Fatalf("perm helper as %s exited %d: %s", u.name, r.code, r.stderr)
	}
	var outs []permOut
	if err := json.Unmarshal([]byte(r.stdout), &outs); err != nil || len(outs) != len(ops) {
		t.Fatalf("perm helper as %s: %d results for %d calls (%v): %s", u.name, len(outs), len(ops), err, r.stderr)
	}
	return outs
}

// permSide is one union of a comparison: kernel overlay or layerfs, over
// layers built the same way.
type permSide struct {
	name string // "kernel" or "layerfs"
	tr   *tree
	opts []string // layerfs's extra arguments
}

// permKernelOpts are the features layerfs has on by default
// (docs/compat.md), for the kernel it is compared with.
const permKernelOpts = "redirect_dir=on,metacopy=on,index=on"

// permPair builds two unions with build (lower dir, upper dir), reachable
// by every test user, and mounts one with kernel overlay and one with
// layerfs (default options as root, so allow_other, plus layerfsOpts).
func permPair(t *testing.T, build func(lower, upper string), layerfsOpts ...string) []*permSide {
	t.Helper()
	needRoot(t)
	sides := []*permSide{{name: "kernel"}, {name: "layerfs", opts: layerfsOpts}}
	for _, s := range sides {
		s.tr = permTree(t)
		build(s.tr.lowers[0], s.tr.upper)
		s.mount(t)
	}
	return sides
}

// permTree is a one-lower tree every test user may walk into.
func permTree(t *testing.T) *tree {
	t.Helper()
	tr := newTree(t, 1)
	for _, p := range []string{filepath.Dir(tr.root), tr.root} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func (s *permSide) mount(t *testing.T) {
	t.Helper()
	if s.name == "kernel" {
		cvKernelMountOpts(t, s.tr, permKernelOpts)
		return
	}
	s.tr.mount(t, s.opts...)
}

// permCase is some calls as one user, and what to describe after all the
// cases of a run ran: entries (relative to the mount; a directory with
// everything in it) and entries whose mtime counts too.
type permCase struct {
	name  string
	user  permUser
	ops   []permOp
	view  []string
	mtime []string
}

// permRun runs the cases on every side, the cases of one user in one
// process, users in the order they first appear and a user's cases in
// order, then describes each case's results and views. It returns the
// descriptions per side, per case.
func permRun(t *testing.T, sides []*permSide, cases []permCase) [][]string {
	t.Helper()
	var users []permUser
	seen := map[string]bool{}
	for _, c := range cases {
		if !seen[c.user.name] {
			seen[c.user.name] = true
			users = append(users, c.user)
		}
	}
	res := make([][]string, len(sides))
	for si, s := range sides {
		outs := make([][]permOut, len(cases))
		for _, u := range users {
			var ops []permOp
			for _, c := range cases {
				if c.user.name == u.name {
					ops = append(ops, c.ops...)
				}
			}
			all := permAs(t, u, s.tr.mnt, ops)
			for ci, c := range cases {
				if c.user.name == u.name {
					outs[ci], all = all[:len(c.ops)], all[len(c.ops):]
				}
			}
		}
		res[si] = make([]string, len(cases))
		for ci, c := range cases {
			res[si][ci] = permDescribe(t, s.tr.mnt, c, outs[ci])
		}
	}
	return res
}

// permDescribe says what a case's calls answered and what its views show.
func permDescribe(t *testing.T, mnt string, c permCase, outs []permOut) string {
	t.Helper()
	var b strings.Builder
	for i, o := range c.ops {
		fmt.Fprintf(&b, "%s=%s", o.Op, outs[i].Err)
		if outs[i].Out != "" {
			fmt.Fprintf(&b, "(%q)", outs[i].Out)
		}
		b.WriteString(" ")
	}
	for _, v := range c.view {
		fmt.Fprintf(&b, "\n    %s: %s", v, permView(t, filepath.Join(mnt, v)))
	}
	for _, v := range c.mtime {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, v), &st); err != nil {
			fmt.Fprintf(&b, "\n    %s mtime: %v", v, err)
		} else {
			fmt.Fprintf(&b, "\n    %s mtime: %d.%09d", v, st.Mtim.Sec, st.Mtim.Nsec)
		}
	}
	return b.String()
}

// permView describes p and everything under it (treeView with every
// xattr: ACLs and file capabilities count), or says it is absent.
func permView(t *testing.T, p string) string {
	t.Helper()
	if _, err := os.Lstat(p); err != nil {
		return "absent"
	}
	v := treeView(t, p, viewOpts{allXattr: true})
	return permPrintable(strings.ReplaceAll(v, "\n", "\n      "))
}

// permPrintable escapes the bytes of binary xattr values.
func permPrintable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\n' || c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}

// permCompare fails the test for every case whose description differs
// between the kernel (res[0]) and layerfs (res[1]), showing the first
// ones in full and how many there are per group (the case name up to
// its last dot, which names the user). It returns how many differ.
func permCompare(t *testing.T, what string, cases []permCase, res [][]string) int {
	t.Helper()
	const show = 25
	n := 0
	groups := map[string]int{}
	for i, c := range cases {
		if res[0][i] == res[1][i] {
			continue
		}
		n++
		g := c.name
		if j := strings.Index(g, "."); j >= 0 {
			g = g[j+1:] // drop the directory kind: differences repeat across kinds
		}
		groups[g]++
		if n <= show {
			t.Errorf("%s: %s as %s differs\n  kernel:  %s\n  layerfs: %s", what, c.name, c.user.name, res[0][i], res[1][i])
		}
	}
	if n > 0 {
		var gs []string
		for g, k := range groups {
			gs = append(gs, fmt.Sprintf("  %s (%d)", g, k))
		}
		sort.Strings(gs)
		t.Errorf("%s: %d of %d cases differ from kernel overlay (%d shown); by case without its directory kind:\n%s",
			what, n, len(cases), min(n, show), strings.Join(gs, "\n"))
	}
	return n
}

// permMkdir makes a directory with an owner and mode (chmod after chown,
// which may clear setgid).
func permMkdir(t *testing.T, p string, mode uint32, uid, gid int) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	permOwn(t, p, mode, uid, gid)
}

// permMkfile makes a file with content, owner and mode.
func permMkfile(t *testing.T, p, content string, mode uint32, uid, gid int) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	permOwn(t, p, mode, uid, gid)
}

func permOwn(t *testing.T, p string, mode uint32, uid, gid int) {
	t.Helper()
	if err := os.Lchown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(p, mode); err != nil { // os.Chmod drops raw setuid bits
		t.Fatal(err)
	}
	permSetTimes(t, p)
}

// permSetTimes gives a built entry (not following a symlink) the same
// times in every tree, so that times that did not change compare equal.
func permSetTimes(t *testing.T, p string) {
	t.Helper()
	ts := []unix.Timespec{{Sec: 1_500_000_000}, {Sec: 1_500_000_000}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

// permMust runs a command as root and fails the test if it fails.
func permMust(t *testing.T, name string, args ...string) string {
	t.Helper()
	r := run(t, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d: %s", name, strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// needTool is needCmd with the Debian package that has the command.
func needTool(t *testing.T, name, pkg string) {
	t.Helper()
	_, err := exec.LookPath(name)
	require(t, err == nil, name+" (apt-get install -y "+pkg+")")
}
