package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/layerfs/layerfs/unionfs/layout"
	"golang.org/x/sys/unix"
)

// mount is one live union mount made by the harness.
type mount struct {
	kind   string // contender name
	dir    string // mountpoint, absolute
	fuse   bool
	pid    int    // FUSE server, 0 if unknown or not FUSE
	fstype string // as mountinfo says, e.g. overlay or fuse.layerfs

	once sync.Once
	err  error
	warn []string
}

// active holds every mount not yet unmounted, for cleanup on a signal.
var active = struct {
	sync.Mutex
	m map[string]*mount
}{m: map[string]*mount{}}

func register(m *mount) {
	active.Lock()
	active.m[m.dir] = m
	active.Unlock()
}

func unregister(m *mount) {
	active.Lock()
	delete(active.m, m.dir)
	active.Unlock()
}

// unmountAllActive detaches every mount still registered.
func unmountAllActive() {
	active.Lock()
	var ms []*mount
	for _, m := range active.m {
		ms = append(ms, m)
	}
	active.Unlock()
	for _, m := range ms {
		m.unmount()
	}
}

// KernelFeatures are the kernel overlay options the kernel contender is
// mounted with.
const KernelFeatures = "redirect_dir=on,metacopy=on"

// mountUnion mounts lowers (top first), upper and work at mnt with the
// given contender.
func (b *bench) mountUnion(ctx context.Context, kind string, lowers []string, upper, work, mnt, logPath string) (*mount, error) {
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lowers, ":"), upper, work)
	m := &mount{kind: kind, dir: mnt}
	switch kind {
	case cKernel:
		// With the features layerfs has (and uses as its kernel driver),
		// so both do the same work: O(1) directory renames, metadata-only
		// copy-up.
		if err := unix.Mount("overlay", mnt, "overlay", 0, opts+","+KernelFeatures); err != nil {
			return nil, fmt.Errorf("mount -t overlay: %w", err)
		}
		m.fstype = fsType(mnt)
		register(m)
		return m, nil
	case cLayer, cLayerPT, cLayerBase, cFuseOv:
		bin, args := b.layerfs, append([]string(nil), b.layerfsArgs...)
		if kind == cLayerPT {
			args = append(args, "-o", "passthrough")
		}
		if kind == cLayerBase {
			bin, args = b.baseline, append([]string(nil), b.baseArgs...)
		}
		if kind == cFuseOv {
			bin, args = b.fuseOv, nil
		}
		logf, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		defer logf.Close()
		mctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		// Output goes to a file, not a pipe: a daemon that kept a pipe
		// open would make us wait forever.
		cmd := exec.CommandContext(mctx, bin, append(args, "-o", opts, mnt)...)
		cmd.Stdout, cmd.Stderr = logf, logf
		runErr := cmd.Run()
		m.fstype = fsType(mnt)
		mounted := m.fstype != ""
		if mounted {
			// Register before anything else can fail.
			m.fuse = strings.HasPrefix(m.fstype, "fuse")
			if m.fuse {
				m.pid = findServerPID(mnt)
			}
			register(m)
		}
		if runErr != nil || !mounted {
			out, _ := os.ReadFile(logPath)
			msg := strings.TrimSpace(lastLines(string(out), 3))
			if runErr == nil {
				runErr = errors.New("exited 0 but nothing is mounted")
			}
			if mounted {
				m.unmount()
			}
			return nil, fmt.Errorf("%s mount: %v %s", kind, runErr, msg)
		}
		return m, nil
	}
	return nil, fmt.Errorf("cannot mount contender %q", kind)
}

// peakRSS is the FUSE server's VmHWM in KiB (0 when unknown).
func (m *mount) peakRSS() int64 {
	if m == nil || m.pid == 0 {
		return 0
	}
	return procStatusKiB(m.pid, "VmHWM")
}

// requests are the FUSE requests a layerfs server has counted by kind
// since it mounted (nil for other mounts, and on a nil mount). Reading
// them is one GETXATTR request itself.
func (m *mount) requests() map[string]uint64 {
	if m == nil || m.fstype != "fuse.layerfs" {
		return nil
	}
	d, err := layout.Describe(m.dir)
	if err != nil || d.Stats == nil {
		return nil
	}
	return d.Stats.Requests
}

// requestsSince are the requests counted between two readings, without
// the GETXATTR that took the second one.
func requestsSince(before, after map[string]uint64) map[string]uint64 {
	if before == nil || after == nil {
		return nil
	}
	out := map[string]uint64{}
	for op, n := range after {
		if n -= before[op]; op == "GETXATTR" && n > 0 {
			n--
		}
		if n > 0 {
			out[op] = n
		}
	}
	return out
}

// abort ends a hung FUSE server so that requests blocked on it fail.
func (m *mount) abort() {
	if m != nil && m.fuse && m.pid > 0 {
		syscall.Kill(m.pid, syscall.SIGKILL)
	}
}

// unmount unmounts politely, then forcefully, then lazily; for FUSE it
// also waits for the server to exit (killing it after a minute). It
// returns an error only when the mount could not be removed at all;
// slower troubles (a lazy detach, a server slow to exit) are in m.warn.
func (m *mount) unmount() error {
	m.once.Do(func() {
		defer unregister(m)
		if m.fuse {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			exec.CommandContext(ctx, "fusermount3", "-u", m.dir).Run()
			cancel()
		}
		for i := 0; i < 5 && isMounted(m.dir); i++ {
			err := unix.Unmount(m.dir, 0)
			if err == nil || errors.Is(err, unix.EINVAL) {
				continue
			}
			time.Sleep(200 * time.Millisecond)
		}
		if isMounted(m.dir) {
			if err := unix.Unmount(m.dir, unix.MNT_DETACH); err != nil {
				m.err = fmt.Errorf("unmount %s: %w", m.dir, err)
			} else {
				m.warn = append(m.warn, "mount was busy; detached lazily")
			}
		}
		if m.fuse && m.pid > 0 {
			start := time.Now()
			if !waitExit(m.pid, 15*time.Second) {
				threads := threadStates(m.pid)
				if holders := otherNamespaceHolders(m.dir); holders != "" {
					threads += "; still mounted in other mount namespaces: " + holders
				}
				if waitExit(m.pid, 45*time.Second) {
					m.warn = append(m.warn, fmt.Sprintf("server exited only %.0fs after unmount (threads at 15s: %s)", time.Since(start).Seconds(), threads))
				} else {
					syscall.Kill(m.pid, syscall.SIGKILL)
					waitExit(m.pid, 5*time.Second)
					m.warn = append(m.warn, fmt.Sprintf("server did not exit within 60s of unmount; killed (threads at 15s: %s)", threads))
				}
			}
		}
	})
	return m.err
}

// otherNamespaceHolders names processes in other mount namespaces that
// still have dir mounted (a namespace copied while the mount was live keeps
// it, and its FUSE server, alive after we unmount).
func otherNamespaceHolders(dir string) string {
	self, _ := os.Readlink("/proc/self/ns/mnt")
	seen := map[string]bool{self: true}
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		ns, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt")
		if err != nil || seen[ns] {
			continue
		}
		seen[ns] = true
		raw, err := os.ReadFile("/proc/" + e.Name() + "/mountinfo")
		if err != nil || !strings.Contains(string(raw), " "+dir+" ") {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		out = append(out, fmt.Sprintf("pid %s (%s)", e.Name(), strings.TrimSpace(string(comm))))
		if len(out) == 3 {
			break
		}
	}
	return strings.Join(out, ", ")
}

// threadStates summarises where a process's threads wait, from
// /proc/PID/task/*/{stat,wchan}: e.g. "7×S futex_wait_queue, 1×D folio_wait_bit".
func threadStates(pid int) string {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return "gone"
	}
	counts := map[string]int{}
	var keys []string
	for _, t := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s/", pid, t.Name())
		st, err := os.ReadFile(dir + "stat")
		if err != nil {
			continue
		}
		state := "?"
		if i := bytes.LastIndexByte(st, ')'); i >= 0 && i+2 < len(st) {
			state = string(st[i+2])
		}
		wchan, _ := os.ReadFile(dir + "wchan")
		k := state + " " + strings.TrimSpace(string(wchan))
		if counts[k] == 0 {
			keys = append(keys, k)
		}
		counts[k]++
	}
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d×%s", counts[k], k))
	}
	return strings.Join(parts, ", ")
}

// waitExit waits until pid is gone or a zombie.
func waitExit(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		// The state follows the ")" that closes the command name.
		if i := bytes.LastIndexByte(st, ')'); i >= 0 && i+2 < len(st) && st[i+2] == 'Z' {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mountPoints lists the mount points in /proc/self/mountinfo.
func mountPoints() []string {
	ms, _ := layout.ReadMountInfo()
	var out []string
	for _, m := range ms {
		out = append(out, m.Mountpoint)
	}
	return out
}

// fsType is the type of the filesystem mounted at dir (the last mount
// there wins), "" if none.
func fsType(dir string) string {
	ms, _ := layout.ReadMountInfo()
	t := ""
	for _, m := range ms {
		if m.Mountpoint == dir {
			t = m.FSType
		}
	}
	return t
}

func isMounted(dir string) bool {
	for _, mp := range mountPoints() {
		if mp == dir {
			return true
		}
	}
	return false
}

// findServerPID finds the process serving a FUSE mount: the one (other
// than us) that has the mountpoint among its arguments.
func findServerPID(mnt string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(raw), "\x00") {
			if arg == mnt {
				return pid
			}
		}
	}
	return 0
}

// procStatusKiB reads a "Name:   123 kB" line of /proc/PID/status.
func procStatusKiB(pid int, name string) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != name {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		return n
	}
	return 0
}

// cleanStale detaches mounts left under runsDir by an earlier run that
// died, and removes its scratch directories.
func cleanStale(runsDir string) {
	prefix := runsDir + string(filepath.Separator)
	for _, mp := range mountPoints() {
		if strings.HasPrefix(mp, prefix) {
			logf("detaching stale mount %s", mp)
			if pid := findServerPID(mp); pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			unix.Unmount(mp, unix.MNT_DETACH)
		}
	}
	removeIfUnmounted(runsDir)
}

// removeIfUnmounted removes dir unless something is still mounted under it
// (removing through a live union would only write whiteouts, but a stray
// bind mount could point anywhere).
func removeIfUnmounted(dir string) {
	prefix := dir + string(filepath.Separator)
	for _, mp := range mountPoints() {
		if mp == dir || strings.HasPrefix(mp, prefix) {
			logf("not removing %s: %s is still mounted", dir, mp)
			return
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		logf("removing %s: %v", dir, err)
	}
}

// ensureFuseOverlayfs finds fuse-overlayfs, installing the Debian package
// if it is missing.
func ensureFuseOverlayfs() (string, error) {
	if p, err := exec.LookPath("fuse-overlayfs"); err == nil {
		return p, nil
	}
	logf("fuse-overlayfs not found; apt-get install -y fuse-overlayfs")
	if err := aptInstall("fuse-overlayfs"); err != nil {
		return "", err
	}
	return exec.LookPath("fuse-overlayfs")
}

// aptInstall installs Debian packages, updating the package lists first
// only when an install from the current ones fails.
func aptInstall(pkgs ...string) error {
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	install := func() error {
		cmd := exec.Command("apt-get", append([]string{"install", "-y", "-q"}, pkgs...)...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env, os.Stderr, os.Stderr
		return cmd.Run()
	}
	if install() == nil {
		return nil
	}
	upd := exec.Command("apt-get", "update", "-q")
	upd.Env, upd.Stdout, upd.Stderr = env, os.Stderr, os.Stderr
	upd.Run()
	if err := install(); err != nil {
		return fmt.Errorf("apt-get install %s: %w", strings.Join(pkgs, " "), err)
	}
	return nil
}

// cmdRun runs a command with LC_ALL=C plus extra environment, stdout to
// w (nil: /dev/null), and returns an error that quotes the end of stderr.
// okCodes lists exit codes besides 0 that count as success.
func cmdRun(ctx context.Context, dir string, env []string, w io.Writer, name string, args ...string) error {
	return cmdRunCodes(ctx, dir, env, w, nil, name, args...)
}

func cmdRunCodes(ctx context.Context, dir string, env []string, w io.Writer, okCodes []int, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "LC_ALL=C"), env...)
	cmd.Stdout = w
	var stderr tailBuffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		for _, c := range okCodes {
			if ee.ExitCode() == c {
				return nil
			}
		}
	}
	msg := strings.TrimSpace(lastLines(stderr.String(), 2))
	if msg != "" {
		return fmt.Errorf("%s: %v: %s", name, err, msg)
	}
	return fmt.Errorf("%s: %v", name, err)
}

// tailBuffer keeps the last few KiB written to it.
type tailBuffer struct{ b []byte }

const tailKeep = 4096

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2*tailKeep {
		t.b = append(t.b[:0], t.b[len(t.b)-tailKeep:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:300] + "..."
		}
	}
	return strings.Join(lines, " | ")
}
