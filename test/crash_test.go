package test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestCrashSafety kills the server with SIGKILL at random points during a
// copy-up of a large file, a rename, an rmdir that leaves a whiteout and
// an untar, then remounts: every file is its old or its new complete
// version, the work dir holds nothing stale, no temporary entry shows
// anywhere, the lowers are untouched, and kernel overlay mounts the same
// upper.
func TestCrashSafety(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 1)
	big := bytes.Repeat([]byte("0123456789abcdef"), 4<<20) // 64 MiB
	writeFile(t, filepath.Join(tr.lowers[0], "big"), string(big))
	for i := 0; i < 50; i++ {
		writeFile(t, filepath.Join(tr.lowers[0], "dir", fmt.Sprintf("f%02d", i)), "x")
	}
	writeFile(t, filepath.Join(tr.lowers[0], "moveme"), "moved content")
	src := filepath.Join(tr.root, "src")
	for i := 0; i < 300; i++ {
		writeFile(t, filepath.Join(src, fmt.Sprintf("d%d/f%03d", i%10, i)), strings.Repeat("t", 4096))
	}
	tarball := filepath.Join(tr.root, "t.tar")
	if r := run(t, "tar", "-C", src, "-cf", tarball, "."); r.code != 0 {
		t.Fatal(r.stderr)
	}
	lowerBefore := snapshot(t, tr.lowers[0])
	bigSum := sha256.Sum256(big)

	ops := map[string]func(mnt string){
		"copy-up": func(mnt string) {
			f, err := os.OpenFile(filepath.Join(mnt, "big"), os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				f.Write([]byte("+"))
				f.Close()
			}
		},
		"rename": func(mnt string) { os.Rename(filepath.Join(mnt, "moveme"), filepath.Join(mnt, "moved")) },
		"rmdir":  func(mnt string) { os.RemoveAll(filepath.Join(mnt, "dir")) },
		"untar": func(mnt string) {
			os.MkdirAll(filepath.Join(mnt, "untar"), 0o755)
			exec.Command("tar", "-C", filepath.Join(mnt, "untar"), "-xf", tarball).Run()
		},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	runs := 0
	for name, op := range ops {
		for i := 0; i < 3; i++ {
			runs++
			cleanupMount(t, tr.mnt)
			cmd := exec.Command(binary, "--driver=fuse", "-f", "-o", tr.opts(), tr.mnt)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitMounted(t, tr.mnt)
			done := make(chan struct{})
			go func() { op(tr.mnt); close(done) }()
			time.Sleep(time.Duration(rng.IntN(120)) * time.Millisecond)
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			exec.Command("umount", "-l", tr.mnt).Run()
			<-done

			tr.mount(t)
			// Every file is whole: the big one old or grown by one byte.
			// Whole: all of the lower data, then only the bytes that
			// completed appends added (one per earlier copy-up run).
			data, err := os.ReadFile(filepath.Join(tr.mnt, "big"))
			if assert.NoError(t, err, "%s run %d", name, i) {
				whole := len(data) >= len(big) && sha256.Sum256(data[:len(big)]) == bigSum &&
					strings.Trim(string(data[len(big):]), "+") == "" && len(data)-len(big) <= runs
				assert.True(t, whole, "%s run %d: big is partial (%d bytes)", name, i, len(data))
			}
			_, e1 := os.Stat(filepath.Join(tr.mnt, "moveme"))
			_, e2 := os.Stat(filepath.Join(tr.mnt, "moved"))
			assert.True(t, (e1 == nil) != (e2 == nil), "%s run %d: rename half done (%v, %v)", name, i, e1, e2)
			if e2 == nil {
				assert.Equal(t, "moved content", readFile(t, filepath.Join(tr.mnt, "moved")))
			}
			assert.Empty(t, lsNames(t, filepath.Join(tr.work, "work")), "%s run %d: stale work dir after mount", name, i)
			filepath.Walk(tr.upper, func(p string, fi os.FileInfo, err error) error {
				if err == nil && strings.HasPrefix(fi.Name(), "#lfs") {
					t.Errorf("%s run %d: temporary entry %s in the upper dir", name, i, p)
				}
				return nil
			})
			tr.unmount(t)
			// Kernel overlay takes the same upper.
			kernelMount(t, tr, false)
			_, err = os.ReadFile(filepath.Join(tr.mnt, "big"))
			assert.NoError(t, err, "%s run %d: kernel overlay after the crash", name, i)
			unmountAny(t, tr.mnt)
		}
	}
	assert.Equal(t, lowerBefore, snapshot(t, tr.lowers[0]), "the lower layer changed")
	t.Logf("%d crash runs", runs)
}
