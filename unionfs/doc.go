// Package unionfs is the layerfs node tree: a go-fuse filesystem that merges
// read-only lower directories under one writable upper directory, in the
// on-disk format of kernel overlayfs.
//
// # Layers and nodes
//
// Layer 0 is the upper layer, layers 1..n the lowers, top first. Every
// layer is reached only through directory fds and *at calls that never
// follow a final symlink: a symlink inside a layer is data. What a name
// shows is decided by package merge (the one merge rule); the on-disk
// markers are named in package whiteout.
//
// A node's home says where its entry lives: for a directory, an O_PATH fd
// for each layer that merges into it (top first, ending at an opaque
// layer); for a non-directory, the layer its entry lives in (it is reached
// through its parent's fd for that layer plus its name, go-fuse keeping
// parent and name current across renames), or the index entry of a
// hard-linked file, or the data below a metacopy file. The home is one
// value, replaced as a whole when the entry moves (copy-up, data copied
// in, forget). Copy-up never changes the node's identity, so st_ino stays
// the same; the origin xattr written at copy-up keeps it the same across
// remounts.
//
// Files by concern, as the kernel's fs/overlayfs: node.go (the node and
// its home), lookup.go, readdir.go, create.go, remove.go, rename.go,
// attr.go, xattr.go, io.go and file.go (data), copyup.go, index.go (hard
// links), inode.go (st_ino and identity), union.go (the layer stack of a
// mount), mount.go.
//
// # Locking order
//
// 1. union.renameMu (RWMutex). Rename holds it for writing; every other
// operation that resolves a node's (parent, name) or changes the upper
// layer holds it for reading for its whole duration. Helpers that need it
// say so ("Preconditions: renameMu held"; the rename phases end in
// Locked) and never take it themselves.
//
// 2. node.mu, one node at a time. It serializes the changes of where that
// node's entry lives: its copy-up, its removal (unlink/rmdir hold the
// victim's mu so a concurrent copy-up of it cannot interleave), forget
// and revival; a node's home is only replaced with it held. A parent is
// copied up before the child's mu is taken, so no goroutine holds a
// child's mu while waiting for its parent's.
//
// 3. union.nlinkMu orders the updates of the index's link count records;
// it is taken with a node's mu held (copy-up into the index).
//
// 4. file.mu guards the switch of a read-only handle from a lower file to
// the upper copy; it is taken with no node lock held and takes renameMu
// for reading inside.
//
// The kernel serializes namespace changes inside one directory (i_rwsem),
// so create/unlink/rename of names in the same directory never race each
// other here; copy-ups of different entries run in parallel.
//
// What this costs: a long copy-up holds renameMu for reading, so a rename
// waits for it, and operations that arrive after that rename wait too.
package unionfs
