package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// openPty returns both ends of a new pseudo-terminal.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pty: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func TestProgressOnTerminal(t *testing.T) {
	m, s := openPty(t)
	p := newProgressTo(s, "exporting")
	if p == nil {
		t.Fatal("no progress on a terminal")
	}
	for i := 0; i < 3; i++ {
		p.Add(1 << 20)
	}
	p.Done()
	s.Close() // the master then reads what was written, then EIO
	var out string
	buf := make([]byte, 4096)
	for {
		n, err := m.Read(buf)
		out += string(buf[:n])
		if err != nil {
			break
		}
	}
	if !strings.Contains(out, "layerfs: exporting: 3 entries, 3.0 MiB") {
		t.Errorf("progress line: %q", out)
	}
}

func TestProgressQuietOffTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := newProgressTo(w, "exporting")
	if p != nil {
		t.Fatal("progress on a pipe")
	}
	p.Add(1) // a nil progress ignores calls
	p.Done()
	w.Close()
	buf := make([]byte, 16)
	if n, _ := r.Read(buf); n != 0 {
		t.Errorf("wrote %q to a pipe", buf[:n])
	}
}
