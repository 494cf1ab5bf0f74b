package layout

import (
	"time"

	"golang.org/x/sys/unix"
)

// askWithin bounds the wait for a layerfs server's status: a server that
// does not answer (stopped, wedged) must not hang a tool.
const askWithin = 2 * time.Second

// InUse says whether a live union uses l's upper or work dir (its lowers
// are not looked at): a kernel overlay or layerfs mount naming either (in
// this mount namespace), or a layerfs server holding the work dir's lock
// (in any). who names the user. Offline tools that change layer dirs
// refuse while one does.
func InUse(l Layers) (who string, busy bool) {
	upper, work := l.Upper, l.Work
	same := func(a, b string) bool {
		var sa, sb unix.Stat_t
		return a != "" && b != "" && unix.Stat(a, &sa) == nil && unix.Stat(b, &sb) == nil && sa.Dev == sb.Dev && sa.Ino == sb.Ino
	}
	if ms, err := ReadMountInfo(); err == nil {
		for _, m := range ms {
			var u, w, what string
			switch m.FSType {
			case "overlay":
				d := m.OverlayDirs()
				u, w, what = d.Upper, d.Work, "kernel overlay"
			case "fuse.layerfs":
				d, err := describeWithin(&m, askWithin)
				if err != nil {
					continue // the lock below still tells of a live server
				}
				u, w, what = d.UpperDir, d.WorkDir, "layerfs"
			default:
				continue
			}
			if same(u, upper) || same(w, work) || same(u, work) || same(w, upper) {
				return what + " mounted at " + m.Mountpoint, true
			}
		}
	}
	if work != "" {
		fd, err := unix.Open(work, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			defer unix.Close(fd)
			if LockWork(fd) == unix.EWOULDBLOCK {
				return "a layerfs server (it holds the lock on " + work + ")", true
			}
			unix.Flock(fd, unix.LOCK_UN)
		}
	}
	return "", false
}

// describeWithin is m.Describe, given up after d (the call stays blocked
// in the background).
func describeWithin(m *MountInfo, d time.Duration) (*Description, error) {
	type answer struct {
		d   *Description
		err error
	}
	c := make(chan answer, 1)
	go func() {
		desc, err := m.Describe()
		c <- answer{desc, err}
	}()
	select {
	case a := <-c:
		return a.d, a.err
	case <-time.After(d):
		return nil, unix.ETIMEDOUT
	}
}

// LockWork takes the lock a layerfs server holds on its work dir (fd,
// open) for the life of its mount. A server whose mount was just
// detached may still be letting go of it, so a held lock is tried again
// for up to 2 s before EWOULDBLOCK says that the dir is in use.
func LockWork(fd int) error {
	for i := 0; ; i++ {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EWOULDBLOCK || i == 40 {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
