package unionfs

import (
	"container/list"
	"sync"

	"golang.org/x/sys/unix"
)

// readFds keeps descriptors for reading recently read files, so that
// without open handles a stream of READ requests does not open the layer
// file for each one: the underlying filesystem keeps its readahead state,
// and random reads cost one pread. Entries are keyed by node and carry
// the node's copy-up count, so a copy-up makes them stale. The least
// recently used beyond the capacity are closed once no read uses them.
type readFds struct {
	mu  sync.Mutex
	m   map[*node]*readFd
	lru list.List // of *readFd, most recent first
	cap int
}

type readFd struct {
	n      *node
	fd     int
	copies uint64
	refs   int
	dead   bool // no longer in the cache: closed when refs drop to 0
	elem   *list.Element
}

func newReadFds(capacity int) *readFds {
	return &readFds{m: map[*node]*readFd{}, cap: capacity}
}

// get returns a current descriptor of n, or nil. The caller must put it.
func (c *readFds) get(n *node) *readFd {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[n]
	if e == nil {
		return nil
	}
	if e.copies != n.home().copies {
		c.removeLocked(e)
		return nil
	}
	e.refs++
	c.lru.MoveToFront(e.elem)
	return e
}

// add caches fd for n and returns it in use (put it when done).
func (c *readFds) add(n *node, fd int, copies uint64) *readFd {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[n]; old != nil {
		c.removeLocked(old)
	}
	e := &readFd{n: n, fd: fd, copies: copies, refs: 1}
	e.elem = c.lru.PushFront(e)
	c.m[n] = e
	for c.lru.Len() > c.cap {
		c.removeLocked(c.lru.Back().Value.(*readFd))
	}
	return e
}

// put ends a use of e.
func (c *readFds) put(e *readFd) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.dead && e.refs == 0 {
		unix.Close(e.fd)
	}
}

// drop forgets n's descriptor (node forgotten).
func (c *readFds) drop(n *node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[n]; e != nil {
		c.removeLocked(e)
	}
}

func (c *readFds) removeLocked(e *readFd) {
	if e.dead {
		return
	}
	e.dead = true
	delete(c.m, e.n)
	c.lru.Remove(e.elem)
	if e.refs == 0 {
		unix.Close(e.fd)
	}
}

// closeAll closes every idle descriptor (the server is ending).
func (c *readFds) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.m {
		c.removeLocked(e)
	}
}
