// Command containerd-layerfs-grpc is a containerd proxy snapshotter that
// serves container root filesystems with layerfs: containerd's overlay
// snapshotter, whose kernel overlay mounts are handed out as
// fuse3.layerfs mounts (containerd runs them through mount.fuse3).
//
//	containerd-layerfs-grpc [flags] SOCKET ROOT
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/pkg/userns"
	"github.com/containerd/containerd/snapshots/overlay"
	flag "github.com/spf13/pflag"
	"google.golang.org/grpc"
)

var version = "0.1.0"

const usage = `containerd-layerfs-grpc: a containerd snapshotter whose mounts layerfs serves

Usage:
  containerd-layerfs-grpc [flags] SOCKET ROOT

SOCKET is the unix socket containerd's [proxy_plugins] entry names; ROOT
holds the snapshots (the layout of containerd's overlay snapshotter).
containerd runs the mounts with mount.fuse3, which needs layerfs on the
PATH of containerd and of its shims.

Flags:
`

type config struct {
	socket, root string
	driver       string
	asyncRemove  bool
	userxattr    string
}

// exitError carries an exit status and a one-line message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func parseArgs(args []string, stderr io.Writer) (*config, error) {
	fl := flag.NewFlagSet("containerd-layerfs-grpc", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	var c config
	var showVersion bool
	fl.StringVar(&c.driver, "driver", "fuse", "layerfs driver= for each mount: fuse (always a FUSE mount), auto (kernel overlay where layerfs finds it can serve), kernel, or \"\" for layerfs's default")
	fl.BoolVar(&c.asyncRemove, "async-remove", true, "remove snapshot directories in containerd's Cleanup call rather than in Remove")
	fl.StringVar(&c.userxattr, "userxattr", "auto", "store overlay xattrs as user.overlay.* rather than trusted.overlay.*: on, or auto (on inside a user namespace, where trusted.* is out of reach)")
	fl.BoolVarP(&showVersion, "version", "V", false, "print the version")
	fl.Usage = func() {
		fmt.Fprint(stderr, usage)
		fl.SetOutput(stderr)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fl.Usage()
			return nil, &exitError{0, ""}
		}
		return nil, &exitError{2, err.Error()}
	}
	if showVersion {
		fmt.Fprintf(os.Stdout, "containerd-layerfs-grpc %s\n", version)
		return nil, &exitError{0, ""}
	}
	switch c.driver {
	case "", "fuse", "auto", "kernel":
	default:
		return nil, &exitError{2, fmt.Sprintf("--driver=%s: want fuse, auto or kernel", c.driver)}
	}
	switch c.userxattr {
	case "on", "auto":
	default:
		return nil, &exitError{2, fmt.Sprintf("--userxattr=%s: want on or auto", c.userxattr)}
	}
	pos := fl.Args()
	if len(pos) != 2 {
		return nil, &exitError{2, fmt.Sprintf("want SOCKET and ROOT, got %d argument(s) (see --help)", len(pos))}
	}
	c.socket, c.root = pos[0], pos[1]
	if c.socket == "" || c.root == "" {
		return nil, &exitError{2, "SOCKET and ROOT must not be empty"}
	}
	return &c, nil
}

// overlayOptions are the options for containerd's overlay snapshotter.
// userxattr is decided here: left to itself, the overlay snapshotter
// mounts kernel overlay in a user namespace to find out.
func overlayOptions(c *config) []overlay.Opt {
	var opts []overlay.Opt
	if c.asyncRemove {
		opts = append(opts, overlay.AsynchronousRemove)
	}
	// Given "userxattr", the overlay snapshotter does not probe for it,
	// which in a user namespace it would do with a kernel overlay mount.
	// (It adds index=off where the kernel module has that parameter.)
	if c.userxattr == "on" || (c.userxattr == "auto" && userns.RunningInUserNS()) {
		opts = append(opts, overlay.WithMountOptions([]string{"userxattr"}))
	}
	return opts
}

func main() {
	c, err := parseArgs(os.Args[1:], os.Stderr)
	if err != nil {
		var ee *exitError
		errors.As(err, &ee)
		if ee.msg != "" {
			fmt.Fprintf(os.Stderr, "containerd-layerfs-grpc: %s\n", ee.msg)
		}
		os.Exit(ee.code)
	}
	if err := serve(c); err != nil {
		fmt.Fprintf(os.Stderr, "containerd-layerfs-grpc: %s\n", err)
		os.Exit(1)
	}
}

func serve(c *config) error {
	if _, err := exec.LookPath("layerfs"); err != nil {
		fmt.Fprintln(os.Stderr, "containerd-layerfs-grpc: warning: layerfs is not on PATH; containerd (mount.fuse3) needs it on its own PATH")
	}
	if _, err := exec.LookPath("mount.fuse3"); err != nil {
		fmt.Fprintln(os.Stderr, "containerd-layerfs-grpc: warning: mount.fuse3 is not on PATH (Debian: apt install fuse3); containerd needs it")
	}
	inner, err := overlay.NewSnapshotter(c.root, overlayOptions(c)...)
	if err != nil {
		return fmt.Errorf("snapshotter at %s: %w", c.root, err)
	}
	var extra []string
	if c.driver != "" {
		extra = []string{"driver=" + c.driver}
	}
	sn := &layerfsSnapshotter{Snapshotter: inner, extra: extra}
	defer sn.Close()

	l, err := listen(c.socket)
	if err != nil {
		return err
	}
	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- rpc.Serve(l) }()
	select {
	case err := <-done:
		os.Remove(c.socket)
		return err
	case <-sigs:
	}
	// Let calls in flight finish, for a while.
	stopped := make(chan struct{})
	go func() { rpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		rpc.Stop()
	}
	os.Remove(c.socket)
	return nil
}

// listen makes the socket's directory and replaces a stale socket, but not
// one a server still answers on.
func listen(socket string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o711); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(socket); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", socket)
		}
		if conn, err := net.DialTimeout("unix", socket, time.Second); err == nil {
			conn.Close()
			return nil, fmt.Errorf("%s: another server is listening there", socket)
		}
		if err := os.Remove(socket); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(socket, 0o660); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
