package bench

import (
	"encoding/xml"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"--quick", "--only", "find-cold,untar", "--only=rm-rf", "--contenders", "layerfs,kernel"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.reps != 1 || c.timeout != 2*time.Minute {
		t.Errorf("quick: reps %d timeout %v", c.reps, c.timeout)
	}
	if strings.Join(c.only, " ") != "find-cold untar rm-rf" {
		t.Errorf("only = %v", c.only)
	}
	if strings.Join(c.contenders, " ") != "kernel layerfs" {
		t.Errorf("contenders not in table order: %v", c.contenders)
	}
	c, err = parseFlags([]string{"--quick", "--reps", "2"}, io.Discard)
	if err != nil || c.reps != 2 {
		t.Errorf("explicit --reps with --quick: %v %v", c, err)
	}
	c, err = parseFlags(nil, io.Discard)
	if err != nil || c.reps != 3 || len(c.contenders) != len(allContenders) || c.out != "bench/results" {
		t.Errorf("defaults: %+v %v", c, err)
	}
	for _, bad := range [][]string{{"--only", "nope"}, {"--contenders", "zfs"}, {"--reps", "0"}, {"extra"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := parseFlags([]string{"--help"}, io.Discard); err != errHelp {
		t.Errorf("--help: %v", err)
	}
}

func TestWorkloadNamesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, w := range allWorkloads() {
		if seen[w.name] {
			t.Errorf("duplicate workload %s", w.name)
		}
		seen[w.name] = true
		if !contains([]string{"", "tree", "big", "tar", "repo"}, w.uses) {
			t.Errorf("%s: uses %q", w.name, w.uses)
		}
		if w.run == nil || w.desc == "" || w.plain == "" {
			t.Errorf("%s: incomplete", w.name)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v", tc.in, got)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing")
	}
}

func TestFormat(t *testing.T) {
	for sec, want := range map[float64]string{0.00123: "1.23ms", 0.0123: "12.3ms", 0.123: "123ms", 1.234: "1.23s", 12.34: "12.3s", 123.4: "123s"} {
		if got := fmtDuration(sec); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", sec, got, want)
		}
	}
	if got := fmtRatio(1.234); got != "1.23x" {
		t.Errorf("fmtRatio = %q", got)
	}
}

func sampleResults() *Results {
	r := &Results{Contenders: allContenders, Settings: Settings{Reps: 2, DataSet: "quick"}}
	r.Machine.Kernel = "6.1 #1"
	add := func(name string, times map[string][]float64, errs map[string]string) {
		w := WorkloadResult{Name: name, Cells: map[string]*Cell{}}
		for _, c := range allContenders {
			w.Cells[c] = &Cell{}
		}
		r.Workloads = append(r.Workloads, w)
		for c, ts := range times {
			for _, s := range ts {
				r.add(name, c, trialResult{dur: time.Duration(s * float64(time.Second)), rssKiB: 2048})
			}
		}
		for c, e := range errs {
			r.add(name, c, trialResult{err: e})
		}
	}
	add("find-cold", map[string][]float64{cPlain: {0.1, 0.3}, cKernel: {0.2, 0.2}, cLayer: {0.5, 0.3}, cFuseOv: {2000, 3000}}, nil)
	add("untar", map[string][]float64{cPlain: {1}, cKernel: {1}, cLayer: {1}}, map[string]string{cFuseOv: "boom <&>"})
	add("rm-rf", map[string][]float64{cLayer: {1}}, map[string]string{cKernel: "kernel failed"})
	r.finish()
	return r
}

func TestTablesAndRatios(t *testing.T) {
	r := sampleResults()
	find := r.Workloads[0].Cells
	if *find[cLayer].Ratio != 2 || *find[cPlain].Median != 0.2 {
		t.Errorf("ratio %v median %v", *find[cLayer].Ratio, *find[cPlain].Median)
	}
	tab := r.markdownTable()
	for _, want := range []string{"| workload ", "layerfs/kernel", "fuse-overlayfs/kernel", "2.00x", "error", "12500x"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	lines := strings.Split(strings.TrimSpace(tab), "\n")
	for _, l := range lines {
		if len(l) != len(lines[0]) {
			t.Errorf("ragged table:\n%s", tab)
			break
		}
	}
	if rss := r.rssTable(); !strings.Contains(rss, "2.0") {
		t.Errorf("rss table:\n%s", rss)
	}
	r.Workloads[0].Cells[cLayer].Warnings = []string{"server exited only 20s after unmount"}
	if !strings.Contains(r.markdownTable(), "400ms*") {
		t.Errorf("warning not marked:\n%s", r.markdownTable())
	}
	md := r.markdown()
	if !strings.Contains(md, "## Warnings") {
		t.Errorf("markdown lacks the warnings")
	}
	if !strings.Contains(md, "boom <&>") || !strings.Contains(md, "ratios.svg") {
		t.Errorf("markdown lacks the error or the chart")
	}
}

func TestSVGWellFormed(t *testing.T) {
	svg := renderSVG(sampleResults())
	d := xml.NewDecoder(strings.NewReader(string(svg)))
	texts := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("bad XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "text" {
			texts++
		}
	}
	for _, want := range []string{"find-cold", "fuse-overlayfs: error", "off scale", "kernel overlay = 1x"} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("svg lacks %q", want)
		}
	}
	if texts < 10 {
		t.Errorf("only %d labels", texts)
	}
}
