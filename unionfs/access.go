package unionfs

import (
	"bufio"
	"os"
	"strings"
)

// Who may enter a mount: FUSE lets only the mounting user in unless the
// mount has allow_other. A union is usually a container's root
// filesystem, entered by processes of many users, so layerfs asks for it
// wherever it may, as kernel overlay (which serves every user) and
// fuse-overlayfs (which adds allow_other as root) do.

// fuseConf is fusermount3's configuration: user_allow_other in it lets a
// plain user mount with allow_other.
var fuseConf = "/etc/fuse.conf"

// OthersMayEnter reports whether a mount with opts lets users other than
// the mounting one in.
func OthersMayEnter(opts Options) bool {
	switch {
	case opts.Private:
		return false
	case opts.AllowOther, os.Geteuid() == 0:
		return true
	}
	return userAllowOther()
}

// OthersWarning is the one-line warning a plain user gets when other users
// cannot enter the mount although nobody asked for that; "" otherwise.
func OthersWarning(opts Options) string {
	if OthersMayEnter(opts) || opts.Private {
		return ""
	}
	return "other users cannot enter this mount: " + fuseConf + " lacks user_allow_other (-o private says this is wanted)"
}

// userAllowOther reads fuse.conf as fusermount3 does: a line of its own
// (comments and blanks aside) saying user_allow_other.
func userAllowOther() bool {
	f, err := os.Open(fuseConf)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}
