package bench

import (
	"encoding/xml"
	"io"
	"math"
	"reflect"
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
	if c.baseline != "" || contains(c.contenders, cLayerBase) {
		t.Errorf("layerfs-base without --baseline: %+v", c)
	}
	for _, bad := range [][]string{{"--only", "nope"}, {"--contenders", "zfs"}, {"--reps", "0"}, {"extra"},
		{"--contenders", "layerfs-base"}, {"--contenders", "kernel,layerfs", "--baseline", "old"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := parseFlags([]string{"--help"}, io.Discard); err != errHelp {
		t.Errorf("--help: %v", err)
	}
}

func TestParseFlagsBaseline(t *testing.T) {
	c, err := parseFlags([]string{"--baseline", "/tmp/old"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.baseline != "/tmp/old" {
		t.Errorf("baseline = %q", c.baseline)
	}
	if got := strings.Join(c.contenders, " "); got != "plain kernel layerfs layerfs-base layerfs-pt fuse-overlayfs" {
		t.Errorf("default contenders with --baseline: %s", got)
	}
	c, err = parseFlags([]string{"--contenders", "layerfs-base,kernel", "--contenders=layerfs", "--baseline=/tmp/old"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.contenders, " "); got != "kernel layerfs layerfs-base" {
		t.Errorf("contenders not in table order: %s", got)
	}
}

// TestLoopOrderRotates checks the order loop runs contenders in: every
// contender, layerfs-base too, takes each place once over as many
// repetitions as there are contenders.
func TestLoopOrderRotates(t *testing.T) {
	c, err := parseFlags([]string{"--baseline", "/tmp/old", "--reps", "6"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cs := c.contenders
	places := map[string]map[int]bool{}
	for rep := 0; rep < c.reps; rep++ {
		for i := range cs {
			name := cs[(i+rep)%len(cs)]
			if places[name] == nil {
				places[name] = map[int]bool{}
			}
			places[name][i] = true
		}
	}
	for _, name := range cs {
		if len(places[name]) != len(cs) {
			t.Errorf("%s ran in places %v", name, places[name])
		}
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
		for _, c := range r.Contenders {
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

// sampleResultsBase is a run with --baseline: layerfs faster than its
// baseline on find-cold, slower on untar, alike on chown-r, failing on rm-rf.
func sampleResultsBase() *Results {
	r := &Results{Contenders: tableOrder(true), Settings: Settings{Reps: 3, DataSet: "quick"}}
	r.Machine.Kernel = "6.1 #1"
	r.Machine.BaseBinary = "/tmp/old/layerfs"
	r.BaseArgs = []string{"--driver=fuse"}
	add := func(name string, times map[string][]float64, errs map[string]string) {
		w := WorkloadResult{Name: name, Cells: map[string]*Cell{}}
		for _, c := range r.Contenders {
			w.Cells[c] = &Cell{}
		}
		r.Workloads = append(r.Workloads, w)
		for c, ts := range times {
			for _, s := range ts {
				r.add(name, c, trialResult{dur: time.Duration(s * float64(time.Second)), rssKiB: 4096})
			}
		}
		for c, e := range errs {
			r.add(name, c, trialResult{err: e})
		}
	}
	add("find-cold", map[string][]float64{cKernel: {1, 1, 1}, cLayer: {0.4, 0.5, 0.45}, cLayerBase: {0.9, 1, 0.95}}, nil)
	add("untar", map[string][]float64{cKernel: {1, 1, 1}, cLayer: {3, 3.1, 2.9}, cLayerBase: {1.5, 1.4, 1.6}}, nil)
	add("chown-r", map[string][]float64{cKernel: {1, 1, 1}, cLayer: {1, 1.2, 1.1}, cLayerBase: {1.15, 1.05, 1.1}}, nil)
	add("rm-rf", map[string][]float64{cKernel: {1, 1, 1}, cLayer: {1, 1, 1}}, map[string]string{cLayerBase: "base failed"})
	r.finish()
	return r
}

func TestReportWithoutBaseline(t *testing.T) {
	r := sampleResults()
	if ab := r.abTable(); ab != "" {
		t.Errorf("A/B table without a baseline:\n%s", ab)
	}
	md := r.markdown()
	if strings.Contains(md, "layerfs-base") {
		t.Errorf("layerfs-base in a report without a baseline:\n%s", md)
	}
	header := strings.SplitN(r.markdownTable(), "\n", 2)[0]
	if strings.Join(strings.Fields(strings.ReplaceAll(header, "|", " ")), " ") !=
		"workload plain kernel layerfs layerfs-pt fuse-overlayfs layerfs/kernel layerfs-pt/kernel fuse-overlayfs/kernel" {
		t.Errorf("header changed: %s", header)
	}
	if strings.Contains(string(renderSVG(r)), "layerfs-base") {
		t.Error("layerfs-base in the chart without a baseline")
	}
}

// row finds the line of a markdown table that starts with the workload
// and returns its cells.
func row(t *testing.T, table, workload string) []string {
	t.Helper()
	for _, l := range strings.Split(table, "\n") {
		cells := strings.Split(strings.Trim(l, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if cells[0] == workload {
			return cells
		}
	}
	t.Fatalf("no row %s in\n%s", workload, table)
	return nil
}

func TestReportWithBaseline(t *testing.T) {
	r := sampleResultsBase()
	tab := r.markdownTable()
	if got := row(t, tab, "workload"); strings.Join(got, " ") !=
		"workload plain kernel layerfs layerfs-base layerfs-pt fuse-overlayfs layerfs/kernel layerfs-base/kernel layerfs-pt/kernel fuse-overlayfs/kernel" {
		t.Errorf("header: %v", got)
	}
	if got := row(t, tab, "find-cold"); got[3] != "450ms" || got[4] != "950ms" || got[8] != "0.95x" {
		t.Errorf("find-cold row: %v", got)
	}
	if got := row(t, tab, "rm-rf"); got[4] != "error" || got[8] != "error" {
		t.Errorf("rm-rf row: %v", got)
	}

	ab := r.abTable()
	for workload, want := range map[string]string{
		"workload":  "workload,layerfs (after),layerfs-base (before),after/before,repetitions",
		"find-cold": "find-cold,450ms,950ms,0.47x,faster",
		"untar":     "untar,3.00s,1.50s,2.00x,slower",
		"chown-r":   "chown-r,1.10s,1.10s,1.00x,overlap",
		"rm-rf":     "rm-rf,1.00s,error,error,-",
	} {
		if got := strings.Join(row(t, ab, workload), ","); got != want {
			t.Errorf("A/B row %s = %s, want %s", workload, got, want)
		}
	}
	lines := strings.Split(strings.TrimSpace(ab), "\n")
	for _, l := range lines {
		if len(l) != len(lines[0]) {
			t.Errorf("ragged A/B table:\n%s", ab)
			break
		}
	}

	rss := r.rssTable()
	if got := strings.Join(row(t, rss, "peak RSS (MiB)"), " "); got != "peak RSS (MiB) layerfs layerfs-base layerfs-pt fuse-overlayfs" {
		t.Errorf("rss header: %s", got)
	}
	if got := row(t, rss, "**max**"); got[2] != "**4.0**" {
		t.Errorf("rss max row: %v", got)
	}

	md := r.markdown()
	for _, want := range []string{
		"## layerfs against layerfs-base",
		"about one workload in 10",
		"- layerfs-base (--baseline): ",
		"/tmp/old/layerfs run with --driver=fuse",
		"- rm-rf on layerfs-base: base failed",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	// The A/B table comes after the main table, before the RSS one.
	if i, j, k := strings.Index(md, "layerfs-base/kernel"), strings.Index(md, "after/before |"), strings.Index(md, "## Peak RSS"); !(i < j && j < k) {
		t.Errorf("sections out of order: %d %d %d", i, j, k)
	}
	reps := md[strings.Index(md, "## All repetitions"):]
	if got := row(t, reps, "untar"); got[4] != "1.500 1.400 1.600" {
		t.Errorf("all repetitions lack layerfs-base: %v", got)
	}

	svg := string(renderSVG(r))
	if !strings.Contains(svg, ">layerfs-base</text>") || !strings.Contains(svg, "find-cold layerfs-base: 0.95x") {
		t.Errorf("chart lacks layerfs-base:\n%s", svg)
	}
}

func TestChanceSeparate(t *testing.T) {
	for n, want := range map[int]float64{1: 1, 2: 1.0 / 3, 3: 0.1, 5: 2.0 / 252} {
		if got := chanceSeparate(n); math.Abs(got-want) > 1e-12 {
			t.Errorf("chanceSeparate(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestRequestsSince(t *testing.T) {
	before := map[string]uint64{"LOOKUP": 10, "GETXATTR": 1}
	after := map[string]uint64{"LOOKUP": 25, "GETXATTR": 2, "GETATTR": 3}
	got := requestsSince(before, after)
	want := map[string]uint64{"LOOKUP": 15, "GETATTR": 3} // the reading's own GETXATTR is not the workload's
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("requestsSince = %v, want %v", got, want)
	}
	if requestsSince(nil, after) != nil {
		t.Fatal("no first reading: want nil")
	}
}

func TestRequestsTable(t *testing.T) {
	r := &Results{Contenders: []string{cKernel, cLayer}}
	w := WorkloadResult{Name: "find-cold", Cells: map[string]*Cell{cKernel: {}, cLayer: {}}}
	r.Workloads = append(r.Workloads, w)
	for _, reqs := range []map[string]uint64{
		{"LOOKUP": 100, "READDIRPLUS": 10},
		{"LOOKUP": 300, "READDIRPLUS": 10, "GETATTR": 1},
		{"LOOKUP": 200, "READDIRPLUS": 12},
	} {
		r.add("find-cold", cLayer, trialResult{dur: time.Second, requests: reqs})
	}
	r.add("find-cold", cLayer, trialResult{err: "boom", requests: map[string]uint64{"LOOKUP": 1}})
	table := r.requestsTable()
	if !strings.Contains(table, "| find-cold | 210 (LOOKUP 200, READDIRPLUS 10) |") {
		t.Fatalf("requests table:\n%s", table)
	}
	if strings.Contains(table, "kernel") {
		t.Fatalf("kernel overlay counts no requests, yet has a column:\n%s", table)
	}
	if (&Results{Contenders: []string{cKernel}}).requestsTable() != "" {
		t.Fatal("a run without counts has no requests table")
	}
}
