// The three pages. Every name from the server goes into the DOM as text, never as HTML.
"use strict";

(function () {
  const T = window.Tempo;
  const cfg = T.config();
  const $ = (id) => document.getElementById(id);

  function notice(text) {
    const n = $("notice");
    if (!n) return;
    n.textContent = text || "";
    n.hidden = !text;
  }

  function describeError(m) {
    if (m.error === "unavailable") return "Redis is unavailable right now; the page will catch up when it is back.";
    if (m.error === "forbidden") return "Not allowed: " + m.message + ". Reload the page.";
    return "Error: " + m.message;
  }

  // -- /instances/<name> ------------------------------------------------------
  function instancePage() {
    const charts = new Map();   // metric -> {chart, value, sub}
    const box = $("charts");

    function chartFor(metric) {
      let c = charts.get(metric);
      if (c) return c;
      const value = T.el("span", { class: "chart-value" }, "–");
      const sub = T.el("div", { class: "chart-sub" });
      const canvas = T.el("canvas", { role: "img", "aria-label": "graph of " + metric });
      const card = T.el("div", { class: "chart", "data-metric": metric },
        T.el("div", { class: "chart-head" }, T.el("span", { class: "chart-title" }, metric), value),
        sub, canvas);
      // keep cards sorted by metric name
      const after = [...charts.keys()].sort().find((m) => m > metric);
      box.insertBefore(card, after ? charts.get(after).card : null);
      const noMetrics = $("no-metrics");
      if (noMetrics) noMetrics.remove();
      c = { chart: new TempoCharts.LineChart(canvas, { format: T.fmt }), value: value, sub: sub, card: card };
      charts.set(metric, c);
      return c;
    }

    function refresh(c) {
      const last = c.chart.latest();
      if (!last) return;
      c.value.textContent = T.fmt(last[1]);
      const s = c.chart.summary();
      const span = c.chart.span(last[0]);
      c.sub.textContent = "at " + T.clock(last[0]) + " · last " + (span < 120 ? span + " s" : Math.round(span / 60) + " min") + ": min " +
        T.fmt(s.min) + " · avg " + T.fmt(s.avg) + " · max " + T.fmt(s.max);
    }

    const sock = new T.Socket(cfg, (m) => {
      if (m.type === "point" && m.instance === cfg.instance) {
        const c = chartFor(m.metric);
        c.chart.add(m.ts, m.value, true);
        refresh(c);
      } else if (m.type === "history" && m.instance === cfg.instance) {
        for (const [metric, pts] of Object.entries(m.metrics)) {
          const c = chartFor(metric);
          c.chart.merge(pts);
          refresh(c);
        }
        notice("");
      } else if (m.type === "dropped") {
        notice("This page fell behind: " + m.count + " updates were skipped.");
      } else if (m.type === "error") {
        notice(describeError(m));
      } else if (m.type === "grid") {
        const node = m.nodes.find((n) => n.name === cfg.instance);
        const h = $("health");
        if (node && h) { h.textContent = node.health; h.className = "health health-" + node.health; }
      }
    });
    sock.watch("stats", cfg.instance);
    sock.watch("grid");
    setInterval(() => { for (const c of charts.values()) c.chart.schedule(); }, 1000);   // scroll
    window.addEventListener("resize", () => { for (const c of charts.values()) c.chart.schedule(); });
  }

  // -- /instances/<name>/logs ---------------------------------------------------
  function logsPage() {
    const list = $("log");
    const follow = $("follow");
    const MAX = 5000;

    function add(line) {
      const level = /\b(ERROR|CRITICAL|FATAL)\b/.test(line) ? "lvl-error" : /\bWARN(ING)?\b/.test(line) ? "lvl-warn" : null;
      list.append(T.el("li", { class: level }, line));
      while (list.childElementCount > MAX) list.firstElementChild.remove();
    }

    function done() {
      $("linecount").textContent = list.childElementCount + " lines";
      if (follow.checked) list.scrollTop = list.scrollHeight;
    }

    const sock = new T.Socket(cfg, (m) => {
      if (m.instance !== undefined && m.instance !== cfg.instance) return;
      if (m.type === "backlog") {         // (re)joined: the backlog replaces what we had
        list.replaceChildren();
        for (const line of m.lines) add(line);
        notice("");
        done();
      } else if (m.type === "log") {
        add(m.line);
        done();
      } else if (m.type === "dropped") {
        list.append(T.el("li", { class: "sep" }, "… " + m.count + " updates skipped (this page fell behind) …"));
      } else if (m.type === "error") {
        notice(describeError(m));
      }
    });
    sock.watch("logs", cfg.instance);
  }

  // -- / --------------------------------------------------------------------------
  function indexPage() {
    const body = $("instances");
    const latest = new Map();   // "instance\0metric" -> value
    let watched = new Set();
    const MAX_WATCH = 200;

    function key(i, m) { return i + "\u0000" + m; }

    function metricChip(name, metric) {
      const v = latest.get(key(name, metric));
      return T.el("span", { class: "chip metric", "data-metric": metric },
        T.el("b", null, metric), " ", T.el("span", { class: "v" }, v === undefined ? "…" : T.fmt(v)));
    }

    function row(n) {
      const href = "/instances/" + encodeURIComponent(n.name);
      const meta = Object.keys(n.meta).sort().map((k) => T.el("span", { class: "chip" }, T.el("b", null, k), " " + n.meta[k]));
      return T.el("tr", { "data-name": n.name, class: n.health === "gone" ? "gone" : null },
        T.el("td", { class: "name" }, T.el("a", { href: href }, n.name)),
        T.el("td", null, T.el("span", { class: "health health-" + n.health }, n.health)),
        T.el("td", { class: "meta" }, ...meta),
        T.el("td", { class: "metrics" }, ...n.metrics.map((m) => metricChip(n.name, m))),
        T.el("td", null, T.el("a", { class: "small", href: href + "/logs" }, "logs")));
    }

    function render(snap) {
      $("stale-banner").hidden = !snap.stale;
      const up = snap.nodes.filter((n) => n.health === "up").length;
      $("summary").textContent = snap.nodes.length + " known · " + up + " up";
      if (!snap.nodes.length) {
        body.replaceChildren(T.el("tr", { class: "empty" }, T.el("td", { colspan: 5 }, "No instances yet. Start one with greenredis demo.")));
      } else {
        body.replaceChildren(...snap.nodes.map(row));
      }
      const want = new Set(snap.nodes.filter((n) => n.metrics.length && n.health !== "gone").slice(0, MAX_WATCH).map((n) => n.name));
      for (const name of watched) if (!want.has(name)) sock.unwatch("stats", name);
      for (const name of want) if (!watched.has(name)) sock.watch("stats", name, { history: 1 });
      watched = want;
    }

    function setValue(instance, metric, value) {
      latest.set(key(instance, metric), value);
      for (const tr of body.children) {
        if (tr.getAttribute("data-name") !== instance) continue;
        for (const chip of tr.querySelectorAll(".metric")) {
          if (chip.getAttribute("data-metric") === metric) chip.querySelector(".v").textContent = T.fmt(value);
        }
      }
    }

    const sock = new T.Socket(cfg, (m) => {
      if (m.type === "grid") render(m);
      else if (m.type === "point") setValue(m.instance, m.metric, m.value);
      else if (m.type === "history") {
        for (const [metric, pts] of Object.entries(m.metrics)) {
          if (pts.length) setValue(m.instance, metric, pts[pts.length - 1][1]);
        }
      }
    });
    sock.watch("grid");
  }

  ({ index: indexPage, instance: instancePage, logs: logsPage }[cfg.page] || (() => {}))();
})();
