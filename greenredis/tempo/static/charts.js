// A small canvas line chart for live time series: axes with "nice" ticks,
// time labels, a filled line and the latest point. No dependencies.
"use strict";

window.TempoCharts = (function () {
  const PAD = { left: 58, right: 14, top: 12, bottom: 26 };

  function niceStep(range, ticks) {
    const raw = range / Math.max(ticks, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const nice = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
    return nice * mag;
  }

  function last0(points) { return points.length ? points[points.length - 1][0] : 0; }

  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600];

  function cssVar(name, fallback) {
    const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  class LineChart {
    // opts: window (seconds shown), maxPoints, color, format(v)
    constructor(canvas, opts) {
      opts = opts || {};
      this.canvas = canvas;
      this.window = opts.window || 300;
      this.maxPoints = opts.maxPoints || 5000;
      this.color = opts.color || cssVar("--accent", "#2f6fde");
      this.format = opts.format || String;
      this.points = [];        // [ts, value], sorted by ts, unique ts
      this.skew = 0;           // local clock minus the publisher's, from live points
      this.pending = false;
    }

    latest() { return this.points.length ? this.points[this.points.length - 1] : null; }

    // Seconds shown: the data's span while it is shorter than the window (at least a minute).
    span(tmax) {
      if (!this.points.length) return this.window;
      const first = this.points[0][0];
      return Math.min(this.window, Math.max(60, Math.ceil((tmax - first) / 30) * 30));
    }

    // min / avg / max over the shown window
    summary() {
      const last = this.latest();
      if (!last) return null;
      let lo = Infinity, hi = -Infinity, sum = 0, n = 0;
      for (let i = this.points.length - 1; i >= 0 && this.points[i][0] >= last[0] - this.span(last[0]); i--) {
        const v = this.points[i][1];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        sum += v; n++;
      }
      return { min: lo, max: hi, avg: sum / n, n: n };
    }

    // Insert keeping order; a point with a known ts replaces it (history and live overlap).
    add(ts, value, live) {
      const pts = this.points;
      if (!pts.length || ts > pts[pts.length - 1][0]) {
        pts.push([ts, value]);
      } else {
        let lo = 0, hi = pts.length;
        while (lo < hi) { const mid = (lo + hi) >> 1; if (pts[mid][0] < ts) lo = mid + 1; else hi = mid; }
        if (lo < pts.length && pts[lo][0] === ts) pts[lo][1] = value;
        else pts.splice(lo, 0, [ts, value]);
      }
      if (pts.length > this.maxPoints) pts.splice(0, pts.length - this.maxPoints);
      if (live) this.skew = Date.now() / 1000 - ts;
      this.schedule();
    }

    merge(list) {
      for (const [ts, v] of list) this.add(ts, v, false);
      const last = this.latest();
      if (last && this.points.length === list.length) this.skew = Math.max(0, Date.now() / 1000 - last[0]);
    }

    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }

    draw() {
      const c = this.canvas;
      const dpr = window.devicePixelRatio || 1;
      const w = c.clientWidth, h = c.clientHeight;
      if (!w || !h) return;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(h * dpr);
      }
      const ctx = c.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      const x0 = PAD.left, x1 = w - PAD.right, y0 = PAD.top, y1 = h - PAD.bottom;
      const ink = cssVar("--muted", "#6b7385"), gridColor = cssVar("--line", "#e3e6ec");
      ctx.font = "11px system-ui, sans-serif";

      const tmax = Math.max(last0(this.points), Date.now() / 1000 - this.skew);
      const span = this.span(tmax);
      const tmin = tmax - span;
      const vis = this.points.filter((p) => p[0] >= tmin);
      if (this.points.length && vis.length < this.points.length) {
        // keep the line entering from the left edge
        const idx = this.points.length - vis.length - 1;
        if (idx >= 0) vis.unshift(this.points[idx]);
      }

      // y range
      let lo = Infinity, hi = -Infinity;
      for (const p of vis) { if (p[1] < lo) lo = p[1]; if (p[1] > hi) hi = p[1]; }
      if (!isFinite(lo)) { lo = 0; hi = 1; }
      if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
      if (lo > 0 && lo < (hi - lo) * 0.5) lo = 0;   // anchor at zero when it is near
      const step = niceStep(hi - lo, 4);
      lo = Math.floor(lo / step) * step;
      hi = Math.ceil(hi / step) * step;
      const X = (t) => x0 + ((t - tmin) / (tmax - tmin)) * (x1 - x0);
      const Y = (v) => y1 - ((v - lo) / (hi - lo)) * (y1 - y0);

      // horizontal grid + y labels
      ctx.strokeStyle = gridColor;
      ctx.fillStyle = ink;
      ctx.lineWidth = 1;
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (let v = lo; v <= hi + step / 2; v += step) {
        const y = Math.round(Y(v)) + 0.5;
        ctx.beginPath(); ctx.moveTo(x0, y); ctx.lineTo(x1, y); ctx.stroke();
        ctx.fillText(this.format(Math.abs(v) < step / 1e6 ? 0 : v), x0 - 8, y);
      }
      // x ticks + time labels
      const tstep = TIME_STEPS.find((s) => (span / s) <= 6) || 3600;
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (let t = Math.ceil(tmin / tstep) * tstep; t <= tmax; t += tstep) {
        const x = Math.round(X(t)) + 0.5;
        ctx.beginPath(); ctx.moveTo(x, y1); ctx.lineTo(x, y1 + 4); ctx.stroke();
        if (x > x0 + 20 && x < x1 - 20) ctx.fillText(window.Tempo.clock(t), x, y1 + 7);
      }
      // axes
      ctx.strokeStyle = ink;
      ctx.beginPath(); ctx.moveTo(x0 + 0.5, y0); ctx.lineTo(x0 + 0.5, y1 + 0.5); ctx.lineTo(x1, y1 + 0.5); ctx.stroke();

      if (!vis.length) {
        ctx.textAlign = "center"; ctx.textBaseline = "middle"; ctx.fillStyle = ink;
        ctx.fillText("no data in the last " + Math.round(span / 60) + " min", (x0 + x1) / 2, (y0 + y1) / 2);
        return;
      }
      // line and area
      ctx.save();
      ctx.beginPath(); ctx.rect(x0 + 1, y0 - 4, x1 - x0, y1 - y0 + 4); ctx.clip();
      ctx.beginPath();
      vis.forEach((p, i) => { const x = X(p[0]), y = Y(p[1]); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
      ctx.strokeStyle = this.color;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.stroke();
      ctx.lineTo(X(vis[vis.length - 1][0]), y1);
      ctx.lineTo(X(vis[0][0]), y1);
      ctx.closePath();
      ctx.globalAlpha = 0.12;
      ctx.fillStyle = this.color;
      ctx.fill();
      ctx.globalAlpha = 1;
      const lp = vis[vis.length - 1];
      ctx.beginPath(); ctx.arc(X(lp[0]), Y(lp[1]), 3.5, 0, Math.PI * 2); ctx.fill();
      ctx.restore();
    }
  }

  return { LineChart: LineChart };
})();
