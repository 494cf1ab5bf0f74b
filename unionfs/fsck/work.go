package fsck

import (
	"fmt"
	"path/filepath"

	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// checkWork checks the work dir W. Every mount, kernel or layerfs, starts
// by emptying W/work: whatever is in it was left by a crash and can go,
// except W/work/incompat, which the kernel refuses to mount over (a
// volatile mount leaves incompat/volatile until it ends cleanly, so
// finding it means the upper may have lost writes).
func (c *checker) checkWork(l layout.Layers) {
	ly := &layer{name: "work"}
	if l.Upper != "" {
		var su, sw unix.Stat_t
		if unix.Stat(l.Upper, &su) == nil && unix.Stat(l.Work, &sw) == nil && su.Dev != sw.Dev {
			c.add(ly, l.Work, WorkCrossDevice, "work dir is not on the upper dir's filesystem (unions fail to mount)", noFix("use a work dir on the upper's filesystem"))
		}
	}
	c.checkWorkDir(ly, filepath.Join(l.Work, "work"))
	c.noteIndex(filepath.Join(l.Work, "index"))
}

func (c *checker) checkWorkDir(ly *layer, wdir string) {
	var st unix.Stat_t
	if err := unix.Lstat(wdir, &st); err != nil {
		if !errNotExist(err) {
			c.errorf("%s: %v", wdir, err)
		}
		return // never mounted yet
	}
	if !isDir(&st) {
		c.add(ly, wdir, StaleWork, "is not a directory (a mount makes it one)", fixBy("removed it", removeIf(wdir, func(s *unix.Stat_t) bool { return !isDir(s) })))
		return
	}
	names, err := readNames(wdir)
	if err != nil {
		c.errorf("%s: %v", wdir, err)
		return
	}
	for _, n := range names {
		p := filepath.Join(wdir, n)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			c.errorf("%s: %v", p, err)
			continue
		}
		c.count(st.Size)
		switch {
		case n == "incompat" && isDir(&st):
			c.checkIncompat(ly, p)
		case whiteout.IsCharWhiteout(&st):
			// Kernel overlay keeps one whiteout here to hard-link new
			// whiteouts from, and leaves it at unmount.
			c.note(p, "spare whiteout kernel overlay keeps for linking; harmless, the next mount cleans it")
		default:
			c.add(ly, p, StaleWork, "left in the work dir by an interrupted copy-up or rename", fixBy("removed it", removeIn(wdir, n)))
		}
	}
}

// checkIncompat reports what W/work/incompat holds. Only --force removes
// it: whether the upper is good after a volatile mount died is for a
// person to say.
func (c *checker) checkIncompat(ly *layer, dir string) {
	names, err := readNames(dir)
	if err != nil {
		c.errorf("%s: %v", dir, err)
		return
	}
	if len(names) == 0 {
		c.add(ly, dir, StaleWork, "empty incompat dir left in the work dir", fixBy("removed it", removeIn(filepath.Dir(dir), "incompat")))
		return
	}
	fx := noFix("--repair --force removes it once the upper is known to be good")
	if c.opt.Force {
		fx = fixBy("removed "+dir+" (--force)", removeIn(filepath.Dir(dir), "incompat"))
	}
	for _, n := range names {
		c.count(0)
		p := filepath.Join(dir, n)
		if n == "volatile" {
			c.add(ly, p, VolatileDirty, "a volatile mount did not end cleanly (kernel overlay always leaves this marker): the upper may be incomplete", fx)
		} else {
			c.add(ly, p, IncompatWork, "unknown incompat feature: kernel overlay refuses to mount this work dir", fx)
		}
	}
}

// noteIndex mentions the kernel's inode index (index=on). Its entries are
// hard links named after origin file handles; the kernel verifies and
// cleans them itself at mount, and whether one is stale depends on link
// counts in the lower layers, so they are not judged here.
func (c *checker) noteIndex(dir string) {
	names, err := readNames(dir)
	if err != nil {
		if !errNotExist(err) {
			c.errorf("%s: %v", dir, err)
		}
		return
	}
	c.count(0)
	c.note(dir, fmt.Sprintf("kernel overlay inode index (index=on) with %d entries; not checked, the kernel verifies it at mount", len(names)))
}

// removeIn returns a fix removing name (and all below it) from dir,
// without following symlinks.
func removeIn(dir, name string) func() error {
	return func() error {
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return at.RemoveAll(at.Loc{Dir: fd, Name: name})
	}
}
