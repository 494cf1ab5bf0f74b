package test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// -V prints the version lines in fuse-overlayfs's form.
func TestVersionLines(t *testing.T) {
	r := run(t, binary, "-V")
	assert.Equal(t, 0, r.code)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if assert.Len(t, lines, 3, r.stdout) {
		assert.Regexp(t, `^layerfs: version \S+$`, lines[0])
		assert.Regexp(t, `^FUSE library: go-fuse v\d+\.\d+\.\d+`, lines[1])
		assert.Regexp(t, `^using FUSE kernel interface version 7\.\d+$`, lines[2])
	}
}

// Under systemd (Type=notify) a foreground server says READY=1 on
// NOTIFY_SOCKET once the mount is live; -o debug is -d: it stays in the
// foreground and logs requests to stderr.
func TestNotifyReadyAndDebugOption(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 1)
	writeFile(t, filepath.Join(tr.lowers[0], "f"), "x")
	sock := filepath.Join(tr.root, "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cleanupMount(t, tr.mnt)
	cmd := exec.Command(binary, "--driver=fuse", "-o", tr.opts()+",debug", tr.mnt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	l.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, err := l.Read(buf)
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("no notification: %v (stderr %s)", err, stderr.String())
	}
	assert.Contains(t, string(buf[:n]), "READY=1")
	assert.True(t, isMounted(tr.mnt), "READY before the mount was live")
	assert.Equal(t, "x", readFile(t, filepath.Join(tr.mnt, "f")))
	select {
	case err := <-done:
		t.Fatalf("-o debug did not stay in the foreground: %v", err)
	default:
	}
	tr.unmount(t)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("server still running after unmount")
	}
	assert.Contains(t, stderr.String(), "LOOKUP", "debug log of requests")
}

// Under the name fuse-overlayfs (Docker's fuse-overlayfs driver runs that
// from its PATH and wants a FUSE mount) layerfs serves FUSE by default,
// where --driver=auto would defer to kernel overlay as root.
func TestNamedFuseOverlayfsServesFUSE(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 1)
	writeFile(t, filepath.Join(tr.lowers[0], "f"), "x")
	alias := filepath.Join(tr.root, "fuse-overlayfs")
	if err := os.Symlink(binary, alias); err != nil {
		t.Fatal(err)
	}
	cleanupMount(t, tr.mnt)
	r := run(t, alias, "-o", tr.opts(), tr.mnt)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	assert.Contains(t, mountLine(t, tr.mnt), " fuse.layerfs ")
	tr.unmount(t)
}

// mountLine returns the /proc/mounts line of mountpoint p.
func mountLine(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 2 && unescapeMount(f[1]) == p {
			return line
		}
	}
	t.Fatalf("%s is not mounted", p)
	return ""
}
