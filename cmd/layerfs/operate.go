package main

import (
	"fmt"
	"io"
	"log"
	"log/syslog"
	"net"
	"os"
	"runtime/debug"
	"strings"
)

// What an operator meets around a running server: its version, where its
// messages go once it has detached, and systemd's readiness protocol.

// fuseProtocol is the FUSE kernel interface version go-fuse speaks.
const fuseProtocol = "7.28"

// printVersion writes the version lines in fuse-overlayfs's form, which
// engines and scripts parse ("NAME: version X", then the FUSE library).
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "layerfs: version %s\n", version)
	gofuse := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/hanwen/go-fuse/v2" {
				gofuse = m.Version
			}
		}
	}
	fmt.Fprintf(w, "FUSE library: go-fuse %s\n", gofuse)
	fmt.Fprintf(w, "using FUSE kernel interface version %s\n", fuseProtocol)
}

// syslogEnv names the socket a detached server logs to, instead of the
// system's (/dev/log, where journald or a syslog daemon listens).
const syslogEnv = "LAYERFS_SYSLOG"

// logDetached sends the server's log (go-fuse's messages, layerfs's
// warnings and errors) to syslog once it has detached and its stderr is
// /dev/null, each line naming the mount point. Without a syslog socket
// the messages are dropped, as they were.
func logDetached(mountpoint string) {
	var w io.Writer
	var err error
	if p := os.Getenv(syslogEnv); p != "" {
		w, err = syslog.Dial("unixgram", p, syslog.LOG_DAEMON|syslog.LOG_WARNING, "layerfs")
	} else {
		w, err = syslog.New(syslog.LOG_DAEMON|syslog.LOG_WARNING, "layerfs")
	}
	if err != nil {
		w = io.Discard
	}
	log.SetOutput(w)
	log.SetFlags(0)
	log.SetPrefix(mountpoint + ": ")
}

// notifyReady tells systemd (Type=notify, NOTIFY_SOCKET set) that the
// mount is live. Anything else is left alone.
func notifyReady(mountpoint string) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if strings.HasPrefix(sock, "@") {
		sock = "\x00" + sock[1:] // an abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		log.Printf("sd_notify: %v", err)
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1\nSTATUS=serving " + mountpoint)); err != nil {
		log.Printf("sd_notify: %v", err)
	}
}
