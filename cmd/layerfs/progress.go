package main

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// progress shows a one-line running count of long work (export, check,
// vacuum) on stderr when stderr is a terminal, and stays silent otherwise,
// so that scripts and logs get only the result.
type progress struct {
	mu    sync.Mutex
	out   *os.File
	verb  string
	files int64
	bytes int64
	last  time.Time
	shown bool
}

// newProgress returns a progress line for verb ("exporting", ...), or nil
// when stderr is not a terminal; a nil *progress ignores every call.
func newProgress(verb string) *progress {
	return newProgressTo(os.Stderr, verb)
}

func newProgressTo(f *os.File, verb string) *progress {
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return nil
	}
	return &progress{out: f, verb: verb}
}

// Add counts one more entry of n bytes, at most ten redraws a second.
func (p *progress) Add(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.files++
	p.bytes += n
	if time.Since(p.last) >= 100*time.Millisecond {
		p.draw()
	}
}

func (p *progress) draw() {
	p.last = time.Now()
	p.shown = true
	fmt.Fprintf(p.out, "\r\033[Klayerfs: %s: %d entries, %s", p.verb, p.files, humanBytes(p.bytes))
}

// Done draws the final count and ends the line.
func (p *progress) Done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.draw()
	fmt.Fprintln(p.out)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
