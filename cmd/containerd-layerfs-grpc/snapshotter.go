package main

import (
	"context"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/snapshots"
)

// mountType is what containerd sees: a "fuse3." type makes it run
// mount.fuse3, which runs the program named after the dot (layerfs, from
// PATH) as `layerfs SOURCE TARGET -o OPTIONS`.
const (
	mountType   = "fuse3.layerfs"
	mountSource = "layerfs"
)

// layerfsSnapshotter is containerd's overlay snapshotter with every kernel
// overlay mount it hands out turned into a layerfs mount. The layout on
// disk (snapshots/N/fs, snapshots/N/work, metadata.db) is the overlay
// snapshotter's own: layerfs reads and writes kernel overlay's format.
type layerfsSnapshotter struct {
	snapshots.Snapshotter
	// extra options appended to each translated mount (driver=fuse).
	extra []string
}

// translate returns ms with each "overlay" mount replaced by a layerfs
// mount of the same options (lowerdir, upperdir, workdir, userxattr,
// index=off, ...) plus extra. Bind mounts (a snapshot without parents, or a
// view of a single layer) need no union and stay as they are.
func translate(ms []mount.Mount, extra []string) []mount.Mount {
	if ms == nil {
		return nil
	}
	out := make([]mount.Mount, 0, len(ms))
	for _, m := range ms {
		if m.Type != "overlay" {
			out = append(out, m)
			continue
		}
		opts := make([]string, 0, len(m.Options)+len(extra))
		opts = append(opts, m.Options...)
		opts = append(opts, extra...)
		out = append(out, mount.Mount{Type: mountType, Source: mountSource, Options: opts})
	}
	return out
}

func (s *layerfsSnapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	ms, err := s.Snapshotter.Prepare(ctx, key, parent, opts...)
	return translate(ms, s.extra), err
}

func (s *layerfsSnapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	ms, err := s.Snapshotter.View(ctx, key, parent, opts...)
	return translate(ms, s.extra), err
}

func (s *layerfsSnapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	ms, err := s.Snapshotter.Mounts(ctx, key)
	return translate(ms, s.extra), err
}

// Cleanup passes containerd's Cleanup call on (the overlay snapshotter
// removes snapshot directories there when removal is asynchronous); the
// embedded interface alone would hide it from the gRPC service.
func (s *layerfsSnapshotter) Cleanup(ctx context.Context) error {
	if c, ok := s.Snapshotter.(snapshots.Cleaner); ok {
		return c.Cleanup(ctx)
	}
	return nil
}
