package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Permissions through real mounts, as root and as other users (issue 13):
// every case runs on kernel overlay (redirect_dir=on,metacopy=on,index=on)
// and on layerfs over layers built the same way in separate directories,
// and must give the same errno and leave the same mode, owner, group,
// size, content and xattrs (ACLs and file capabilities among them).
// No difference listed in docs/compat.md concerns these cases (the
// documented ones are about OCI whiteouts, .wh. names, long names,
// private xattrs, the moment of copy-up and on-disk forms the merged view
// does not show), so every difference fails.

// permKind is the kind of directory a matrix cell is in.
type permKind struct {
	name     string
	mode     uint32
	uid, gid int
}

// The file owner and the group's member may write in plain; anyone in
// sticky, which the member owns (so the member may remove the owner's
// files there, other may not); anyone in setgid, whose group is the
// file's group (owner and other are not in it, member is).
var permKinds = []permKind{
	{"plain", 0o775, permFileUID, permFileGID},
	{"sticky", 0o1777, 1002, 1002},
	{"setgid", 0o2777, permFileUID, permFileGID},
}

// permScript is the content of every matrix file; exec runs it.
const permScript = "#!/bin/sh\nexit 3\n"

// permCell is one matrix cell. Each has a directory of its own (dir,
// plus dir.to as the target of a rename across directories, and v, an
// entry of other's to rename over) made for it in the layers, so no cell
// sees another's effects and the order the cells run in does not matter.
type permCell struct {
	kind   permKind
	state  string // file cells: lower, upper, copied, metacopy; directory cells: lower, upper, copied; creations: lower, upper, whiteout
	target string // what the operation is on: f, a file, or s, a directory holding a file inner
	mode   uint32 // the target's mode
	opName string
	op     permOp
	user   permUser
	dir    string
	create bool
}

var permMatrixUsers = []permUser{permRoot, permOwner, permMember, permOther}

// permOps are the operations on the target x (f or s) of a cell
// directory d. On a directory, read lists it, write creates a file in
// it, exec looks up its file inner, unlink is rmdir (of a directory that
// is not empty: what is checked first decides), and there is no
// truncate.
var permOps = []struct {
	name  string
	files bool // only on files
	op    func(u permUser, d, x string, dir bool) permOp
}{
	{"read", false, func(u permUser, d, x string, dir bool) permOp {
		if dir {
			return permOp{Op: "readdir", Path: d + "/" + x}
		}
		return permOp{Op: "read", Path: d + "/" + x}
	}},
	{"write", false, func(u permUser, d, x string, dir bool) permOp {
		if dir {
			return permOp{Op: "creat", Path: d + "/" + x + "/new", Mode: 0o666}
		}
		return permOp{Op: "write", Path: d + "/" + x, Value: "#w\n"}
	}},
	{"exec", false, func(u permUser, d, x string, dir bool) permOp {
		if dir {
			return permOp{Op: "lstat", Path: d + "/" + x + "/inner"}
		}
		return permOp{Op: "exec", Path: d + "/" + x}
	}},
	{"unlink", false, func(u permUser, d, x string, dir bool) permOp {
		if dir {
			return permOp{Op: "rmdir", Path: d + "/" + x}
		}
		return permOp{Op: "unlink", Path: d + "/" + x}
	}},
	{"rename-in", false, func(u permUser, d, x string, dir bool) permOp {
		return permOp{Op: "rename", Path: d + "/" + x, Path2: d + "/g"}
	}},
	{"rename-x", false, func(u permUser, d, x string, dir bool) permOp {
		return permOp{Op: "rename", Path: d + "/" + x, Path2: d + ".to/" + x}
	}},
	// Over v, other's (an empty directory for a directory): in a sticky
	// directory the victim's owner counts too.
	{"rename-over", false, func(u permUser, d, x string, dir bool) permOp {
		return permOp{Op: "rename", Path: d + "/" + x, Path2: d + "/v"}
	}},
	// Setgid asked by a caller not in the group is dropped; setuid on a
	// file, sticky on a directory.
	{"chmod", false, func(u permUser, d, x string, dir bool) permOp {
		if dir {
			return permOp{Op: "chmod", Path: d + "/" + x, Mode: 0o3775}
		}
		return permOp{Op: "chmod", Path: d + "/" + x, Mode: 0o6755}
	}},
	{"chown-self", false, func(u permUser, d, x string, dir bool) permOp {
		return permOp{Op: "chown", Path: d + "/" + x, UID: u.uid, GID: -1}
	}},
	{"chown-other", false, func(u permUser, d, x string, dir bool) permOp {
		return permOp{Op: "chown", Path: d + "/" + x, UID: permForeignUID, GID: -1}
	}},
	{"chgrp", false, func(u permUser, d, x string, dir bool) permOp {
		return permOp{Op: "chown", Path: d + "/" + x, UID: -1, GID: permSharedGID}
	}},
	{"setxattr", false, func(u permUser, d, x string, dir bool) permOp {
		return permOp{Op: "setxattr", Path: d + "/" + x, Name: "user.perm", Value: u.name}
	}},
	{"utimes", false, func(u permUser, d, x string, dir bool) permOp {
		return permOp{Op: "utimes", Path: d + "/" + x, Sec: 1_000_000_000}
	}},
	{"utimes-now", false, func(u permUser, d, x string, dir bool) permOp { return permOp{Op: "touch", Path: d + "/" + x} }},
	{"truncate", true, func(u permUser, d, x string, dir bool) permOp { return permOp{Op: "truncate", Path: d + "/" + x} }},
}

// The modes of the matrix files: owner rwx, group rw, other r (only the
// owner and root may run it, the group may write); and setuid and setgid
// with group execute, which writes, truncates and chowns by others than
// root clear. Of the directories: group and others may enter, the group
// may write; or the group may enter, others nothing.
var (
	permFileModes = []uint32{0o764, 0o6775}
	permDirModes  = []uint32{0o775, 0o750}
)

// Creations: every mode with every umask, open(O_CREAT|O_EXCL) and mkdir.
var (
	permCreatModes = []uint32{0o666, 0, 0o2775, 0o7777}
	permMkdirModes = []uint32{0o777, 0, 0o7777}
	permUmasks     = []int{0, 0o22, 0o77}
)

// permMatrixCells lists the matrix.
func permMatrixCells() []permCell {
	var cells []permCell
	for _, k := range permKinds {
		for _, target := range []struct {
			name, prefix string
			states       []string
			modes        []uint32
		}{
			{"f", "", []string{"lower", "upper", "copied", "metacopy"}, permFileModes},
			{"s", "d", []string{"lower", "upper", "copied"}, permDirModes},
		} {
			for _, state := range target.states {
				for _, mode := range target.modes {
					for _, o := range permOps {
						if o.files && target.name != "f" {
							continue
						}
						for _, u := range permMatrixUsers {
							d := fmt.Sprintf("%s.%s.%s%04o.%s.%s", k.name, state, target.prefix, mode, o.name, u.name)
							op := o.op(u, d, target.name, target.name == "s")
							op.Umask = 0o22
							cells = append(cells, permCell{kind: k, state: state, target: target.name, mode: mode, opName: o.name, op: op, user: u, dir: d})
						}
					}
				}
			}
		}
		for _, state := range []string{"lower", "upper", "whiteout"} {
			for _, u := range permMatrixUsers {
				add := func(op string, mode uint32, umask int) {
					name := fmt.Sprintf("%s-%04o-u%03o", op, mode, umask)
					d := fmt.Sprintf("%s.%s.%s.%s", k.name, state, name, u.name)
					cells = append(cells, permCell{kind: k, state: state, opName: name, user: u, dir: d, create: true,
						op: permOp{Op: op, Path: d + "/n", Mode: mode, Umask: umask}})
				}
				for _, um := range permUmasks {
					for _, m := range permCreatModes {
						add("creat", m, um)
					}
					for _, m := range permMkdirModes {
						add("mkdir", m, um)
					}
				}
			}
		}
	}
	return cells
}

// permBuildMatrix makes the cells' directories in the layers: in the upper
// dir for the upper state (a directory of the upper layer alone), else in
// the lower dir. A creation over a whiteout finds a lower file n that
// permPrepMatrix removes.
func permBuildMatrix(t *testing.T, lower, upper string, cells []permCell) {
	t.Helper()
	for _, c := range cells {
		base := lower
		if c.state == "upper" {
			base = upper
		}
		d := filepath.Join(base, c.dir)
		permMkdir(t, d, c.kind.mode, c.kind.uid, c.kind.gid)
		if c.create {
			if c.state == "whiteout" {
				permMkfile(t, filepath.Join(d, "n"), "gone\n", 0o644, permFileUID, permFileGID)
			}
			continue
		}
		x := filepath.Join(d, c.target)
		if c.target == "s" {
			permMkdir(t, x, c.mode, permFileUID, permFileGID)
			permMkfile(t, filepath.Join(x, "inner"), "inner\n", 0o644, permFileUID, permFileGID)
			permSetTimes(t, x)
		} else {
			permMkfile(t, x, permScript, c.mode, permFileUID, permFileGID)
		}
		switch {
		case c.opName == "rename-x":
			permMkdir(t, d+".to", 0o777, 0, 0)
		case c.opName == "rename-over" && c.target == "s":
			permMkdir(t, filepath.Join(d, "v"), 0o755, permOther.uid, permOther.gid)
		case c.opName == "rename-over":
			permMkfile(t, filepath.Join(d, "v"), "victim\n", 0o644, permOther.uid, permOther.gid)
		}
	}
}

// permPrepMatrix brings the cells to their state through the mount, as
// root: a copied file had data written (a line appended; then its times
// set as they were built, the same in both unions), a copied directory
// was chmod'ed (to the mode it had), a metacopy
// file was chmod'ed (to the mode it had), a whiteout is a removed file.
func permPrepMatrix(t *testing.T, mnt string, cells []permCell) {
	t.Helper()
	for _, c := range cells {
		var err error
		x := filepath.Join(mnt, c.dir, c.target)
		switch {
		case c.state == "copied" && c.target == "s":
			err = unix.Chmod(x, c.mode)
		case c.state == "copied":
			var f *os.File
			if f, err = os.OpenFile(x, os.O_WRONLY|os.O_APPEND, 0); err == nil {
				_, err = f.WriteString("# copied up\n")
				f.Close()
			}
			if err == nil { // the time of the write differs between the unions
				ts := []unix.Timespec{{Sec: 1_500_000_000}, {Sec: 1_500_000_000}}
				err = unix.UtimesNanoAt(unix.AT_FDCWD, x, ts, 0)
			}
		case c.state == "metacopy":
			err = unix.Chmod(x, c.mode)
		case c.state == "whiteout":
			err = os.Remove(filepath.Join(mnt, c.dir, "n"))
		}
		if err != nil {
			t.Fatalf("preparing %s: %v", c.dir, err)
		}
	}
}

// permCheckStates proves the prepared states are what they are called:
// a copied file is in the upper dir with its data, a metacopy file there
// marked metadata-only, a lower file and a whiteout's directory not yet
// copied up.
func permCheckStates(t *testing.T, sides []*permSide, cells []permCell) {
	t.Helper()
	for _, s := range sides {
		bad := 0
		for _, c := range cells {
			up := filepath.Join(s.tr.upper, c.dir)
			var got, want string
			switch {
			case c.state == "copied" || c.state == "metacopy":
				want = c.state
				buf := make([]byte, 256)
				_, xerr := unix.Lgetxattr(filepath.Join(up, c.target), "trusted.overlay.metacopy", buf)
				switch _, err := os.Lstat(filepath.Join(up, c.target)); {
				case err != nil:
					got = "not in the upper dir"
				case xerr == nil:
					got = "metacopy"
				default:
					got = "copied"
				}
			case c.state == "lower":
				want = "lower only"
				got = want
				if _, err := os.Lstat(up); err == nil {
					got = "directory in the upper dir"
				}
			default:
				continue
			}
			if got != want {
				if bad++; bad <= 5 {
					t.Errorf("%s: %s should be %s: it is %s", s.name, c.dir, want, got)
				}
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d cells not in the state they are named for", s.name, bad)
		}
	}
}

// The permission matrix: every operation, as root, the file's owner, a
// member of its group and another user, on files in every copy-up state,
// in plain, sticky and setgid directories, and creations with every mode
// and umask by every user; layerfs and kernel overlay must agree. Its
// size: 15 file operations x 4 users x 4 states x 2 modes x 3 directory
// kinds (1440), 14 directory operations x 4 users x 3 states x 2 modes x
// 3 kinds (1008), and 21 creations (12 open(O_CREAT) modes and umasks, 9
// mkdir) x 4 users x 3 states of the directory x 3 kinds (756): 3204.
// Afterwards the whole merged trees agree, also as read back from the
// upper dirs.
func TestPermissionMatrix(t *testing.T) {
	needRoot(t)
	permMatrix(t, permMatrixCells())
}

// The data path of -o passthrough (the kernel writes the upper file
// itself): the file operations that read, write, run, truncate or change
// owner or mode, as every user on files in every state.
func TestPermissionMatrixPassthrough(t *testing.T) {
	needRoot(t)
	var cells []permCell
	for _, c := range permMatrixCells() {
		switch c.opName {
		case "read", "write", "exec", "truncate", "chown-self", "chmod":
			if c.target == "f" {
				cells = append(cells, c)
			}
		}
	}
	permMatrix(t, cells, "-o", "passthrough")
}

// permMatrix runs the matrix cells on kernel overlay and on layerfs with
// layerfsOpts.
func permMatrix(t *testing.T, cells []permCell, layerfsOpts ...string) {
	t.Helper()
	sides := permPair(t, func(lower, upper string) { permBuildMatrix(t, lower, upper, cells) }, layerfsOpts...)
	for _, s := range sides {
		permPrepMatrix(t, s.tr.mnt, cells)
	}
	permCheckStates(t, sides, cells)

	cases := make([]permCase, len(cells))
	count := map[string]int{}
	for i, c := range cells {
		pc := permCase{name: c.dir, user: c.user, ops: []permOp{c.op}, view: []string{c.dir}}
		switch {
		case c.create:
			count["creations"]++
		case c.target == "s":
			count["directory operations"]++
		default:
			count["file operations"]++
		}
		if c.opName == "rename-x" {
			pc.view = append(pc.view, c.dir+".to")
		}
		if c.opName == "utimes" {
			pc.mtime = []string{c.dir + "/" + c.target}
		}
		cases[i] = pc
	}
	res := permRun(t, sides, cases)
	n := permCompare(t, "matrix", cases, res)

	// The kernel's answers, to show the matrix is not all one answer.
	outcomes := map[string]int{}
	for i := range cases {
		ans, _, _ := strings.Cut(res[0][i], " ")
		_, errno, _ := strings.Cut(ans, "=")
		errno, _, _ = strings.Cut(errno, "(")
		outcomes[errno]++
	}
	var answers []string
	for e, k := range outcomes {
		answers = append(answers, fmt.Sprintf("%s %d", e, k))
	}
	sort.Strings(answers)
	t.Logf("matrix: %d cells (%d file operations, %d directory operations, %d creations), %d differ; kernel answers: %s",
		len(cells), count["file operations"], count["directory operations"], count["creations"], n, strings.Join(answers, ", "))
	if len(layerfsOpts) == 0 {
		permSanity(t, cases, res[0])
	}

	// What is on disk: each union's upper dir, stacked read-only on its
	// lower dir by the kernel, shows what the live kernel mount shows (so
	// what the kernel cached from layerfs is what layerfs wrote). A
	// read-only mount needs no work dir: remounting the live unions would
	// wait for every mount namespace made meanwhile on the machine (each
	// holds a copy of the mounts) to let go of them. (layerfs as the
	// reader is not asked: it does not read metadata-only files in a
	// lower layer.)
	kernel := treeView(t, sides[0].tr.mnt, viewOpts{allXattr: true})
	permSameLines(t, "the whole trees, kernel vs layerfs", kernel, treeView(t, sides[1].tr.mnt, viewOpts{allXattr: true}))
	for _, s := range sides {
		permSameLines(t, "the kernel's tree vs "+s.name+"'s upper dir read back", kernel, permReadBack(t, s.tr))
	}
}

// permSanity checks a few kernel answers the matrix depends on, so that a
// helper that did not take a user's credentials cannot pass unnoticed.
func permSanity(t *testing.T, cases []permCase, kernel []string) {
	t.Helper()
	want := map[string]string{
		"plain.lower.0764.write.other":          "write=EACCES",
		"plain.lower.0764.write.member":         "write=OK",
		"plain.lower.0764.exec.member":          "exec=EACCES",
		"plain.upper.0764.chmod.member":         "chmod=EPERM",
		"sticky.copied.0764.unlink.other":       "unlink=EPERM",
		"sticky.copied.0764.unlink.member":      "unlink=OK",
		"plain.lower.creat-0666-u022.other":     "creat=EACCES",
		"setgid.lower.creat-0666-u022.other":    "creat=OK",
		"plain.metacopy.0764.chown-other.owner": "chown=EPERM",
		"sticky.lower.d0775.unlink.other":       "rmdir=EPERM",
		"plain.lower.d0775.unlink.owner":        "rmdir=ENOTEMPTY",
		"plain.copied.d0750.exec.other":         "lstat=EACCES",
	}
	for i, c := range cases {
		if w, ok := want[c.name]; ok {
			if !strings.HasPrefix(kernel[i], w+" ") {
				t.Errorf("kernel overlay: %s as %s: want %s, got %s", c.name, c.user.name, w, kernel[i])
			}
			delete(want, c.name)
		}
	}
	for name := range want {
		t.Errorf("no matrix cell %s", name)
	}
	// Modes of 0 stay 0; a setgid directory hands down its group (and
	// setgid to directories); setgid asked by a non-member is dropped.
	shows := map[string]string{
		"plain.lower.creat-0000-u022.owner":     "n ---------- uid=1001 gid=1001 ",
		"plain.upper.mkdir-0000-u000.owner":     "n d--------- uid=1001 gid=1001 ",
		"setgid.lower.mkdir-0777-u022.other":    "n dgrwxr-xr-x uid=1003 gid=1002 ",
		"setgid.whiteout.creat-2775-u000.other": "n -rwxrwxr-x uid=1003 gid=1002 ",
	}
	for i, c := range cases {
		if w, ok := shows[c.name]; ok && !strings.Contains(kernel[i], w) {
			t.Errorf("kernel overlay: %s as %s: want %q in %s", c.name, c.user.name, w, kernel[i])
		}
	}
}

// permSameLines compares two tree views line by line, showing the first
// lines that differ.
func permSameLines(t *testing.T, what, a, b string) {
	t.Helper()
	if a == b {
		return
	}
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	inA := map[string]bool{}
	for _, l := range al {
		inA[l] = true
	}
	inB := map[string]bool{}
	for _, l := range bl {
		inB[l] = true
	}
	var d []string
	for _, l := range al {
		if !inB[l] {
			d = append(d, "- "+permPrintable(l))
		}
	}
	for _, l := range bl {
		if !inA[l] {
			d = append(d, "+ "+permPrintable(l))
		}
	}
	n := len(d)
	if n > 30 {
		d = d[:30]
	}
	t.Errorf("%s: %d lines differ (- first, + second):\n%s", what, n, strings.Join(d, "\n"))
}

// permACLs are the lower files of the ACL tests (owner:1002, content
// "acl data"): a mode and the ACL entries setfacl -m adds.
var permACLs = []struct {
	name string
	mode uint32
	acl  string
}{
	{"deny", 0o644, "u:1003:---"}, // denies the named user what others may
	{"grant", 0o600, "u:1003:r"},  // grants the named user read (group::---)
	{"cp", 0o640, "u:1003:rw"},    // copied up by a write
	{"mc", 0o640, "u:1003:r"},     // chmod'ed (metadata only), then setfacl
	{"chm", 0o660, "u:1003:rw"},   // chmod'ed: the mask follows
}

// permDefaultACL is the default ACL of the directories new entries
// inherit from: a named user and group, an explicit mask, others r-x.
const permDefaultACL = "d:u::rwx,d:g::r-x,d:o::r-x,d:u:1003:rwx,d:g:1005:r-x,d:m::rwx"

// permACLDirs hold what the ACL tests make: dacl (lower) and udacl (upper
// only) with permDefaultACL, dmin (lower) with a minimal default ACL,
// dwh (lower, permDefaultACL, setgid) with a file f and a directory d
// removed and made again, over whiteouts.
var permACLDirs = []string{"acl", "dacl", "udacl", "dmin", "dwh"}

func permACLBuild(t *testing.T, lower, upper string) {
	t.Helper()
	permMkdir(t, filepath.Join(lower, "acl"), 0o755, 0, 0)
	for _, f := range permACLs {
		p := filepath.Join(lower, "acl", f.name)
		permMkfile(t, p, "acl data\n", f.mode, permFileUID, permFileGID)
		permMust(t, "setfacl", "-m", f.acl, p)
	}
	for _, d := range []struct {
		dir, acl string
		mode     uint32
	}{
		{filepath.Join(lower, "dacl"), permDefaultACL, 0o777},
		{filepath.Join(upper, "udacl"), permDefaultACL, 0o777},
		{filepath.Join(lower, "dmin"), "d:u::rwx,d:g::---,d:o::---", 0o777},
		{filepath.Join(lower, "dwh"), permDefaultACL, 0o2777}, // and setgid
	} {
		permMkdir(t, d.dir, d.mode, 0, permSharedGID)
		permMust(t, "setfacl", "-m", d.acl, d.dir)
	}
	permMkfile(t, filepath.Join(lower, "dwh", "f"), "old\n", 0o644, permFileUID, permFileGID)
	permMkdir(t, filepath.Join(lower, "dwh", "d"), 0o755, permFileUID, permFileGID)
}

// permACLAccess is read and write of the ACL files as every user but
// root (the named user is other, stranger is not named).
func permACLAccess(phase string) []permCase {
	var cases []permCase
	for _, u := range []permUser{permOwner, permMember, permOther, permStranger} {
		for _, f := range []string{"deny", "grant"} {
			for _, op := range []permOp{{Op: "read"}, {Op: "write", Value: phase + " " + u.name + "\n"}} {
				op.Path, op.Umask = "acl/"+f, 0o22
				cases = append(cases, permCase{name: phase + "." + op.Op + "." + f + "." + u.name, user: u, ops: []permOp{op}})
			}
		}
	}
	return cases
}

// POSIX ACLs through the mount (issue 13, item 2), compared with kernel
// overlay: access ACLs deny and grant as the kernel does, default ACLs
// give new files and directories (every user, umask 022 and 077) the
// same ACL and mode, chmod moves the mask, ACLs survive copy-up and
// metadata-only copy-up (getfacl through the mount and in the upper
// dir), and a file made over a whiteout inherits the lower directory's
// default ACL.
func TestPermissionACL(t *testing.T) {
	needRoot(t)
	needTool(t, "setfacl", "acl")
	needTool(t, "getfacl", "acl")
	sides := permPair(t, func(lower, upper string) { permACLBuild(t, lower, upper) })

	// Access ACLs, as every user.
	cases := permACLAccess("a")
	res := permRun(t, sides, cases)
	permCompare(t, "ACL access", cases, res)
	for i, c := range cases {
		want := map[string]string{
			"a.read.deny.other":    "read=EACCES",
			"a.read.deny.stranger": "read=OK",
			"a.read.grant.other":   "read=OK",
			"a.read.grant.member":  "read=EACCES",
		}[c.name]
		if want != "" && !strings.HasPrefix(res[0][i], want) {
			t.Errorf("kernel overlay: %s: want %s, got %s (ACLs not in effect?)", c.name, want, res[0][i])
		}
	}

	// Changes: copy-up by a write, chmod (metadata only) then setfacl,
	// chmod of a file with an ACL, a file and a directory removed over
	// the default-ACL directory dwh.
	owner := func(ops ...permOp) permCase {
		for i := range ops {
			ops[i].Umask = 0o22
		}
		return permCase{name: "change." + ops[0].Path, user: permOwner, ops: ops}
	}
	cases = []permCase{
		owner(permOp{Op: "write", Path: "acl/cp", Value: "more\n"}),
		owner(permOp{Op: "chmod", Path: "acl/mc", Mode: 0o660},
			permOp{Op: "run", Args: []string{"setfacl", "-m", "u:1004:rw", "$M/acl/mc"}}),
		owner(permOp{Op: "chmod", Path: "acl/chm", Mode: 0o640}),
		{name: "change.dwh", user: permRoot, ops: []permOp{{Op: "unlink", Path: "dwh/f"}, {Op: "rmdir", Path: "dwh/d"}}},
	}
	res = permRun(t, sides, cases)
	permCompare(t, "ACL changes", cases, res)

	// New entries under default ACLs, by every user, with both umasks.
	cases = nil
	var made []string
	for _, d := range []string{"dacl", "udacl", "dmin"} {
		for _, u := range permMatrixUsers {
			for _, um := range []int{0o22, 0o77} {
				f := fmt.Sprintf("%s/f.%s.u%03o", d, u.name, um)
				sub := fmt.Sprintf("%s/d.%s.u%03o", d, u.name, um)
				made = append(made, f)
				cases = append(cases, permCase{name: "new." + f, user: u, ops: []permOp{
					{Op: "creat", Path: f, Mode: 0o666, Umask: um},
					{Op: "mkdir", Path: sub, Mode: 0o777, Umask: um},
				}})
			}
		}
	}
	made = append(made, "dwh/f")
	cases = append(cases,
		permCase{name: "new.dwh/f", user: permMember, ops: []permOp{{Op: "creat", Path: "dwh/f", Mode: 0o666, Umask: 0o22}}},
		permCase{name: "new.dwh/d", user: permOther, ops: []permOp{{Op: "mkdir", Path: "dwh/d", Mode: 0o777, Umask: 0o77}}})
	res = permRun(t, sides, cases)
	permCompare(t, "ACL inheritance", cases, res)

	// What every user may do with the new entries, and with the access
	// ACL files again after their changes; then everything as it is.
	cases = permACLAccess("b")
	for _, u := range []permUser{permOwner, permMember, permOther, permStranger} {
		for _, f := range append(made, "acl/cp", "acl/mc", "acl/chm") {
			cases = append(cases, permCase{name: "b.read." + f + "." + u.name, user: u, ops: []permOp{{Op: "read", Path: f, Umask: 0o22}}},
				permCase{name: "b.write." + f + "." + u.name, user: u, ops: []permOp{{Op: "write", Path: f, Value: u.name + "\n", Umask: 0o22}}})
		}
		for _, d := range []string{"dacl/d.root.u022", "dacl/d.owner.u077", "dwh/d"} {
			cases = append(cases, permCase{name: "b.creat." + d + "." + u.name, user: u,
				ops: []permOp{{Op: "creat", Path: d + "/x." + u.name, Mode: 0o666, Umask: 0o22}}})
		}
	}
	cases = append(cases, permCase{name: "all", user: permRoot, view: permACLDirs})
	res = permRun(t, sides, cases)
	permCompare(t, "ACL permissions of new entries", cases, res)

	// getfacl -n through the mounts, and in the upper dirs.
	permSameLines(t, "getfacl -n through the mount, kernel vs layerfs",
		permGetfacl(t, sides[0].tr.mnt), permGetfacl(t, sides[1].tr.mnt))
	permSameLines(t, "getfacl -n in the upper dir, kernel vs layerfs",
		permGetfacl(t, sides[0].tr.upper), permGetfacl(t, sides[1].tr.upper))
	// chmod then setfacl copied metadata only, on both.
	var meta [2]bool
	for i, s := range sides {
		_, err := unix.Lgetxattr(filepath.Join(s.tr.upper, "acl/mc"), "trusted.overlay.metacopy", nil)
		meta[i] = err == nil
	}
	if meta[0] != meta[1] {
		t.Errorf("acl/mc after chmod and setfacl: metadata-only copy on the kernel: %v, on layerfs: %v", meta[0], meta[1])
	}
}

// permGetfacl is getfacl -n of everything under the ACL test directories
// of root (a mount or an upper dir), in path order.
func permGetfacl(t *testing.T, root string) string {
	t.Helper()
	var paths []string
	for _, d := range permACLDirs {
		filepath.Walk(filepath.Join(root, d), func(p string, fi os.FileInfo, err error) error {
			if err == nil {
				rel, _ := filepath.Rel(root, p)
				paths = append(paths, rel)
			}
			return nil
		})
	}
	sort.Strings(paths)
	cmd := exec.Command("getfacl", append([]string{"-n", "--"}, paths...)...)
	cmd.Dir = root
	r := runCmd(t, cmd)
	return r.stdout + r.stderr
}

// -o noacl: layerfs enforces the mode bits only, and the umask applies
// under a default ACL (kernel overlay has no such option: the expected
// answers are written out).
func TestPermissionNoACL(t *testing.T) {
	needRoot(t)
	needTool(t, "setfacl", "acl")
	tr := permTree(t)
	permACLBuild(t, tr.lowers[0], tr.upper)
	tr.mount(t, "-o", "noacl")
	type check struct {
		user permUser
		op   permOp
		want string
	}
	checks := []check{
		// deny is 0644: others read, the ACL's denial does not count.
		{permOther, permOp{Op: "read", Path: "acl/deny"}, "OK"},
		{permStranger, permOp{Op: "read", Path: "acl/deny"}, "OK"},
		// grant shows 0640 (the mask in the group bits): the group
		// reads, the named user is just another user.
		{permMember, permOp{Op: "read", Path: "acl/grant"}, "OK"},
		{permOther, permOp{Op: "read", Path: "acl/grant"}, "EACCES"},
		{permStranger, permOp{Op: "read", Path: "acl/grant"}, "EACCES"},
	}
	for _, um := range []int{0o22, 0o77} {
		for _, d := range []string{"dacl", "udacl"} {
			checks = append(checks,
				check{permMember, permOp{Op: "creat", Path: fmt.Sprintf("%s/f%03o", d, um), Mode: 0o666, Umask: um}, "OK"},
				check{permMember, permOp{Op: "mkdir", Path: fmt.Sprintf("%s/d%03o", d, um), Mode: 0o777, Umask: um}, "OK"})
		}
	}
	for _, c := range checks {
		out := permAs(t, c.user, tr.mnt, []permOp{c.op})[0]
		if out.Err != c.want {
			t.Errorf("noacl: %s %s as %s: want %s, got %s", c.op.Op, c.op.Path, c.user.name, c.want, out.Err)
		}
	}
	for _, um := range []uint32{0o22, 0o77} {
		for _, d := range []string{"dacl", "udacl"} {
			for p, want := range map[string]uint32{fmt.Sprintf("%s/f%03o", d, um): 0o666 &^ um, fmt.Sprintf("%s/d%03o", d, um): 0o777 &^ um} {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(tr.mnt, p), &st); err != nil {
					t.Errorf("noacl: %v", err)
				} else if st.Mode&0o7777 != want {
					t.Errorf("noacl: %s has mode %04o, want %04o (the umask, not the default ACL)", p, st.Mode&0o7777, want)
				}
			}
		}
	}
	cmd := exec.Command("getfacl", "-n", "acl/grant", "dacl/f022")
	cmd.Dir = tr.mnt
	r := runCmd(t, cmd)
	t.Logf("noacl: getfacl -n through the mount:\n%s%s", r.stdout, r.stderr)
}

// security.capability (issue 13, item 2): a lower file with a file
// capability keeps or loses it, through writes, truncate, chown and the
// rest, by root and by the owner, on lower and metacopy files, exactly
// when it does on kernel overlay, through the mount and in the upper dir;
// with layerfs's default I/O and with -o passthrough.
func TestPermissionFileCapability(t *testing.T) {
	needRoot(t)
	needTool(t, "setcap", "libcap2-bin")
	t.Run("default", func(t *testing.T) { permFileCapability(t) })
	t.Run("passthrough", func(t *testing.T) { permFileCapability(t, "-o", "passthrough") })
}

func permFileCapability(t *testing.T, layerfsOpts ...string) {
	t.Helper()
	ops := []struct {
		name string
		user permUser
		op   permOp
	}{
		{"read.root", permRoot, permOp{Op: "read"}},
		{"write.root", permRoot, permOp{Op: "write", Value: "#w\n"}},
		{"write.owner", permOwner, permOp{Op: "write", Value: "#w\n"}},
		{"write.member", permMember, permOp{Op: "write", Value: "#w\n"}},
		{"truncate.owner", permOwner, permOp{Op: "truncate"}},
		{"chown.root", permRoot, permOp{Op: "chown", UID: permForeignUID, GID: -1}},
		{"chown-self.root", permRoot, permOp{Op: "chown", UID: permFileUID, GID: permFileGID}},
		{"chown-self.owner", permOwner, permOp{Op: "chown", UID: permFileUID, GID: -1}},
		{"chgrp.owner", permOwner, permOp{Op: "chown", UID: -1, GID: permSharedGID}},
		{"chmod.owner", permOwner, permOp{Op: "chmod", Mode: 0o755}},
		{"utimes.owner", permOwner, permOp{Op: "utimes", Sec: 1_000_000_000}},
		{"setxattr.root", permRoot, permOp{Op: "setxattr", Name: "user.x", Value: "1"}},
	}
	states := []string{"lower", "metacopy"}
	sides := permPair(t, func(lower, upper string) {
		permMkdir(t, filepath.Join(lower, "cap"), 0o777, 0, 0)
		for _, s := range states {
			for _, o := range ops {
				p := filepath.Join(lower, "cap", s+"."+o.name)
				permMkfile(t, p, permScript, 0o775, permFileUID, permFileGID)
				permMust(t, "setcap", "cap_net_raw+ep", p)
			}
		}
	}, layerfsOpts...)
	for _, s := range sides {
		for _, o := range ops {
			if err := unix.Chmod(filepath.Join(s.tr.mnt, "cap", "metacopy."+o.name), 0o775); err != nil {
				t.Fatal(err)
			}
		}
	}
	var cases []permCase
	for _, s := range states {
		for _, o := range ops {
			op := o.op
			op.Path, op.Umask = "cap/"+s+"."+o.name, 0o22
			cases = append(cases, permCase{name: s + "." + o.name, user: o.user, ops: []permOp{op}, view: []string{op.Path}})
		}
	}
	res := permRun(t, sides, cases)
	permCompare(t, "file capabilities", cases, res)
	var kept, gone []string
	for _, c := range cases {
		var has [2]bool
		for i, s := range sides {
			_, err := unix.Lgetxattr(filepath.Join(s.tr.upper, c.ops[0].Path), "security.capability", nil)
			if _, serr := os.Lstat(filepath.Join(s.tr.upper, c.ops[0].Path)); serr != nil {
				_, err = unix.Lgetxattr(filepath.Join(s.tr.lowers[0], c.ops[0].Path), "security.capability", nil)
			}
			has[i] = err == nil
		}
		if has[0] != has[1] {
			t.Errorf("file capabilities: %s: in the upper dir the kernel has security.capability: %v, layerfs: %v", c.name, has[0], has[1])
		}
		if has[0] {
			kept = append(kept, c.name)
		} else {
			gone = append(gone, c.name)
		}
	}
	t.Logf("kernel overlay keeps the capability after: %s; drops it after: %s", strings.Join(kept, " "), strings.Join(gone, " "))
}

// permSymlinkOps are the calls on a lower symlink l (→ target) of the
// symlink tests.
var permSymlinkOps = []struct {
	name string
	op   func(u permUser) permOp
}{
	{"lchown-other", func(u permUser) permOp { return permOp{Op: "lchown", UID: permForeignUID, GID: permSharedGID} }},
	{"lchown-self", func(u permUser) permOp { return permOp{Op: "lchown", UID: u.uid, GID: -1} }},
	{"lchgrp", func(u permUser) permOp { return permOp{Op: "lchown", UID: -1, GID: permSharedGID} }},
	{"lutimes", func(u permUser) permOp { return permOp{Op: "lutimes", Sec: 1_000_000_000} }},
	{"ltouch", func(u permUser) permOp { return permOp{Op: "ltouch"} }},
	{"lsetxattr-user", func(u permUser) permOp { return permOp{Op: "lsetxattr", Name: "user.x", Value: "1"} }},
	{"lsetxattr-trusted", func(u permUser) permOp { return permOp{Op: "lsetxattr", Name: "trusted.x", Value: "1"} }},
}

// Symlinks (issue 13, item 5): copy-up of a lower symlink by lchown,
// utimes without following, user xattrs on symlinks (EPERM), as root, the
// link's owner and another user, each on a symlink (and directory) of its
// own; the merged views and the upper dirs agree with kernel overlay.
func TestPermissionSymlinks(t *testing.T) {
	needRoot(t)
	users := []permUser{permRoot, permOwner, permOther}
	dir := func(op string, u permUser) string { return "sl." + op + "." + u.name }
	sides := permPair(t, func(lower, upper string) {
		for _, o := range permSymlinkOps {
			for _, u := range users {
				d := filepath.Join(lower, dir(o.name, u))
				permMkdir(t, d, 0o777, 0, 0)
				permMkfile(t, filepath.Join(d, "target"), "t\n", 0o644, 0, 0)
				if err := os.Symlink("target", filepath.Join(d, "l")); err != nil {
					t.Fatal(err)
				}
				if err := os.Lchown(filepath.Join(d, "l"), permFileUID, permFileGID); err != nil {
					t.Fatal(err)
				}
				permSetTimes(t, filepath.Join(d, "l"))
			}
		}
	})
	var cases []permCase
	var dirs []string
	for _, o := range permSymlinkOps {
		for _, u := range users {
			op := o.op(u)
			d := dir(o.name, u)
			op.Path, op.Umask = d+"/l", 0o22
			c := permCase{name: d, user: u, ops: []permOp{op}, view: []string{d}}
			if o.name == "lutimes" {
				c.mtime = []string{d + "/l"}
			}
			cases = append(cases, c)
			dirs = append(dirs, d)
		}
	}
	res := permRun(t, sides, cases)
	permCompare(t, "symlinks", cases, res)
	var uppers [2]string
	for i, s := range sides {
		for _, d := range dirs {
			uppers[i] += d + ": " + permUpperIDs(t, filepath.Join(s.tr.upper, d)) + "\n"
		}
	}
	permSameLines(t, "symlinks: the upper dirs, kernel vs layerfs", uppers[0], uppers[1])
}

// permUpperIDs describes the entries of an upper directory by name, type,
// mode and owner only (the union's private xattrs and the data of
// metadata-only copies differ between the drivers by design).
func permUpperIDs(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "absent"
	}
	var out []string
	for _, e := range ents {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, e.Name()), &st); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %o %d:%d", e.Name(), st.Mode, st.Uid, st.Gid))
	}
	return strings.Join(out, ", ")
}

// The user namespace of a rootless container engine: uid and gid 0 map
// to host id 1000, 1..65536 to 100000..165535 (as newuidmap sets up for
// podman).
var (
	permNSHostRoot = 1000
	permNSBase     = 100000
	permNSMap      = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 1000, Size: 1}, {ContainerID: 1, HostID: 100000, Size: 65536}}
)

// Symlinks in a rootless user namespace (issue 13, item 5): mapped root
// mounts kernel overlay (userxattr) and layerfs (/dev/fuse opened in the
// namespace) over layers owned by mapped ids, and changes the owner and
// times of lower symlinks and regular files, sets a user xattr on a
// symlink, renames and removes lower symlinks, changes the owner of a
// lower FIFO; both answer the same and leave the same upper dir.
func TestPermissionUserNamespaceSymlink(t *testing.T) {
	plainUser(t) // opens /dev/fuse to every user for the test
	needTool(t, "mount", "mount")
	ns := func(id int) int { // a namespace id as the host sees it
		if id == 0 {
			return permNSHostRoot
		}
		return permNSBase + id - 1
	}
	names := []string{"link", "file", "fifo", "link2", "link3", "link4", "link5", "link6", "link7"}
	var trees [2]*tree
	for i := range trees {
		tr := permTree(t)
		trees[i] = tr
		low := tr.lowers[0]
		permMkdir(t, filepath.Join(low, "d"), 0o755, ns(1), ns(1))
		for _, n := range names {
			p := filepath.Join(low, "d", n)
			var err error
			switch n {
			case "file":
				permMkfile(t, p, "data\n", 0o644, ns(2), ns(2))
				continue
			case "fifo":
				err = unix.Mkfifo(p, 0o644)
			default:
				err = os.Symlink("file", p)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(p, ns(2), ns(2)); err != nil {
				t.Fatal(err)
			}
			permSetTimes(t, p)
		}
		for _, p := range []string{tr.root, tr.upper, tr.work, tr.mnt, low} {
			if err := os.Chown(p, ns(0), ns(0)); err != nil {
				t.Fatal(err)
			}
		}
	}
	ops := []permOp{
		{Op: "lchown", Path: "d/link", UID: 1000, GID: 1000}, // what chown -h 1000:1000 does
		{Op: "lstat", Path: "d/link"},
		{Op: "chown", Path: "d/file", UID: 1000, GID: 1000},
		{Op: "lstat", Path: "d/file"},
		{Op: "lutimes", Path: "d/link2", Sec: 1_000_000_000},
		{Op: "lstat", Path: "d/link2", Name: "mtime"},
		{Op: "lsetxattr", Path: "d/link3", Name: "user.x", Value: "1"},
		{Op: "lchown", Path: "d/link4", UID: 0, GID: 0},
		{Op: "lstat", Path: "d/link4"},
		{Op: "ltouch", Path: "d/link5"},
		{Op: "lstat", Path: "d/link5"},
		{Op: "rename", Path: "d/link6", Path2: "d/link6.moved"},
		{Op: "lstat", Path: "d/link6.moved"},
		{Op: "unlink", Path: "d/link7"},
		{Op: "lstat", Path: "d/link7"},
		{Op: "chmod", Path: "d/file", Mode: 0o600},
		{Op: "lstat", Path: "d/file"},
		{Op: "chown", Path: "d/fifo", UID: 1000, GID: 1000}, // neither takes user.* xattrs
		{Op: "lstat", Path: "d/fifo"},
	}
	reqDir := t.TempDir()
	os.Chmod(reqDir, 0o755)
	var reqs [2]string
	for i, tr := range trees {
		b, err := json.Marshal(permReq{Root: tr.mnt, Ops: ops})
		if err != nil {
			t.Fatal(err)
		}
		reqs[i] = filepath.Join(reqDir, fmt.Sprintf("req%d.json", i))
		if err := os.WriteFile(reqs[i], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := `
		set -e
		mount --make-rprivate /
		trap 'umount "$KM" 2>/dev/null; umount "$LM" 2>/dev/null' EXIT
		mount -t overlay overlay -o "$KOPTS,userxattr" "$KM"
		"$LAYERFS" --driver=fuse -o "$LOPTS" "$LM"
		grep -q " $LM fuse.layerfs " /proc/self/mounts
		LAYERFS_PERM_HELPER=1 "$HELPER" <"$REQK"
		LAYERFS_PERM_HELPER=1 "$HELPER" <"$REQL"
	`
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = "/"
	cmd.Env = append(permHelperEnviron(), "LAYERFS="+binary, "HELPER="+permHelperPath(t),
		"KM="+trees[0].mnt, "KOPTS="+trees[0].opts(), "REQK="+reqs[0],
		"LM="+trees[1].mnt, "LOPTS="+trees[1].opts(), "REQL="+reqs[1])
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings:                permNSMap,
		GidMappings:                permNSMap,
		GidMappingsEnableSetgroups: true,
		Credential:                 &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}},
	}
	r := runCmd(t, cmd)
	if r.code != 0 {
		t.Fatalf("in the user namespace: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	var outs [2][]permOut
	for i := range outs {
		if err := dec.Decode(&outs[i]); err != nil || len(outs[i]) != len(ops) {
			t.Fatalf("in the user namespace: %v: %s%s", err, r.stdout, r.stderr)
		}
	}
	for i, o := range ops {
		k, l := outs[0][i], outs[1][i]
		if k != l {
			t.Errorf("user namespace: %s %s: kernel %s %s, layerfs %s %s", o.Op, o.Path, k.Err, k.Out, l.Err, l.Out)
		}
	}
	t.Logf("user namespace, kernel overlay (userxattr): %v", outs[0])
	permSameLines(t, "user namespace: the upper dirs, kernel vs layerfs",
		permUpperIDs(t, filepath.Join(trees[0].upper, "d")), permUpperIDs(t, filepath.Join(trees[1].upper, "d")))
}

// permReadBack describes the union of tr's upper and lower dirs mounted
// read-only by the kernel (the upper as the top lower layer), with
// redirects and metadata-only files followed.
func permReadBack(t *testing.T, tr *tree) string {
	t.Helper()
	mnt := filepath.Join(tr.root, "readback")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cleanupMount(t, mnt)
	lowers := "lowerdir=" + tr.upper + ":" + strings.Join(tr.lowers, ":")
	permMust(t, "mount", "-t", "overlay", "overlay", "-o", "ro,"+lowers+",redirect_dir=follow,metacopy=on", mnt)
	v := treeView(t, mnt, viewOpts{allXattr: true})
	permMust(t, "umount", mnt)
	return v
}

// Set-id bits after a write or a truncate, by every kind of user, for the
// modes where the rules differ: S_ISUID goes for all but root; S_ISGID
// goes where group execute is set, and without it only for callers
// outside the group. The kernel's FUSE module clears them by the older
// rule (S_ISGID only with group execute) and layerfs adds the rest where
// the write reaches it; with passthrough it does not, so the modes
// without group execute are left out there (docs/compat.md).
func TestPermissionSetIDAfterWrite(t *testing.T) {
	needRoot(t)
	t.Run("default", func(t *testing.T) {
		permSetIDAfterWrite(t, []uint32{0o6777, 0o6767, 0o4777, 0o2777, 0o2767})
	})
	t.Run("passthrough", func(t *testing.T) {
		permSetIDAfterWrite(t, []uint32{0o6777, 0o4777, 0o2777}, "-o", "passthrough")
	})
}

func permSetIDAfterWrite(t *testing.T, modes []uint32, layerfsOpts ...string) {
	t.Helper()
	ops := []struct {
		name string
		user permUser
		op   permOp
	}{
		{"write.root", permRoot, permOp{Op: "write", Value: "w"}},
		{"write.owner", permOwner, permOp{Op: "write", Value: "w"}},
		{"write.member", permMember, permOp{Op: "write", Value: "w"}},
		{"write.other", permOther, permOp{Op: "write", Value: "w"}},
		{"truncate.member", permMember, permOp{Op: "truncate"}},
		{"truncate.other", permOther, permOp{Op: "truncate"}},
	}
	states := []string{"lower", "upper"}
	name := func(s string, mode uint32, op string) string { return fmt.Sprintf("sid/%s.%04o.%s", s, mode, op) }
	sides := permPair(t, func(lower, upper string) {
		for _, layer := range []string{lower, upper} {
			permMkdir(t, filepath.Join(layer, "sid"), 0o777, 0, 0)
		}
		for _, s := range states {
			layer := map[string]string{"lower": lower, "upper": upper}[s]
			for _, m := range modes {
				for _, o := range ops {
					permMkfile(t, filepath.Join(layer, name(s, m, o.name)), "data", m, permFileUID, permFileGID)
				}
			}
		}
	}, layerfsOpts...)
	var cases []permCase
	for _, s := range states {
		for _, m := range modes {
			for _, o := range ops {
				op := o.op
				op.Path, op.Umask = name(s, m, o.name), 0o22
				cases = append(cases, permCase{name: op.Path, user: o.user, ops: []permOp{op}, view: []string{op.Path}})
			}
		}
	}
	res := permRun(t, sides, cases)
	permCompare(t, "set-id bits after a write", cases, res)
}
