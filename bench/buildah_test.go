package bench

import (
	"os/exec"
	"strings"
	"testing"
)

func TestBuildahLayers(t *testing.T) {
	n := 0
	for _, line := range strings.Split(buildahContainerfile, "\n") {
		if f := strings.Fields(line); len(f) > 0 && (f[0] == "FROM" || f[0] == "ADD" || f[0] == "RUN") {
			n++
		}
	}
	if n != buildahLayers {
		t.Errorf("the Containerfile makes %d layers, buildahLayers says %d", n, buildahLayers)
	}
}

func TestRootFSType(t *testing.T) {
	out := "STEP 3/9: RUN head -1 /proc/mounts\nfuse-overlayfs / fuse.fuse-overlayfs rw,nodev 0 0\n--> 875a2c242c4\n"
	if got := rootFSType(out); got != "fuse.fuse-overlayfs" {
		t.Errorf("rootFSType = %q", got)
	}
	if got := rootFSType("STEP 1/2: FROM x\n"); got != "" {
		t.Errorf("rootFSType without the line = %q", got)
	}
}

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"/bin/layerfs", "it's", "a b", `$x"`} {
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("shellQuote(%q) = %s: sh printed %q (%v)", s, shellQuote(s), out, err)
		}
	}
}
