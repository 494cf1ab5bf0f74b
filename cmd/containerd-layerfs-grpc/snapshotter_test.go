package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/pkg/userns"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/overlay"
)

func TestTranslate(t *testing.T) {
	extra := []string{"driver=fuse"}
	for _, tc := range []struct {
		name    string
		in, out []mount.Mount
	}{
		{"nil stays nil", nil, nil},
		{
			"a bind mount (no parent) stays",
			[]mount.Mount{{Type: "bind", Source: "/r/snapshots/1/fs", Options: []string{"rw", "rbind"}}},
			[]mount.Mount{{Type: "bind", Source: "/r/snapshots/1/fs", Options: []string{"rw", "rbind"}}},
		},
		{
			"an active snapshot over layers becomes layerfs, options kept in order",
			[]mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{
				"index=off", "workdir=/r/snapshots/3/work", "upperdir=/r/snapshots/3/fs", "lowerdir=/r/snapshots/2/fs:/r/snapshots/1/fs"}}},
			[]mount.Mount{{Type: "fuse3.layerfs", Source: "layerfs", Options: []string{
				"index=off", "workdir=/r/snapshots/3/work", "upperdir=/r/snapshots/3/fs", "lowerdir=/r/snapshots/2/fs:/r/snapshots/1/fs", "driver=fuse"}}},
		},
		{
			"a read-only view of several layers becomes layerfs",
			[]mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{"userxattr", "lowerdir=/a:/b"}}},
			[]mount.Mount{{Type: "fuse3.layerfs", Source: "layerfs", Options: []string{"userxattr", "lowerdir=/a:/b", "driver=fuse"}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := translate(tc.in, extra)
			if !reflect.DeepEqual(got, tc.out) {
				t.Errorf("translate(%v) = %v, want %v", tc.in, got, tc.out)
			}
		})
	}
}

// TestTranslateDoesNotAlias: the overlay snapshotter appends to a shared
// options slice; the translated options must be a copy.
func TestTranslateDoesNotAlias(t *testing.T) {
	shared := make([]string, 1, 8)
	shared[0] = "lowerdir=/a:/b"
	in := []mount.Mount{{Type: "overlay", Source: "overlay", Options: shared}}
	out := translate(in, []string{"driver=fuse"})
	out[0].Options[0] = "changed"
	if shared[0] != "lowerdir=/a:/b" {
		t.Fatal("translate changed its input's options")
	}
}

// TestSnapshotter runs the wrapped overlay snapshotter on a temporary
// directory (nothing is mounted): the first snapshot is a bind mount, an
// active snapshot over a committed one and a view of two layers are
// layerfs mounts naming the snapshot directories.
func TestSnapshotter(t *testing.T) {
	root := t.TempDir()
	inner, err := overlay.NewSnapshotter(root, overlayOptions(&config{asyncRemove: true, userxattr: "auto"})...)
	if err != nil {
		t.Fatal(err)
	}
	sn := &layerfsSnapshotter{Snapshotter: inner, extra: []string{"driver=fuse"}}
	defer sn.Close()
	ctx := context.Background()

	ms, err := sn.Prepare(ctx, "a-active", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Type != "bind" {
		t.Fatalf("first snapshot: got %v, want one bind mount", ms)
	}
	if err := sn.Commit(ctx, "a", "a-active"); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Prepare(ctx, "b-active", "a"); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, "b", "b-active"); err != nil {
		t.Fatal(err)
	}
	for _, call := range []struct {
		name  string
		mount func() ([]mount.Mount, error)
		keys  []string
	}{
		{"Prepare", func() ([]mount.Mount, error) { return sn.Prepare(ctx, "c", "b") }, []string{"workdir=", "upperdir=", "lowerdir="}},
		{"Mounts", func() ([]mount.Mount, error) { return sn.Mounts(ctx, "c") }, []string{"workdir=", "upperdir=", "lowerdir="}},
		{"View", func() ([]mount.Mount, error) { return sn.View(ctx, "v", "b") }, []string{"lowerdir="}},
	} {
		ms, err := call.mount()
		if err != nil {
			t.Fatalf("%s: %v", call.name, err)
		}
		if len(ms) != 1 || ms[0].Type != "fuse3.layerfs" || ms[0].Source != "layerfs" {
			t.Fatalf("%s: got %v, want one fuse3.layerfs mount", call.name, ms)
		}
		opts := strings.Join(ms[0].Options, ",")
		for _, k := range call.keys {
			if !strings.Contains(opts, k+root) {
				t.Errorf("%s: options %q lack %s under %s", call.name, opts, k, root)
			}
		}
		if !strings.HasSuffix(opts, ",driver=fuse") {
			t.Errorf("%s: options %q", call.name, opts)
		}
		if strings.Contains(opts, "userxattr") != userns.RunningInUserNS() {
			t.Errorf("%s: userxattr in %q, in a user namespace: %v", call.name, opts, userns.RunningInUserNS())
		}
	}
	// A view of one layer is a read-only bind mount.
	ms, err = sn.View(ctx, "v1", "a")
	if err != nil || len(ms) != 1 || ms[0].Type != "bind" {
		t.Fatalf("view of one layer: %v, %v", ms, err)
	}
	// Remove, then Cleanup (asynchronous removal) deletes the directory.
	info, err := sn.Stat(ctx, "c")
	if err != nil || info.Kind != snapshots.KindActive {
		t.Fatalf("stat: %v %v", info, err)
	}
	before := countDirs(t, filepath.Join(root, "snapshots"))
	if err := sn.Remove(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if err := sn.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if after := countDirs(t, filepath.Join(root, "snapshots")); after != before-1 {
		t.Errorf("snapshot dirs: %d before Remove+Cleanup, %d after", before, after)
	}
}

func countDirs(t *testing.T, dir string) int {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "want SOCKET and ROOT, got 0 argument(s)"},
		{[]string{"/s"}, 2, "want SOCKET and ROOT, got 1 argument(s)"},
		{[]string{"/s", "/r", "/x"}, 2, "got 3 argument(s)"},
		{[]string{"--driver=nope", "/s", "/r"}, 2, "--driver=nope: want fuse, auto or kernel"},
		{[]string{"--userxattr=off", "/s", "/r"}, 2, "--userxattr=off: want on or auto"},
		{[]string{"--nope", "/s", "/r"}, 2, "unknown flag: --nope"},
		{[]string{"", "/r"}, 2, "must not be empty"},
	} {
		var stderr bytes.Buffer
		_, err := parseArgs(tc.args, &stderr)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != tc.code || !strings.Contains(ee.msg, tc.msg) || strings.Contains(ee.msg, "\n") {
			t.Errorf("parseArgs(%q) = %v, want code %d and one line with %q", tc.args, err, tc.code, tc.msg)
		}
	}
	c, err := parseArgs([]string{"--driver", "auto", "/s", "/r"}, &bytes.Buffer{})
	if err != nil || c.socket != "/s" || c.root != "/r" || c.driver != "auto" || !c.asyncRemove {
		t.Errorf("parseArgs: %+v, %v", c, err)
	}
}
