// Command layerfs mounts a union of directories with FUSE, as kernel
// overlayfs and fuse-overlayfs do, and accepts fuse-overlayfs's command
// line so container engines can use it as their mount_program.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/layerfs/layerfs/unionfs"
	"github.com/layerfs/layerfs/unionfs/driver"
	flag "github.com/spf13/pflag"
)

var version = "0.1.0"

const usage = `layerfs: a union (overlay) filesystem in userspace

Usage:
  layerfs -o lowerdir=L1:L2[,upperdir=U,workdir=W][,opts] MOUNTPOINT
  layerfs --lower L1 --lower L2 [--upper U --work W] MOUNTPOINT
  layerfs inspect|diff|export|check|vacuum ...   (layer tools; each has --help)

Lower dirs are read-only, the first is on top. Changes go to the upper dir;
the work dir (same filesystem as the upper) holds copies being made. Without
upper and work dirs the union is read-only.

Examples:
  layerfs -o lowerdir=/img/l1:/img/l2,upperdir=/c/upper,workdir=/c/work /c/merged
  layerfs --lower /srv/base --upper /tmp/u --work /tmp/w -f /tmp/merged
  fusermount3 -u /c/merged      # unmount (or: umount /c/merged as root)

Options (-o, comma separated, may repeat, before or after the mountpoint):
  lowerdir=A:B  upperdir=U  workdir=W  ro  fsync=0  volatile
  private (only the mounting user may enter; else every user may, as root
  and where /etc/fuse.conf has user_allow_other)  noacl
  Other fuse-overlayfs options are accepted; unknown ones are warned about.

Flags:
`

type cli struct {
	opts       unionfs.Options
	foreground bool
	verbose    bool
	driver     driver.Mode
	warnings   []string
}

// exitError carries an exit status: 2 for bad input, 1 for a failed mount.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func parseArgs(args []string, stderr io.Writer) (*cli, error) {
	fl := flag.NewFlagSet("layerfs", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var (
		mountOpts []string
		lowers    []string
		c         cli
		showVer   bool
		debug     bool
		mode      string
	)
	fl.StringArrayVarP(&mountOpts, "options", "o", nil, "mount options, fuse-overlayfs syntax")
	fl.StringArrayVar(&lowers, "lower", nil, "lower directory (repeat; top first)")
	fl.StringVar(&c.opts.Upper, "upper", "", "upper (writable) directory")
	fl.StringVar(&c.opts.Work, "work", "", "work directory, on the upper's filesystem")
	fl.BoolVarP(&c.foreground, "foreground", "f", false, "stay in the foreground")
	fl.BoolVarP(&debug, "debug", "d", false, "log every FUSE request (implies -f)")
	fl.BoolVarP(&showVer, "version", "V", false, "print the version")
	fl.BoolVarP(&c.verbose, "verbose", "v", false, "say which driver serves the mount")
	fl.StringVar(&mode, "driver", string(defaultDriver()), "auto: kernel overlay where it can serve the mount, else FUSE; fuse; kernel")
	fl.Usage = func() {
		fmt.Fprint(stderr, usage)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, &exitError{0, ""}
		}
		return nil, &exitError{2, err.Error()}
	}
	if showVer {
		printVersion(os.Stdout)
		return nil, &exitError{0, ""}
	}
	for _, o := range mountOpts {
		d, w, err := parseMountOptionsDriver(o, &c.opts)
		if err != nil {
			return nil, &exitError{2, err.Error()}
		}
		if d != "" && !fl.Changed("driver") {
			mode = d
		}
		c.warnings = append(c.warnings, w...)
	}
	c.opts.Lowers = append(c.opts.Lowers, lowers...)
	c.opts.Debug = c.opts.Debug || debug // -d, or -o debug
	if c.opts.Debug {
		c.foreground = true
	}
	m, err := driver.ParseMode(mode)
	if err != nil {
		return nil, &exitError{2, err.Error()}
	}
	c.driver = m
	pos := fl.Args()
	switch len(pos) {
	case 1:
		c.opts.Mountpoint = pos[0]
	case 2: // mount.fuse3 passes SOURCE MOUNTPOINT
		c.opts.Mountpoint = pos[1]
	case 0:
		return nil, &exitError{2, "no mountpoint given (see --help)"}
	default:
		return nil, &exitError{2, fmt.Sprintf("too many arguments: %s", strings.Join(pos, " "))}
	}
	return &c, nil
}

// defaultDriver is auto, except when layerfs runs under the name
// fuse-overlayfs: engines that run fuse-overlayfs (Docker's driver of that
// name) expect a FUSE mount, which kernel overlay is not.
func defaultDriver() driver.Mode {
	if filepath.Base(os.Args[0]) == "fuse-overlayfs" {
		return driver.FUSE
	}
	return driver.Auto
}

// readyEnv names the fd on which a re-executed server reports readiness.
const readyEnv = "LAYERFS_READY_FD"

func main() {
	os.Exit(run(os.Args[1:]))
}

// subcommands are the layer tools (inspect, diff, export, check, vacuum);
// each registers itself from its own file.
var subcommands = map[string]func(args []string) int{}

func run(args []string) int {
	if len(args) > 0 {
		if sub, ok := subcommands[args[0]]; ok {
			return sub(args[1:])
		}
	}
	c, err := parseArgs(args, os.Stderr)
	if err != nil {
		var ee *exitError
		errors.As(err, &ee)
		if ee.msg != "" {
			fmt.Fprintf(os.Stderr, "layerfs: %s\n", ee.msg)
		}
		return ee.code
	}
	ready := readyPipe()
	if ready == nil {
		for _, w := range c.warnings {
			fmt.Fprintf(os.Stderr, "layerfs: warning: %s\n", w)
		}
	}
	if err := unionfs.Validate(c.opts); err != nil {
		return fail(ready, 2, err.Error())
	}
	if ready == nil {
		var say func(string)
		if c.verbose {
			say = func(msg string) { fmt.Fprintf(os.Stderr, "layerfs: %s\n", msg) }
		}
		served, err := driver.Choose(c.opts, c.driver, say)
		if err != nil {
			code := 1
			if errors.Is(err, driver.ErrKernelCannotServe) {
				code = 2
			}
			return fail(nil, code, err.Error())
		}
		if served == driver.Kernel {
			return 0
		}
		if w := unionfs.OthersWarning(c.opts); w != "" {
			fmt.Fprintf(os.Stderr, "layerfs: warning: %s\n", w)
		}
	}
	if !c.foreground && ready == nil {
		return daemonize()
	}
	if ready != nil {
		logDetached(c.opts.Mountpoint)
	}
	srv, err := unionfs.Mount(context.Background(), c.opts)
	if err != nil {
		code := 1
		if unionfs.IsConfigError(err) {
			code = 2
		}
		return fail(ready, code, err.Error())
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		<-sigs
		srv.Unmount()
	}()
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
	}
	notifyReady(srv.Mountpoint)
	srv.Wait()
	return 0
}

// readyPipe returns the readiness pipe when this process is the detached
// server started by daemonize.
func readyPipe() *os.File {
	if os.Getenv(readyEnv) != "3" {
		return nil
	}
	os.Unsetenv(readyEnv)
	syscall.CloseOnExec(3)
	return os.NewFile(3, "ready")
}

func fail(ready *os.File, code int, msg string) int {
	if ready != nil {
		fmt.Fprintf(ready, "%d %s\n", code, msg)
		ready.Close()
	} else {
		fmt.Fprintf(os.Stderr, "layerfs: %s\n", msg)
	}
	return code
}

// daemonize re-executes this program as a detached server (Go cannot
// fork) and returns once the server reports the mount live or failed.
func daemonize() int {
	r, w, err := os.Pipe()
	if err != nil {
		return fail(nil, 1, err.Error())
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fail(nil, 1, err.Error())
	}
	exe, err := os.Executable()
	if err != nil {
		return fail(nil, 1, err.Error())
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), readyEnv+"=3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fail(nil, 1, err.Error())
	}
	w.Close()
	devnull.Close()
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "ok" {
		cmd.Process.Release()
		return 0
	}
	code, msg, ok := strings.Cut(line, " ")
	if !ok {
		cmd.Wait()
		return fail(nil, 1, "the server exited before the mount was ready")
	}
	cmd.Wait()
	fmt.Fprintf(os.Stderr, "layerfs: %s\n", msg)
	if code == "2" {
		return 2
	}
	return 1
}
