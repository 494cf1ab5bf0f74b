package bench

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// svgSeries are the bars of each workload group; kernel overlay is the
// reference line at 1x.
var svgSeries = []struct {
	name, color string
}{
	{cPlain, "#9e9e9e"},
	{cLayer, "#1f77b4"},
	{cLayerBase, "#aec7e8"}, // light blue: the same program, one build back
	{cLayerPT, "#2ca02c"},
	{cFuseOv, "#ff7f0e"},
}

// renderSVG draws grouped horizontal bars of each contender's median time
// relative to kernel overlay, on a log scale, from the 1x line outwards.
func renderSVG(r *Results) []byte {
	const (
		labelW  = 170.0
		plotW   = 560.0
		rightW  = 90.0
		barH    = 11.0
		barGap  = 2.0
		groupGp = 12.0
		top     = 78.0
		bottom  = 46.0
	)
	var series []int
	for i, s := range svgSeries {
		if contains(r.Contenders, s.name) {
			series = append(series, i)
		}
	}
	if len(series) == 0 {
		series = []int{0, 1, 2}
	}

	// Range: whole decades around the data, at least 0.1x..10x, at most
	// 0.01x..1000x; values beyond are drawn to the edge and marked.
	lo, hi := 0.1, 10.0
	for _, w := range r.Workloads {
		for _, i := range series {
			if c := w.Cells[svgSeries[i].name]; c != nil && c.Ratio != nil && *c.Ratio > 0 {
				lo = math.Min(lo, *c.Ratio)
				hi = math.Max(hi, *c.Ratio)
			}
		}
	}
	lo = math.Max(math.Pow(10, math.Floor(math.Log10(lo))), 0.01)
	hi = math.Min(math.Pow(10, math.Ceil(math.Log10(hi))), 1000)
	x := func(v float64) float64 {
		v = math.Min(math.Max(v, lo), hi)
		return labelW + (math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))*plotW
	}

	groupH := float64(len(series))*(barH+barGap) + groupGp
	plotH := float64(len(r.Workloads)) * groupH
	width := labelW + plotW + rightW
	height := top + plotH + bottom

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="14" font-weight="bold">Median time relative to kernel overlay (log scale; left of 1x = faster than kernel)</text>`+"\n", 10.0)
	sub := fmt.Sprintf("%d repetition(s), data set %q, %s, kernel %s", r.Settings.Reps, r.Settings.DataSet, r.Machine.Date, strings.Fields(r.Machine.Kernel + " ?")[0])
	fmt.Fprintf(&b, `<text x="10" y="37" fill="#555">%s</text>`+"\n", html.EscapeString(sub))

	// Legend.
	lx := 10.0
	for _, i := range series {
		s := svgSeries[i]
		fmt.Fprintf(&b, `<rect x="%.0f" y="50" width="12" height="12" fill="%s"/>`, lx, s.color)
		fmt.Fprintf(&b, `<text x="%.0f" y="60">%s</text>`+"\n", lx+16, html.EscapeString(s.name))
		lx += 40 + 7*float64(len(s.name))
	}
	fmt.Fprintf(&b, `<line x1="%.0f" y1="56" x2="%.0f" y2="56" stroke="#000" stroke-width="2"/>`, lx, lx+14)
	fmt.Fprintf(&b, `<text x="%.0f" y="60">kernel overlay = 1x</text>`+"\n", lx+18)

	// Group backgrounds and labels.
	for gi, w := range r.Workloads {
		gy := top + float64(gi)*groupH
		if gi%2 == 0 {
			fmt.Fprintf(&b, `<rect x="0" y="%.1f" width="%.0f" height="%.1f" fill="#f3f3f3"/>`+"\n", gy-groupGp/2, width, groupH)
		}
		ly := gy + (groupH-groupGp)/2 + 4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", labelW-8, ly, html.EscapeString(w.Name))
	}

	// Grid: 1, 2 and 5 times each power of ten.
	for dec := math.Log10(lo); dec <= math.Log10(hi)+1e-9; dec++ {
		for _, k := range []float64{1, 2, 5} {
			v := k * math.Pow(10, dec)
			if v > hi*1.0001 {
				break
			}
			gx := x(v)
			stroke, sw := "#dddddd", 1.0
			if k == 1 {
				stroke = "#bbbbbb"
			}
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="%s" stroke-width="%.0f"/>`+"\n", gx, top-6, gx, top+plotH-groupGp/2, stroke, sw)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#555">%s</text>`+"\n", gx, top+plotH+8, trimRatio(v))
		}
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle" fill="#555">time / kernel overlay time</text>`+"\n", labelW+plotW/2, top+plotH+28)

	// Bars.
	x1 := x(1)
	for gi, w := range r.Workloads {
		gy := top + float64(gi)*groupH
		for si, i := range series {
			s := svgSeries[i]
			y := gy + float64(si)*(barH+barGap)
			c := w.Cells[s.name]
			if c == nil {
				continue
			}
			var label string
			switch {
			case c.Ratio != nil:
				v := *c.Ratio
				xv := x(v)
				left, wd := math.Min(x1, xv), math.Abs(xv-x1)
				if wd < 1 {
					wd = 1
				}
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.0f" fill="%s"><title>%s %s: %s (%s)</title></rect>`+"\n",
					left, y, wd, barH, s.color, html.EscapeString(w.Name), s.name, fmtRatio(v), fmtDuration(*c.Median))
				label = fmtRatio(v)
				if v > hi || v < lo {
					label += " (off scale)"
				}
				// Labels sit right of the bar end, or right of the 1x line
				// for bars that grow leftwards.
				tx := math.Max(xv, x1) + 4
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#333">%s</text>`+"\n", tx, y+barH-2, html.EscapeString(label))
			case len(c.Errors) > 0:
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#c00000">%s: error</text>`+"\n", x1+4, y+barH-2, s.name)
			case c.Median != nil:
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#777">%s: no kernel time</text>`+"\n", x1+4, y+barH-2, s.name)
			}
		}
	}
	// The kernel reference line, on top.
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#000" stroke-width="2"/>`+"\n", x1, top-8, x1, top+plotH-groupGp/2)
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

func trimRatio(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s + "x"
}
