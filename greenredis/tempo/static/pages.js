// The pages. Every name from the server goes into the DOM as text, never as HTML.
"use strict";

(function () {
  const T = window.Tempo;
  const C = window.TempoCharts;
  const cfg = T.config();
  const $ = (id) => document.getElementById(id);
  const WINDOWS = [60, 300, 900, 3600];

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

  // What every page shows about the server side: the pill and one banner.
  function serverState(m) {
    T.pill.server({ redis: m.redis, stale: m.stale, feed: m.feed_error || null });
    const b = $("server-banner");
    if (!b) return;
    let text = "";
    if (m.redis === false) {
      text = "Redis is down: Tempo cannot reach it. What you see is the last view; the page catches up by itself when Redis is back.";
    } else if (m.feed_error) {
      text = "The live feed is unavailable: " + m.feed_error + ". Pages show the history but no new points or log lines until it works.";
      if (/NOPERM|permission/i.test(m.feed_error)) {
        text += " The Redis user Tempo logs in as needs channel rights (e.g. ACL SETUSER <user> &stats:* &logs:*).";
      }
    }
    b.textContent = text;
    b.hidden = !text;
  }

  // The window buttons (1 min / 5 min / 15 min / 1 h); the choice is remembered.
  function windowChoice(onChange) {
    const box = $("windows");
    let current = 300;
    try { current = Number(localStorage.getItem("tempo.window")) || 300; } catch (e) { /* storage disabled */ }
    if (!WINDOWS.includes(current)) current = 300;
    function paint() {
      for (const b of box.querySelectorAll("button")) b.setAttribute("aria-pressed", String(Number(b.value) === current));
    }
    box.addEventListener("click", (ev) => {
      const b = ev.target.closest("button");
      if (!b) return;
      current = Number(b.value);
      try { localStorage.setItem("tempo.window", String(current)); } catch (e) { /* private mode */ }
      paint();
      onChange(current);
    });
    paint();
    return () => current;
  }

  function subtitle(chart, s, unit) {
    const last = chart.latest(s);
    if (!last) return "no data yet";
    const sum = chart.summary(s);
    let text = "at " + T.clock(last[0]) + " " + T.zone(last[0]) + " · last " + T.span(chart.window);
    if (sum) text += ": min " + T.withUnit(sum.min, unit) + " · avg " + T.withUnit(sum.avg, unit) + " · max " + T.withUnit(sum.max, unit);
    else text += ": no points";
    const covered = chart.covered();
    if (covered && covered < chart.window * 0.9) text += " (data for the last " + T.span(covered) + ")";
    return text;
  }

  // -- /instances/<name> ------------------------------------------------------
  function instancePage() {
    const charts = new Map();   // metric -> {chart, value, unit, sub, card}
    const box = $("charts");
    let seen = $("health").getAttribute("data-known") === "1";
    let skew = null;   // local clock minus the instance's, once a live point came
    const win = windowChoice((w) => { for (const c of charts.values()) { c.chart.setWindow(w); refresh(c); } });

    function chartFor(metric) {
      let c = charts.get(metric);
      if (c) return c;
      const value = T.el("span", { class: "chart-num" }, "–");
      const unit = T.el("span", { class: "chart-unit" });
      const sub = T.el("div", { class: "chart-sub" });
      const plot = T.el("div", { class: "plot", role: "img", "aria-label": "graph of " + metric });
      const card = T.el("div", { class: "chart", "data-metric": metric },
        T.el("div", { class: "chart-head" }, T.el("span", { class: "chart-title" }, T.nameNode(metric)),
          T.el("span", { class: "chart-value" }, value, unit)),
        sub, plot);
      const after = [...charts.keys()].sort().find((m) => m > metric);   // cards sorted by name
      box.insertBefore(card, after ? charts.get(after).card : null);
      const none = $("no-metrics");
      if (none) none.remove();
      c = { chart: new C.TimeChart(plot, { labels: [metric], window: win() }), value: value, unit: unit, sub: sub, card: card };
      if (skew !== null) { c.chart.skew = skew; c.chart.anyLive = true; }
      charts.set(metric, c);
      return c;
    }

    function refresh(c) {
      const last = c.chart.latest();
      if (last) c.value.textContent = T.fmt(last[1]);
      c.unit.textContent = c.chart.unit ? " " + c.chart.unit : "";
      c.sub.textContent = subtitle(c.chart, 0, c.chart.unit);
    }

    function health(state) {
      const h = $("health");
      h.textContent = state;
      h.className = "health health-" + state.replace(/ /g, "-");
      T.pill.server({ health: state });
    }

    const sock = new T.Socket(cfg, (m) => {
      if (m.type === "point" && m.instance === cfg.instance) {
        const c = chartFor(m.metric);
        if (m.unit) c.chart.setUnit(m.unit);
        c.chart.add(0, m.ts, m.value, true);
        // one publisher, one clock: a metric that stopped still ends its window at now
        skew = c.chart.skew;
        for (const o of charts.values()) { o.chart.skew = skew; o.chart.anyLive = true; }
        refresh(c);
      } else if (m.type === "history" && m.instance === cfg.instance) {
        for (const [metric, pts] of Object.entries(m.metrics)) {
          const c = chartFor(metric);
          if (m.units && m.units[metric]) c.chart.setUnit(m.units[metric]);
          c.chart.merge(0, pts);
          refresh(c);
        }
        notice("");
      } else if (m.type === "dropped") {
        notice("This page fell behind: " + m.count + " updates were skipped.");
      } else if (m.type === "error") {
        notice(describeError(m));
      } else if (m.type === "grid") {
        serverState(m);
        const node = m.nodes.find((n) => n.name === cfg.instance);
        if (node) { seen = true; health(node.health); }
        else if (m.redis !== false) health(seen ? "gone" : "not seen yet");
        $("meta").replaceChildren(...(node ? Object.keys(node.meta).sort().map((k) =>
          T.el("span", { class: "chip" }, T.el("b", null, k), " " + node.meta[k])) : []));
      }
    });
    sock.watch("stats", cfg.instance);
    sock.watch("grid");
    setInterval(() => { for (const c of charts.values()) { c.chart.schedule(); refresh(c); } }, 1000);   // scroll
  }

  // -- /instances/<name>/logs ---------------------------------------------------
  function logsPage() {
    const list = $("log");
    const follow = $("follow");
    const MAX = 5000;

    function line(text) {
      const level = /\b(ERROR|CRITICAL|FATAL)\b/.test(text) ? "lvl-error" : /\bWARN(ING)?\b/.test(text) ? "lvl-warn" : null;
      return T.el("li", { class: level }, text);
    }

    function trim() { while (list.childElementCount > MAX) list.firstElementChild.remove(); }

    function done() {
      $("linecount").textContent = list.querySelectorAll("li:not(.sep)").length + " lines";
      if (follow.checked) list.scrollTop = list.scrollHeight;
    }

    // The lines on screen, newest last (separators left out).
    function shown(n) {
      const out = [];
      for (let li = list.lastElementChild; li && out.length < n; li = li.previousElementSibling) {
        if (!li.classList.contains("sep")) out.unshift(li.textContent);
      }
      return out;
    }

    // Where the screen's newest lines end in a fresh backlog: the index after them, or -1.
    function overlap(lines) {
      const tail = shown(20);
      if (!tail.length) return -1;
      for (let end = lines.length; end >= tail.length; end--) {
        let ok = true;
        for (let k = 1; k <= tail.length && ok; k++) ok = lines[end - k] === tail[tail.length - k];
        if (ok) return end;
      }
      return -1;
    }

    function backlog(lines) {
      if (!list.querySelector("li:not(.sep)")) {    // first join: the backlog is the log
        list.replaceChildren(...lines.map(line));
        return;
      }
      // a rejoin (reconnect, Redis back): keep what is on screen, mark the seam, add what is new
      const at = T.clock(Date.now() / 1000) + " " + T.zone();
      const from = overlap(lines);
      const fresh = from >= 0 ? lines.slice(from) : lines;
      const text = from >= 0
        ? "— reconnected at " + at + ": " + fresh.length + " new line" + (fresh.length === 1 ? "" : "s") + " since —"
        : "— gap: reconnected at " + at + "; lines may be missing here. The log's newest " + fresh.length + " lines follow —";
      list.append(T.el("li", { class: "sep gap", role: "separator" }, text), ...fresh.map(line));
    }

    const sock = new T.Socket(cfg, (m) => {
      if (m.type === "grid") { serverState(m); return; }
      if (m.instance !== undefined && m.instance !== cfg.instance) return;
      if (m.type === "backlog") {
        backlog(m.lines);
        trim();
        notice("");
        done();
      } else if (m.type === "log") {
        list.append(line(m.line));
        trim();
        done();
      } else if (m.type === "dropped") {
        list.append(T.el("li", { class: "sep" }, "… " + m.count + " updates skipped (this page fell behind) …"));
      } else if (m.type === "error") {
        notice(describeError(m));
      }
    });
    sock.watch("logs", cfg.instance);
    sock.watch("grid");
  }

  // -- / --------------------------------------------------------------------------
  function indexPage() {
    const body = $("instances");
    const points = new Map();   // "instance\0metric" -> [[ts, v], ...] (sparklines, role chart)
    const units = new Map();    // "instance\0metric" -> unit
    let watched = new Set();
    let snap = null;
    let skew = 0;
    const MAX_WATCH = 200, SPARK = 120, KEEP = 4000;
    const CHIPS = 12;   // metric chips per row: the instance page has them all
    const key = (i, m) => i + "\u0000" + m;

    function metricChip(name, metric) {
      const pts = points.get(key(name, metric)) || [];
      const v = pts.length ? T.withUnit(pts[pts.length - 1][1], units.get(key(name, metric))) : "…";
      const canvas = T.el("canvas", { class: "spark", "aria-hidden": "true" });
      const chip = T.el("span", { class: "chip metric", "data-metric": metric },
        T.el("b", null, T.nameNode(metric)), " ", T.el("span", { class: "v" }, v), canvas);
      requestAnimationFrame(() => C.sparkline(canvas, pts, SPARK, skew));
      return chip;
    }

    function row(n) {
      const href = "/instances/" + encodeURIComponent(n.name);
      const meta = Object.keys(n.meta).sort().map((k) => T.el("span", { class: "chip" }, T.el("b", null, k), " " + n.meta[k]));
      return T.el("tr", { "data-name": n.name, class: n.health === "gone" ? "gone" : null },
        T.el("td", { class: "name", "data-label": "Instance" }, T.el("a", { href: href }, T.nameNode(n.name))),
        T.el("td", { "data-label": "Health" }, T.el("span", { class: "health health-" + n.health }, n.health)),
        T.el("td", { class: "meta", "data-label": "Meta" }, ...meta),
        T.el("td", { class: "metrics", "data-label": "Metrics" }, ...n.metrics.slice(0, CHIPS).map((m) => metricChip(n.name, m)),
          n.metrics.length > CHIPS ? T.el("a", { class: "small more", href: href }, "+ " + (n.metrics.length - CHIPS) + " more") : null),
        T.el("td", { class: "links" }, T.el("a", { class: "small", href: href + "/logs" }, "logs")));
    }

    function render(s) {
      snap = s;
      serverState(s);
      $("stale-banner").hidden = !s.stale;
      const up = s.nodes.filter((n) => n.health === "up").length;
      $("summary").textContent = s.nodes.length + " known · " + up + " up";
      if (!s.nodes.length) {
        const text = s.stale
          ? "Nothing to show: the registry cannot be read until Redis is back."
          : "No instances yet. Start one with greenredis demo.";
        body.replaceChildren(T.el("tr", { class: "empty" }, T.el("td", { colspan: 5 }, text)));
      } else {
        body.replaceChildren(...s.nodes.map(row));
      }
      const live = s.nodes.filter((n) => n.metrics.length && n.health !== "gone").slice(0, MAX_WATCH).map((n) => n.name);
      const want = new Set(live);
      const depth = want.size <= 20 ? 600 : 60;   // enough for sparklines and the role chart
      for (const name of watched) if (!want.has(name)) sock.unwatch("stats", name);
      for (const name of want) if (!watched.has(name)) sock.watch("stats", name, { history: depth });
      watched = want;
      roles.update();
    }

    function setValue(instance, metric, ts, value, unit) {
      const k = key(instance, metric);
      if (unit) units.set(k, unit);
      if (!points.has(k)) points.set(k, []);
      C.insert(points.get(k), ts, value, KEEP);
      for (const tr of body.children) {
        if (tr.getAttribute("data-name") !== instance) continue;
        for (const chip of tr.querySelectorAll(".metric")) {
          if (chip.getAttribute("data-metric") !== metric) continue;
          chip.querySelector(".v").textContent = T.withUnit(value, units.get(k));
          C.sparkline(chip.querySelector("canvas"), points.get(k), SPARK, skew);
        }
      }
    }

    // One chart overlaying a metric across every instance of a role (meta "role").
    const roles = {
      chart: null, sig: "", panel: $("roles"), role: $("role"), metric: $("role-metric"),
      members() {
        const out = new Map();   // role -> [nodes]
        for (const n of (snap ? snap.nodes : [])) {
          if (n.health === "gone" || !n.meta.role) continue;
          if (!out.has(n.meta.role)) out.set(n.meta.role, []);
          out.get(n.meta.role).push(n);
        }
        return out;
      },
      fill(select, values) {
        const keep = select.value;
        select.replaceChildren(...values.map((v) => T.el("option", { value: v }, v)));
        if (values.includes(keep)) select.value = keep;
      },
      update() {
        const byRole = this.members();
        this.panel.hidden = !byRole.size;
        if (!byRole.size) return;
        this.fill(this.role, [...byRole.keys()].sort());
        const nodes = byRole.get(this.role.value) || [];
        const metrics = [...new Set(nodes.flatMap((n) => n.metrics))].sort();
        const had = this.metric.value;
        this.fill(this.metric, metrics);
        if (!had || !metrics.includes(had)) {   // start with the metric most of the role has
          const count = (m) => nodes.filter((n) => n.metrics.includes(m)).length;
          this.metric.value = metrics.reduce((best, m) => count(m) > count(best) ? m : best, metrics[0]);
        }
        const names = nodes.filter((n) => n.metrics.includes(this.metric.value)).map((n) => n.name);
        const sig = this.role.value + "\u0000" + this.metric.value + "\u0000" + names.join("\u0000");
        if (sig !== this.sig) {
          this.sig = sig;
          this.names = names;
          $("role-plot").replaceChildren();
          this.chart = names.length ? new C.TimeChart($("role-plot"), { labels: names, window: win(), legend: true }) : null;
          $("role-title").textContent = this.metric.value + " across role " + this.role.value + " (" + names.length + ")";
        }
        this.redraw();
      },
      redraw() {
        if (!this.chart) return;
        this.chart.series = this.names.map((n) => (points.get(key(n, this.metric.value)) || []).slice());
        this.chart.skew = skew;
        this.chart.setUnit(units.get(key(this.names[0], this.metric.value)));
        this.chart.schedule();
        $("role-sub").textContent = "last " + T.span(this.chart.window) + " · times in " + T.zone() +
          (this.chart.covered() && this.chart.covered() < this.chart.window * 0.9 ? " (data for the last " + T.span(this.chart.covered()) + ")" : "");
      },
    };
    const win = windowChoice((w) => { if (roles.chart) { roles.chart.setWindow(w); roles.redraw(); } });
    roles.role.addEventListener("change", () => roles.update());
    roles.metric.addEventListener("change", () => roles.update());

    const sock = new T.Socket(cfg, (m) => {
      if (m.type === "grid") render(m);
      else if (m.type === "point") {
        skew = Date.now() / 1000 - m.ts;
        setValue(m.instance, m.metric, m.ts, m.value, m.unit);
      } else if (m.type === "history") {
        for (const [metric, pts] of Object.entries(m.metrics)) {
          for (const [ts, v] of pts) C.insert(points.get(key(m.instance, metric)) || points.set(key(m.instance, metric), []).get(key(m.instance, metric)), ts, v, KEEP);
          const all = points.get(key(m.instance, metric));
          if (all && all.length) setValue(m.instance, metric, all[all.length - 1][0], all[all.length - 1][1], (m.units || {})[metric]);
        }
        roles.redraw();
      }
    });
    sock.watch("grid");
    setInterval(() => {
      roles.redraw();
      for (const canvas of body.querySelectorAll("canvas.spark")) {
        const tr = canvas.closest("tr"), chip = canvas.closest(".metric");
        C.sparkline(canvas, points.get(key(tr.getAttribute("data-name"), chip.getAttribute("data-metric"))) || [], SPARK, skew);
      }
    }, 2000);
  }

  // -- 404: the pill; a page of an instance that has not joined yet opens when it does
  function notFoundPage() {
    let reloading = false;
    const sock = new T.Socket(cfg, (m) => {
      if (m.type !== "grid") return;
      serverState(m);
      const node = cfg.waitFor && m.nodes.find((n) => n.name === cfg.waitFor && n.health !== "gone");
      if (node && !reloading) { reloading = true; location.reload(); }
    });
    sock.watch("grid");
  }

  ({ index: indexPage, instance: instancePage, logs: logsPage, 404: notFoundPage }[cfg.page] || (() => {}))();
})();
