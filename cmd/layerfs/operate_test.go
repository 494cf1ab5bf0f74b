package main

import (
	"log"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A detached server's log lines go to syslog, naming the mount point.
func TestLogDetached(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "log")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv(syslogEnv, sock)
	out, flags, prefix := log.Writer(), log.Flags(), log.Prefix()
	defer func() { log.SetOutput(out); log.SetFlags(flags); log.SetPrefix(prefix) }()
	logDetached("/c/merged")
	log.Printf("writer: Write/Writev failed")
	l.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1024)
	n, err := l.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg := string(buf[:n])
	// <28> is LOG_DAEMON|LOG_WARNING.
	if !strings.HasPrefix(msg, "<28>") || !strings.Contains(msg, "layerfs[") || !strings.Contains(msg, "/c/merged: writer: Write/Writev failed") {
		t.Errorf("syslog line %q", msg)
	}
}
