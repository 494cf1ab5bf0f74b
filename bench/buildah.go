package bench

import (
	"archive/tar"
	"bytes"
	"context"
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

	"golang.org/x/sys/unix"
)

// The buildah-bud workload times `buildah bud --layers` with
// containers/storage's overlay driver. It does not fit the shape of the
// others (the harness mounts one union, a command works in it): buildah
// mounts a union for every step and for every layer it diffs. So here a
// contender is what the overlay driver mounts with, set up in a store of
// the trial's own (storage.conf and containers.conf in the trial dir):
//
//	plain           no mount_program: the driver's native kernel overlay
//	                (layers read from the upper dir)
//	kernel          mount_program = a wrapper that mounts kernel overlay
//	                (test/e2e/buildah/kovl, --kovl): the fair reference, since with any
//	                mount_program containers/storage diffs layers naively
//	                (both trees mounted and compared by stat)
//	layerfs, layerfs-pt, layerfs-base
//	                mount_program = a wrapper that runs that layerfs with
//	                the harness's flags (-o passthrough for layerfs-pt)
//	fuse-overlayfs  mount_program = fuse-overlayfs itself
//
// Setup (untimed) writes a busybox base image into the store; the timed
// part is the build; the check verifies which filesystem served the RUN
// steps and the image's layer count. The steps work on the prepared
// tarball (the untar workload's) and resemble test/e2e/buildah.sh's.

// store is one trial's containers-storage configuration.
type store struct {
	dir          string // the trial's scratch dir; the store lives under it
	ctxDir       string // build context
	mountProgram string // "" for the native driver
	env          []string
	fstype       string // the root filesystem type the RUN steps saw
}

// buildahLayers is the number of layers the Containerfile makes: the
// base, ADD and the 7 RUN steps (USER makes none).
const buildahLayers = 9

// buildahContainerfile: ADD unpacks the tarball through the union; the RUN
// steps delete lower files (whiteouts), rename a lower dir, delete a lower
// dir and re-create it, change modes and owners of a lower tree, hard-link
// lower files, and write as USER 1000; the last one checks the result.
const buildahContainerfile = `FROM localhost/bench:base
ADD untar.tar /data/
RUN head -1 /proc/mounts && find /data -name '*_test.go' | xargs rm -f
RUN mv /data/src/runtime /data/moved && rm -r /data/src && mkdir /data/src && echo new > /data/src/new
RUN chmod -R go-w /data/moved && chown -R 12:34 /data/moved
RUN mkdir /links && ln /data/moved/*.go /links/ && echo n > /links/new && ln /links/new /links/new.hl
RUN chown -h 5:6 /bin/sh && chmod 600 /etc/motd && mkdir -p /home/u1000 && chown 1000:1000 /home/u1000
USER 1000
RUN cp -r /data/moved /home/u1000/copy && mkdir /home/u1000/d && echo f > /home/u1000/d/f
USER 0
RUN test ! -e /data/src/runtime && test -e /data/src/new && test -z "$(find /data -name '*_test.go')" && test "$(stat -c %u:%g /data/moved)" = 12:34 && test "$(stat -c %h /links/new)" = 2 && test "$(stat -c %u /home/u1000/copy)" = 1000
`

func buildahWorkload() *workload {
	return &workload{
		name:  "buildah-bud",
		uses:  "tar",
		store: true,
		desc: fmt.Sprintf("`buildah bud --layers` (rootful, runc) of a Containerfile whose ADD unpacks the prepared tarball and whose 7 RUN steps delete, rename and re-create lower dirs, chmod/chown -R, hard-link lower files, write as USER 1000 (%d layers); "+
			"a contender is the overlay driver's mount_program, kernel being kernel overlay behind a mount_program wrapper; no peak RSS (a FUSE server per mount)", buildahLayers),
		plain: "the overlay driver without mount_program (its native kernel overlay)",
		setup: func(ctx context.Context, e *env) error { return e.st.setup(ctx, e.ds) },
		run: func(ctx context.Context, e *env) error {
			var out bytes.Buffer
			err := e.st.buildah(ctx, &out, "bud", "--layers", "--network=none", "-t", "localhost/bench:built",
				"-f", filepath.Join(e.st.ctxDir, "Containerfile"), e.st.ctxDir)
			e.st.fstype = rootFSType(out.String())
			return err
		},
		check: func(e *env) error { return e.st.check() },
	}
}

// rootFSType finds the line `head -1 /proc/mounts` printed in a RUN step.
func rootFSType(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[1] == "/" {
			return f[2]
		}
	}
	return ""
}

var storeTools struct {
	once sync.Once
	err  error
}

// ensureStoreTools installs buildah, runc and busybox-static from Debian
// when missing, once per run.
func ensureStoreTools() error {
	storeTools.once.Do(func() {
		var need []string
		for cmd, pkg := range map[string]string{"buildah": "buildah", "runc": "runc", "busybox": "busybox-static", "setfattr": "attr"} {
			if _, err := exec.LookPath(cmd); err != nil {
				need = append(need, pkg)
			}
		}
		if len(need) == 0 {
			return
		}
		logf("buildah-bud: apt-get install -y %s", strings.Join(need, " "))
		storeTools.err = aptInstall(need...)
	})
	return storeTools.err
}

// newStore writes the configuration of contender's store under dir.
func (b *bench) newStore(contender, dir string) (*store, error) {
	if err := ensureStoreTools(); err != nil {
		return nil, err
	}
	s := &store{dir: dir, ctxDir: filepath.Join(dir, "ctx")}
	wrapper := func(bin string, args ...string) (string, error) {
		p := filepath.Join(dir, "mount-program")
		var q []string
		for _, a := range append([]string{bin}, args...) {
			q = append(q, shellQuote(a))
		}
		return p, os.WriteFile(p, []byte("#!/bin/sh\nexec "+strings.Join(q, " ")+" \"$@\"\n"), 0o755)
	}
	var err error
	switch contender {
	case cPlain:
	case cKernel:
		// The e2e suite's mount program (--kovl), copied: it logs its
		// calls beside itself.
		var script []byte
		if script, err = os.ReadFile(b.cfg.kovl); err != nil {
			return nil, fmt.Errorf("buildah-bud: --kovl: %w", err)
		}
		s.mountProgram = filepath.Join(dir, "kovl")
		err = os.WriteFile(s.mountProgram, script, 0o755)
	case cLayer:
		s.mountProgram, err = wrapper(b.layerfs, b.layerfsArgs...)
	case cLayerPT:
		s.mountProgram, err = wrapper(b.layerfs, append(append([]string(nil), b.layerfsArgs...), "-o", "passthrough")...)
	case cLayerBase:
		s.mountProgram, err = wrapper(b.baseline, b.baseArgs...)
	case cFuseOv:
		s.mountProgram = b.fuseOv
	default:
		return nil, fmt.Errorf("buildah-bud: no mount program for contender %q", contender)
	}
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "storage.conf")
	sc := fmt.Sprintf("[storage]\ndriver = \"overlay\"\nrunroot = %q\ngraphroot = %q\n[storage.options.overlay]\n",
		filepath.Join(dir, "run"), filepath.Join(dir, "graph"))
	if s.mountProgram != "" {
		sc += fmt.Sprintf("mount_program = %q\n", s.mountProgram)
	}
	cconf := filepath.Join(dir, "containers.conf")
	cc := "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n" +
		"[containers]\nnetns = \"none\"\n"
	tmp := filepath.Join(dir, "tmp")
	if err := os.WriteFile(conf, []byte(sc), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cconf, []byte(cc), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	s.env = []string{"CONTAINERS_STORAGE_CONF=" + conf, "CONTAINERS_CONF=" + cconf,
		"BUILDAH_ISOLATION=oci", "TMPDIR=" + tmp}
	return s, nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// buildah runs buildah with the store, stdout to w (nil: discarded); its
// error quotes the end of the output, where buildah says what failed
// (after a long dump of the step).
func (s *store) buildah(ctx context.Context, w io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, "buildah", args...)
	cmd.Dir = s.dir
	cmd.Env = append(append(os.Environ(), "LC_ALL=C"), s.env...)
	var tail tailBuffer
	cmd.Stdout, cmd.Stderr = &tail, &tail
	if w != nil {
		cmd.Stdout = io.MultiWriter(w, &tail)
	}
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(tail.String())
		if len(msg) > 600 {
			msg = "..." + msg[len(msg)-600:]
		}
		return fmt.Errorf("buildah %s: %v: %s", args[0], err, strings.ReplaceAll(msg, "\n", " | "))
	}
	return nil
}

// setup writes the build context and imports the base image.
func (s *store) setup(ctx context.Context, ds *dataset) error {
	if err := os.MkdirAll(s.ctxDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.ctxDir, "Containerfile"), []byte(buildahContainerfile), 0o644); err != nil {
		return err
	}
	tarball := filepath.Join(s.ctxDir, "untar.tar")
	if err := os.Link(ds.tarball, tarball); err != nil {
		if err := cmdRun(ctx, "", nil, nil, "cp", ds.tarball, tarball); err != nil {
			return err
		}
	}
	base := filepath.Join(s.dir, "base.tar")
	if err := writeBusyboxTar(base); err != nil {
		return fmt.Errorf("base image: %w", err)
	}
	var id bytes.Buffer
	if err := s.buildah(ctx, &id, "from", "scratch"); err != nil {
		return err
	}
	c := strings.TrimSpace(id.String())
	if err := s.buildah(ctx, nil, "add", c, base, "/"); err != nil {
		return err
	}
	if err := s.buildah(ctx, nil, "commit", "-q", c, "localhost/bench:base"); err != nil {
		return err
	}
	return s.buildah(ctx, nil, "rm", c)
}

// check verifies that the build ran on the contender's filesystem and
// made every layer.
func (s *store) check() error {
	want := "fuse."
	if s.mountProgram == "" || strings.HasSuffix(s.mountProgram, "/kovl") {
		want = "overlay"
	}
	if s.fstype == "" || !strings.HasPrefix(s.fstype, want) {
		return fmt.Errorf("the RUN steps ran on %q, want %s*", s.fstype, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := s.buildah(ctx, &out, "inspect", "--type", "image", "--format", "{{len .OCIv1.RootFS.DiffIDs}}", "localhost/bench:built"); err != nil {
		return err
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(out.String())); n != buildahLayers {
		return fmt.Errorf("the image has %s layers, want %d", strings.TrimSpace(out.String()), buildahLayers)
	}
	return nil
}

// close detaches whatever the store left mounted under its dir and stops
// FUSE servers still serving there, so that the trial dir can go.
func (s *store) close() {
	prefix := s.dir + string(filepath.Separator)
	mps := mountPoints()
	for i := len(mps) - 1; i >= 0; i-- {
		if strings.HasPrefix(mps[i], prefix) {
			unix.Unmount(mps[i], unix.MNT_DETACH)
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(raw, []byte(prefix)) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// writeBusyboxTar writes a root filesystem tarball: the host's busybox
// (which must be static: busybox-static) with a link per applet, and
// passwd, group and motd.
func writeBusyboxTar(path string) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	mtime := time.Unix(1700000000, 0)
	hdr := func(h *tar.Header) error {
		h.ModTime, h.Format = mtime, tar.FormatPAX
		return tw.WriteHeader(h)
	}
	for _, d := range []string{"bin/", "etc/", "dev/", "proc/", "sys/", "run/", "root/", "home/"} {
		if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}); err != nil {
			return err
		}
	}
	if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}); err != nil {
		return err
	}
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"bin/busybox", 0o755, bin},
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nu1000:x:1000:1000::/home/u1000:/bin/sh\n")},
		{"etc/group", 0o644, []byte("root:x:0:\nu1000:x:1000:\n")},
		{"etc/motd", 0o644, []byte("base\n")},
	}
	for _, fl := range files {
		if err := hdr(&tar.Header{Typeflag: tar.TypeReg, Name: fl.name, Mode: fl.mode, Size: int64(len(fl.data))}); err != nil {
			return err
		}
		if _, err := tw.Write(fl.data); err != nil {
			return err
		}
	}
	for _, a := range strings.Fields(string(list)) {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := hdr(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
