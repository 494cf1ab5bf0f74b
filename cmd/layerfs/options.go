package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/layerfs/layerfs/unionfs"
)

// splitEscaped splits s at sep, honouring a backslash escape ("\," "\:").
func splitEscaped(s string, sep byte) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			i++
			cur.WriteByte(s[i])
			continue
		}
		if c == sep {
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
	}
	return append(out, cur.String())
}

// splitKeepingEscapes splits at sep but leaves escapes in place, so that a
// later split of the value still sees them.
func splitKeepingEscapes(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == sep {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// ignored are fuse-overlayfs and mount options that need nothing from
// layerfs: they describe what layerfs always does, or only tune a peer.
var ignored = map[string]bool{
	"rw": true, "default_permissions": true, "static_nlink": true,
	"threaded": true, "writeback": true, "xino": true, "ino32_t": true,
	"atime": true, "noatime": true, "relatime": true, "strictatime": true, "nodiratime": true,
	"diratime": true, "lazytime": true, "max_write": true, "context": true, "fscontext": true,
	"defcontext": true, "rootcontext": true, "uuid": true, "auto": true,
	"noauto": true, "user": true, "nouser": true, "users": true, "_netdev": true, "nofail": true,
	"sync": true, "async": true,
}

// parseMountOptions applies one -o string (fuse-overlayfs syntax) to opts.
// It returns warnings for unknown options.
func parseMountOptions(s string, opts *unionfs.Options) (warnings []string, err error) {
	_, warnings, err = parseMountOptionsDriver(s, opts)
	return warnings, err
}

// parseMountOptionsDriver also returns a driver=auto|fuse|kernel item (for
// fstab lines, where flags cannot be given), "" when there is none.
func parseMountOptionsDriver(s string, opts *unionfs.Options) (driver string, warnings []string, err error) {
	for _, item := range splitKeepingEscapes(s, ',') {
		if item == "" {
			continue // podman sends "workdir=W,,volatile"
		}
		key, val, hasVal := strings.Cut(item, "=")
		switch key {
		case "lowerdir":
			if !hasVal || val == "" {
				return "", nil, fmt.Errorf("lowerdir needs a value")
			}
			for _, p := range splitEscaped(val, ':') {
				if p == "" {
					return "", nil, fmt.Errorf("lowerdir %q has an empty layer", val)
				}
				opts.Lowers = append(opts.Lowers, p)
			}
		case "upperdir", "workdir":
			if !hasVal || val == "" {
				return "", nil, fmt.Errorf("%s needs a value", key)
			}
			p := splitEscaped(val, 0)[0]
			if key == "upperdir" {
				opts.Upper = p
			} else {
				opts.Work = p
			}
		case "fsync":
			switch val {
			case "0":
				opts.NoSync = true
			case "1", "":
				opts.NoSync = false
			default:
				return "", nil, fmt.Errorf("fsync=%s: want 0 or 1", val)
			}
		case "timeout":
			secs, err := strconv.ParseFloat(val, 64)
			if err != nil || secs < 0 {
				return "", nil, fmt.Errorf("timeout=%s: want seconds", val)
			}
			opts.Timeout = time.Duration(secs * float64(time.Second))
			if opts.Timeout == 0 {
				opts.Timeout = time.Nanosecond // no caching
			}
		case "suid", "nosuid", "dev", "nodev", "exec", "noexec":
			opts.MountFlags = append(opts.MountFlags, key)
		case "driver":
			driver = val
		case "passthrough":
			opts.Passthrough = true
		case "userxattr":
			opts.UserXattr = true
		case "volatile":
			opts.NoSync, opts.Volatile = true, true
		case "ro":
			opts.ReadOnly = true
		case "allow_other", "allow_root":
			switch val {
			case "", "1":
				opts.AllowOther, opts.Private = true, false
			case "0":
				opts.AllowOther, opts.Private = false, true
			default:
				return "", nil, fmt.Errorf("%s=%s: want 0 or 1", key, val)
			}
		case "debug":
			opts.Debug = true
		case "private":
			opts.AllowOther, opts.Private = false, true
		case "noacl":
			opts.NoACL = true
		case "acl":
			opts.NoACL = false
		case "redirect_dir":
			// "on" (the default) makes redirects; all but "nofollow"
			// follow those in the layers.
			switch val {
			case "on":
				opts.NoRedirectDir = false
			case "off", "follow":
				opts.NoRedirectDir = true
			case "nofollow":
				opts.NoRedirectDir, opts.NoFollowRedirect = true, true
			default:
				return "", nil, fmt.Errorf("redirect_dir=%s: want on, follow, nofollow or off", val)
			}
		case "metacopy":
			switch val {
			case "on":
				opts.NoMetacopy = false
			case "off":
				opts.NoMetacopy = true
			default:
				return "", nil, fmt.Errorf("metacopy=%s: want on or off", val)
			}
		case "index":
			switch val {
			case "on":
				opts.NoIndex = false
			case "off":
				opts.NoIndex = true
			default:
				return "", nil, fmt.Errorf("index=%s: want on or off", val)
			}
		case "xattr_permissions":
			if val != "0" {
				warnings = append(warnings, "xattr_permissions="+val+" is not supported: modes and owners are stored in the files themselves")
			}
		case "uidmapping", "gidmapping":
			m, err := unionfs.ParseIDMaps(val)
			if err != nil {
				return "", nil, fmt.Errorf("%s: %v", key, err)
			}
			if key == "uidmapping" {
				opts.UIDMap = m
			} else {
				opts.GIDMap = m
			}
		case "squash_to_root":
			zero := uint32(0)
			opts.SquashUID, opts.SquashGID = &zero, &zero
		case "squash_to_uid", "squash_to_gid":
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil {
				return "", nil, fmt.Errorf("%s=%s: want a number", key, val)
			}
			id := uint32(n)
			if key == "squash_to_uid" {
				opts.SquashUID = &id
			} else {
				opts.SquashGID = &id
			}
		default:
			if !ignored[key] {
				warnings = append(warnings, fmt.Sprintf("unknown option %q ignored", item))
			}
		}
	}
	return driver, warnings, nil
}
