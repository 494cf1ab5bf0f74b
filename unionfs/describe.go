package unionfs

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// StatusXattr is the xattr on a layerfs mount's root from which the server
// reports its layers, options and counters as JSON (a Description). It is
// read-only, not listed by listxattr, and answers only on the root.
const StatusXattr = "user.layerfs.status"

// Description says what serves a union mount and from which directories,
// in the shape of docker inspect's GraphDriver.Data.
type Description struct {
	Driver    string   `json:"Driver"` // "fuse" (layerfs) or "kernel" (overlay)
	MergedDir string   `json:"MergedDir"`
	LowerDirs []string `json:"LowerDir"` // top first
	UpperDir  string   `json:"UpperDir,omitempty"`
	WorkDir   string   `json:"WorkDir,omitempty"`
	Options   []string `json:"Options,omitempty"`
	// Stats are the live counters of a layerfs server; nil for kernel
	// overlay, which keeps none.
	Stats *Stats `json:"Stats,omitempty"`
}

// Stats are a layerfs server's counters since it mounted.
type Stats struct {
	PID         int    `json:"Pid"`
	CopyUps     uint64 `json:"CopyUps"`
	CopyUpBytes uint64 `json:"CopyUpBytes"`
	Whiteouts   uint64 `json:"Whiteouts"`
	// OpenHandles are file handles the kernel holds open on the server.
	// In the default no-open mode the kernel opens files without asking
	// the server, so only files created and passthrough opens count.
	OpenHandles int64 `json:"OpenHandles"`
	// HeldFds are descriptors the server holds for known directories and
	// open files.
	HeldFds int `json:"HeldFds"`
}

// counters are updated by the node tree and read for StatusXattr.
type counters struct {
	copyUps, copyUpBytes, whiteouts atomic.Uint64
	openHandles                     atomic.Int64
}

// Describe reports what serves the union mounted at mountpoint: for
// layerfs, its own status; for kernel overlay, the options in mountinfo.
func Describe(mountpoint string) (*Description, error) {
	m, err := FindMount(mountpoint)
	if err != nil {
		return nil, err
	}
	switch m.FSType {
	case "overlay":
		d := &Description{Driver: "kernel", MergedDir: m.Mountpoint}
		d.LowerDirs, d.UpperDir, d.WorkDir = m.OverlayDirs()
		// The kernel shows the paths as they were given: relative ones
		// name nothing from here.
		for _, p := range append(append([]string{}, d.LowerDirs...), d.UpperDir, d.WorkDir) {
			if p != "" && !filepath.IsAbs(p) {
				return nil, fmt.Errorf("%s was mounted with a relative layer path (%q): mountinfo cannot say where it is", m.Mountpoint, p)
			}
		}
		for _, o := range m.Options {
			if k, _, _ := cutKey(o); k != "lowerdir" && k != "lowerdir+" && k != "upperdir" && k != "workdir" {
				d.Options = append(d.Options, o)
			}
		}
		return d, nil
	case "fuse.layerfs", "fuse":
		buf := make([]byte, 1<<16)
		n, err := unix.Getxattr(m.Mountpoint, StatusXattr, buf)
		if err == unix.ERANGE {
			if sz, err2 := unix.Getxattr(m.Mountpoint, StatusXattr, nil); err2 == nil {
				buf = make([]byte, sz+4096)
				n, err = unix.Getxattr(m.Mountpoint, StatusXattr, buf)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: reading %s from the layerfs server: %w", m.Mountpoint, StatusXattr, err)
		}
		var d Description
		if err := json.Unmarshal(buf[:n], &d); err != nil {
			return nil, fmt.Errorf("%s: the server's status is not valid: %w", m.Mountpoint, err)
		}
		d.MergedDir = m.Mountpoint
		return &d, nil
	}
	return nil, fmt.Errorf("%s is a %s mount, not a union", mountpoint, m.FSType)
}

func cutKey(o string) (k, v string, ok bool) {
	for i := 0; i < len(o); i++ {
		if o[i] == '=' {
			return o[:i], o[i+1:], true
		}
	}
	return o, "", false
}

// status is the JSON a server answers StatusXattr with.
func (u *union) status() []byte {
	u.heldMu.Lock()
	held := len(u.held)
	u.heldMu.Unlock()
	d := Description{
		Driver:    "fuse",
		MergedDir: u.desc.mountpoint,
		LowerDirs: u.desc.lowers,
		UpperDir:  u.desc.upper,
		WorkDir:   u.desc.work,
		Options:   u.desc.options,
		Stats: &Stats{
			PID:         unix.Getpid(),
			CopyUps:     u.stats.copyUps.Load(),
			CopyUpBytes: u.stats.copyUpBytes.Load(),
			Whiteouts:   u.stats.whiteouts.Load(),
			OpenHandles: u.stats.openHandles.Load(),
			HeldFds:     held,
		},
	}
	b, _ := json.Marshal(d)
	return b
}

// description is what a server says of itself.
type description struct {
	mountpoint, upper, work string
	lowers, options         []string
}

func describeOptions(l *layout, o *Options) description {
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	d := description{mountpoint: abs(l.mountpoint)}
	for _, p := range l.lowers {
		d.lowers = append(d.lowers, abs(p))
	}
	if l.upper != "" {
		d.upper, d.work = l.upper, l.work
	}
	add := func(on bool, s string) {
		if on {
			d.options = append(d.options, s)
		}
	}
	add(o.ReadOnly || l.upper == "", "ro")
	add(!o.ReadOnly && l.upper != "", "rw")
	add(o.NoSync && !o.Volatile, "fsync=0")
	add(o.Volatile, "volatile")
	add(o.AllowOther, "allow_other")
	add(o.UserXattr, "userxattr")
	add(o.Passthrough, "passthrough")
	add(o.NoRedirectDir && !o.NoFollowRedirect, "redirect_dir=off")
	add(o.NoFollowRedirect, "redirect_dir=nofollow")
	add(o.NoMetacopy, "metacopy=off")
	add(o.NoIndex, "index=off")
	add(o.Timeout != 0, fmt.Sprintf("timeout=%g", o.Timeout.Seconds()))
	add(len(o.UIDMap) > 0, "uidmapping="+formatIDMaps(o.UIDMap))
	add(len(o.GIDMap) > 0, "gidmapping="+formatIDMaps(o.GIDMap))
	if o.SquashUID != nil {
		d.options = append(d.options, fmt.Sprintf("squash_to_uid=%d", *o.SquashUID))
	}
	if o.SquashGID != nil {
		d.options = append(d.options, fmt.Sprintf("squash_to_gid=%d", *o.SquashGID))
	}
	d.options = append(d.options, o.MountFlags...)
	return d
}

func formatIDMaps(m []IDMap) string {
	s := ""
	for i, e := range m {
		if i > 0 {
			s += ":"
		}
		s += fmt.Sprintf("%d:%d:%d", e.Container, e.Host, e.Size)
	}
	return s
}
