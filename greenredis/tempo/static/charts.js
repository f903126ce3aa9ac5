// Live time-series charts on uPlot (vendored: uPlot.iife.min.js, MIT): one or more
// series over a sliding window ending now, lines broken across gaps, a crosshair
// with value and time, units on the axis. Plus canvas sparklines for the index.
"use strict";

window.TempoCharts = (function () {
  const T = window.Tempo;
  const COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0c8599", "#c2255c", "#5c940d"];

  // A gap is a hole longer than a few sample intervals (3x the median, at least 2 s).
  function gapAfter(pts) {
    if (pts.length < 3) return Infinity;
    const d = [];
    for (let i = Math.max(1, pts.length - 200); i < pts.length; i++) d.push(pts[i][0] - pts[i - 1][0]);
    d.sort((a, b) => a - b);
    return Math.max(2, 3 * d[d.length >> 1]);
  }

  // [[ts, v], ...] -> [[ts, v or null], ...] with a null inside every gap (uPlot breaks the line at null).
  function withGaps(pts) {
    const limit = gapAfter(pts);
    const out = [];
    for (let i = 0; i < pts.length; i++) {
      if (i && pts[i][0] - pts[i - 1][0] > limit) out.push([(pts[i][0] + pts[i - 1][0]) / 2, null]);
      out.push(pts[i]);
    }
    return out;
  }

  // Several series on one x axis: a series has undefined where only others have points
  // (uPlot joins across undefined), null in its own gaps (uPlot breaks there).
  function align(seriesPts) {
    const gapped = seriesPts.map(withGaps);
    if (gapped.length === 1) return [gapped[0].map((p) => p[0]), gapped[0].map((p) => p[1])];
    const xs = [...new Set(gapped.flatMap((s) => s.map((p) => p[0])))].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    return [xs, ...gapped.map((s) => {
      const ys = new Array(xs.length).fill(undefined);
      for (const [x, v] of s) ys[index.get(x)] = v;
      return ys;
    })];
  }

  // Sorted, unique-ts insert; a point with a known ts replaces it (history and live overlap).
  function insert(pts, ts, value, max) {
    if (!pts.length || ts > pts[pts.length - 1][0]) pts.push([ts, value]);
    else {
      let lo = 0, hi = pts.length;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (pts[mid][0] < ts) lo = mid + 1; else hi = mid; }
      if (lo < pts.length && pts[lo][0] === ts) pts[lo][1] = value;
      else pts.splice(lo, 0, [ts, value]);
    }
    if (pts.length > max) pts.splice(0, pts.length - max);
  }

  // The points of [tmin, tmax], plus the one before tmin so the line enters from the edge.
  function visible(pts, tmin) {
    let i = pts.length;
    while (i > 0 && pts[i - 1][0] >= tmin) i--;
    return pts.slice(Math.max(0, i - 1));
  }

  function newest(ys) {
    for (let i = ys.length - 1; i >= 0; i--) if (ys[i] != null) return [i];
    return null;
  }

  class TimeChart {
    // opts: labels (one per series), unit, window (s), height, legend (bool)
    constructor(box, opts) {
      this.box = box;
      this.labels = opts.labels || ["value"];
      this.unit = opts.unit || "";
      this.window = opts.window || 300;
      this.height = opts.height || 220;
      this.series = this.labels.map(() => []);
      this.maxPoints = 20000;
      this.skew = 0;          // local clock minus the publishers', from live points
      this.pending = false;
      this.range = [0, 1];
      this.tip = T.el("div", { class: "chart-tip", hidden: true });
      this.u = new uPlot(this.options(opts.legend), this.labels.map(() => []).concat([[]]), box);
      this.u.over.append(this.tip);
      if (window.ResizeObserver) new ResizeObserver(() => this.resize()).observe(box);
    }

    options(legend) {
      const fmt = (v) => T.withUnit(v, this.unit);
      return {
        width: Math.max(this.box.clientWidth, 120),
        height: this.height,
        legend: { show: !!legend, live: false },   // names only: the crosshair tip has the values
        cursor: { drag: { x: false, y: false, setScale: false }, points: { size: 7 } },
        scales: { x: { time: true, range: () => this.range } },
        axes: [
          {
            stroke: "#6b7385", grid: { stroke: "#eef0f4" }, ticks: { stroke: "#e3e6ec" },
            font: "11px system-ui, sans-serif", labelFont: "11px system-ui, sans-serif",
            label: "time (" + T.zone() + ")", labelSize: 16, labelGap: 0,
            space: (u, ax, min, max, dim) => dim < 360 ? 34 : 70,   // px between time labels
            values: (u, splits, ax, space, incr) => splits.map((t) => incr >= 60 ? T.clock(t).slice(0, 5) : T.clock(t)),
          },
          {
            stroke: "#6b7385", grid: { stroke: "#eef0f4" }, ticks: { stroke: "#e3e6ec" },
            font: "11px system-ui, sans-serif",
            values: (u, splits) => splits.map(fmt),
            size: (u, values) => values ? 20 + 7 * Math.max(3, ...values.map((v) => v.length)) : 50,
          },
        ],
        series: [
          { value: (u, ts) => ts == null ? "–" : T.clock(ts) + " " + T.zone(ts) },
          ...this.labels.map((label, i) => ({
            label: label,
            stroke: COLORS[i % COLORS.length],
            fill: this.labels.length === 1 ? "rgba(47, 111, 222, 0.10)" : undefined,
            width: 2,
            spanGaps: false,
            // a dot on the newest point only
            points: { show: true, size: 6, fill: COLORS[i % COLORS.length], filter: (u, si) => newest(u.data[si]) },
            value: (u, v) => v == null ? "–" : fmt(v),
          })),
        ],
        hooks: { setCursor: [(u) => this.showTip(u)] },
      };
    }

    // The crosshair's readout: time and the value(s) under the cursor.
    showTip(u) {
      const idx = u.cursor.idx;
      if (idx == null || u.cursor.left < 0) { this.tip.hidden = true; return; }
      const ts = u.data[0][idx];
      const rows = [T.clock(ts) + " " + T.zone(ts)];
      for (let s = 1; s < u.data.length; s++) {
        const v = u.data[s][idx];
        if (v == null) continue;
        rows.push((u.data.length > 2 ? this.labels[s - 1] + ": " : "") + T.withUnit(v, this.unit));
      }
      if (rows.length === 1) rows.push("no data");
      this.tip.replaceChildren(...rows.map((r, i) => T.el("div", i ? null : { class: "muted" }, r)));
      this.tip.hidden = false;
      const w = u.over.clientWidth;
      const left = u.cursor.left > w / 2 ? u.cursor.left - this.tip.offsetWidth - 10 : u.cursor.left + 10;
      this.tip.style.transform = "translate(" + Math.round(left) + "px, " + Math.round(Math.max(0, u.cursor.top - 40)) + "px)";
    }

    setUnit(unit) {
      if ((unit || "") === this.unit) return;
      this.unit = unit || "";
      this.schedule();
    }

    setWindow(seconds) { this.window = seconds; this.schedule(); }

    latest(s) {
      const pts = this.series[s || 0];
      return pts.length ? pts[pts.length - 1] : null;
    }

    add(s, ts, value, live) {
      insert(this.series[s], ts, value, this.maxPoints);
      if (live) this.skew = Date.now() / 1000 - ts;
      this.schedule();
    }

    merge(s, list) {
      const fresh = !this.series[s].length;
      for (const [ts, v] of list) insert(this.series[s], ts, v, this.maxPoints);
      const last = this.latest(s);
      if (last && fresh && !this.anyLive) this.skew = Math.max(0, Date.now() / 1000 - last[0]);
      this.schedule();
    }

    // The shown span ends at the newest point or now (publisher's clock), whichever is later.
    bounds() {
      let newest = 0;
      for (const pts of this.series) if (pts.length) newest = Math.max(newest, pts[pts.length - 1][0]);
      const tmax = Math.max(newest, Date.now() / 1000 - this.skew);
      return [tmax - this.window, tmax];
    }

    // min / avg / max of series s over the shown window
    summary(s) {
      const [tmin] = this.bounds();
      let lo = Infinity, hi = -Infinity, sum = 0, n = 0;
      for (const [ts, v] of this.series[s || 0]) {
        if (ts < tmin) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        sum += v; n++;
      }
      return n ? { min: lo, max: hi, avg: sum / n, n: n } : null;
    }

    // Seconds of the window the data covers (the history is capped).
    covered() {
      const [tmin, tmax] = this.bounds();
      let first = Infinity;
      for (const pts of this.series) for (const p of pts) if (p[0] >= tmin) { first = Math.min(first, p[0]); break; }
      return isFinite(first) ? tmax - first : 0;
    }

    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }

    draw() {
      const [tmin, tmax] = this.bounds();
      this.range = [tmin, tmax + this.window / 100];   // a little room for the newest point
      const data = align(this.series.map((pts) => visible(pts, tmin)));
      this.u.setData(data);
      // for tests and people: how many times the line is broken
      this.box.setAttribute("data-end", Math.round(tmax));   // where the window ends (publisher's clock)
      this.box.setAttribute("data-gaps", data.slice(1).reduce((n, ys) => n + ys.filter((v) => v === null).length, 0));
      if (this.u.cursor.idx != null) this.showTip(this.u);
    }

    resize() {
      const w = Math.max(this.box.clientWidth, 120);
      if (w !== this.u.width) this.u.setSize({ width: w, height: this.height });
    }
  }

  // A sparkline: the last `seconds` of pts on a small canvas, broken across gaps.
  function sparkline(canvas, pts, seconds, skew) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 80, h = canvas.clientHeight || 22;
    if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (!pts.length) return;
    const tmax = Math.max(pts[pts.length - 1][0], Date.now() / 1000 - (skew || 0)), tmin = tmax - seconds;
    const vis = withGaps(visible(pts, tmin));
    let lo = Infinity, hi = -Infinity;
    for (const [, v] of vis) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (lo === hi) { lo -= 1; hi += 1; }
    const X = (t) => 1 + ((t - tmin) / seconds) * (w - 4), Y = (v) => h - 2 - ((v - lo) / (hi - lo)) * (h - 4);
    ctx.strokeStyle = COLORS[0];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let pen = false;
    for (const [t, v] of vis) {
      if (v === null) { pen = false; continue; }
      if (pen) ctx.lineTo(X(t), Y(v)); else ctx.moveTo(X(t), Y(v));
      pen = true;
    }
    ctx.stroke();
    const [lt, lv] = pts[pts.length - 1];
    ctx.fillStyle = COLORS[0];
    ctx.beginPath(); ctx.arc(X(lt), Y(lv), 2, 0, Math.PI * 2); ctx.fill();
  }

  return { TimeChart: TimeChart, sparkline: sparkline, withGaps: withGaps, insert: insert, COLORS: COLORS };
})();
