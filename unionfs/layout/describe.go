package layout

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

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
	// Requests counts the kernel's requests by kind (LOOKUP, GETATTR,
	// ...) since the mount began.
	Requests map[string]uint64 `json:"Requests,omitempty"`
}

// Describe reports what serves the union mounted at mountpoint: for
// layerfs, the server's own status (StatusXattr); for kernel overlay, the
// options in mountinfo.
func Describe(mountpoint string) (*Description, error) {
	m, err := FindMount(mountpoint)
	if err != nil {
		return nil, err
	}
	return m.Describe()
}

// Describe reports what serves the union m.
func (m *MountInfo) Describe() (*Description, error) {
	switch m.FSType {
	case "overlay":
		d := &Description{Driver: "kernel", MergedDir: m.Mountpoint}
		l := m.OverlayDirs()
		d.LowerDirs, d.UpperDir, d.WorkDir = l.Lowers, l.Upper, l.Work
		// The kernel shows the paths as they were given: relative ones
		// name nothing from here.
		for _, p := range append(append([]string{}, d.LowerDirs...), d.UpperDir, d.WorkDir) {
			if p != "" && !filepath.IsAbs(p) {
				return nil, fmt.Errorf("%s was mounted with a relative layer path (%q): mountinfo cannot say where it is", m.Mountpoint, p)
			}
		}
		for _, o := range m.Options {
			if k, _, _ := strings.Cut(o, "="); k != "lowerdir" && k != "lowerdir+" && k != "upperdir" && k != "workdir" {
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
	return nil, fmt.Errorf("%s is a %s mount, not a union", m.Mountpoint, m.FSType)
}
