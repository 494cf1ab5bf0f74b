package unionfs

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync/atomic"

	lay "github.com/layerfs/layerfs/unionfs/layout"
	"golang.org/x/sys/unix"
)

// StatusXattr is the xattr on the root from which a server reports its
// layers, options and counters (layout.Describe reads it).
const StatusXattr = lay.StatusXattr

// counters are updated by the node tree and read for StatusXattr.
type counters struct {
	copyUps, copyUpBytes, whiteouts atomic.Uint64
	openHandles                     atomic.Int64
	requests                        requests
}

// status is the JSON a server answers StatusXattr with: a
// layout.Description with its live counters.
func (u *union) status() []byte {
	u.heldMu.Lock()
	held := len(u.held)
	u.heldMu.Unlock()
	d := lay.Description{
		Driver:    "fuse",
		MergedDir: u.desc.mountpoint,
		LowerDirs: u.desc.lowers,
		UpperDir:  u.desc.upper,
		WorkDir:   u.desc.work,
		Options:   u.desc.options,
		Stats: &lay.Stats{
			PID:         unix.Getpid(),
			CopyUps:     u.stats.copyUps.Load(),
			CopyUpBytes: u.stats.copyUpBytes.Load(),
			Whiteouts:   u.stats.whiteouts.Load(),
			OpenHandles: u.stats.openHandles.Load(),
			HeldFds:     held,
			Requests:    u.stats.requests.snapshot(),
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
	add(OthersMayEnter(*o), "allow_other")
	add(o.NoACL, "noacl")
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
		s += fmt.Sprintf("%d:%d:%d", e.Stored, e.Shown, e.Size)
	}
	return s
}
