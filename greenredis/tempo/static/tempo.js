// Tempo: the page's one websocket, with reconnect, fresh tokens and re-watching.
"use strict";

window.Tempo = (function () {
  function config() {
    return JSON.parse(document.getElementById("tempo-config").textContent);
  }

  // Numbers as people read them: 1,234 / 56.7 / 0.0123 / 1.2M / 3.40e+20
  function fmt(v) {
    if (typeof v !== "number" || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e15) return v.toExponential(2);   // toFixed would print 21+ digits (or "1e+291G")
    if (a >= 1e12) return (v / 1e12).toFixed(2) + "T";
    if (a >= 1e9) return (v / 1e9).toFixed(2) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
    if (a >= 1000) return v.toLocaleString("en-US", { maximumFractionDigits: 0 });
    if (Number.isInteger(v)) return String(v);
    if (a >= 100) return String(Number(v.toFixed(1)));
    if (a >= 1) return String(Number(v.toFixed(2)));
    if (a === 0) return "0";
    return v.toPrecision(3);
  }

  function clock(ts) {
    const d = new Date(ts * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }

  // The browser's zone as people read it on a label: "UTC", "UTC+1", "UTC-5:30".
  function zone(ts) {
    const off = -new Date((ts || Date.now() / 1000) * 1000).getTimezoneOffset();
    if (!off) return "UTC";
    const a = Math.abs(off);
    return "UTC" + (off > 0 ? "+" : "-") + Math.floor(a / 60) + (a % 60 ? ":" + String(a % 60).padStart(2, "0") : "");
  }

  // A value with its unit: "512 MB", "12 %", "231.5".
  function withUnit(v, unit) {
    const text = fmt(v);
    return unit && text !== "–" ? text + (unit === "%" ? "" : " ") + unit : text;
  }

  // "1 min", "5 min", "1 h", "45 s"
  function span(seconds) {
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.round(seconds / 60) + " min";
    return Number((seconds / 3600).toFixed(1)) + " h";
  }

  // A name as text that may wrap after . - _ : @ (word boundaries), never parsed as HTML.
  function nameNode(name) {
    const frag = document.createDocumentFragment();
    // names never hold control characters, so \u0000 is a safe cut mark (no look-behind: older Safari)
    for (const part of String(name).replace(/([.\-_:@])/g, "$1\u0000").split("\u0000")) {
      frag.append(document.createTextNode(part), document.createElement("wbr"));
    }
    return frag;
  }

  // el("div", {class: "x"}, "text", child): never parses HTML, so names stay text.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const STATUS_TEXT = { live: "live", connecting: "connecting…", reconnecting: "reconnecting…" };

  // The pill: the websocket first, then what the server says about Redis, the live
  // feed and (on an instance page) the instance. Pages call server(...) with what
  // they know; the socket calls status(...).
  class Pill {
    constructor() { this.conn = "connecting"; this.info = {}; }
    status(s) { this.conn = s; this.render(); }
    server(info) { Object.assign(this.info, info); this.render(); }
    state() {
      const i = this.info;
      if (this.conn !== "live") return [this.conn, STATUS_TEXT[this.conn] || this.conn, "connection to Tempo: " + this.conn];
      if (i.redis === false) return ["down", "Redis down", "Tempo cannot reach Redis: showing the last view"];
      if (i.feed) return ["down", "no live feed", "the live feed is unavailable: " + i.feed];
      if (i.health === "gone") return ["stale", "gone", "the instance left or stopped sending heartbeats"];
      if (i.health === "stale") return ["stale", "stale", "the instance's heartbeats are late"];
      if (i.stale) return ["stale", "stale", "the registry is stale"];
      return ["live", "live", "live connection; Redis reachable"];
    }
    render() {
      const node = document.getElementById("status");
      if (!node) return;
      const [cls, text, title] = this.state();
      node.className = "status status-" + cls;
      node.textContent = text;
      node.title = title;
      node.setAttribute("data-state", cls);
    }
  }
  const pill = new Pill();

  // The socket re-sends every watch after a reconnect: the server answers with
  // history (stats) or the backlog (logs), which fills whatever was missed.
  class Socket {
    constructor(cfg, onMessage) {
      this.cfg = cfg;
      this.onMessage = onMessage;
      this.watches = new Map();
      this.ws = null;
      this.delay = 500;
      this.token = cfg.token;
      this.opened = false;
      this.onopen = null;
      setInterval(() => this.send({ op: "ping" }), 25000);  // proxies close idle sockets
      this.connect();
    }

    url(token) {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      let u = proto + "//" + location.host + this.cfg.ws;
      if (token) u += "?token=" + encodeURIComponent(token);
      return u;
    }

    async token_() {
      if (!this.cfg.auth) return null;
      if (this.token) { const t = this.token; this.token = null; return t; }
      const r = await fetch(this.cfg.tokenUrl, { credentials: "same-origin", cache: "no-store" });
      if (!r.ok) throw new Error("token: HTTP " + r.status);
      return (await r.json()).token;
    }

    async connect() {
      this.status(this.opened ? "reconnecting" : "connecting");
      let token = null;
      try { token = await this.token_(); } catch (e) { this.retry(); return; }
      const ws = new WebSocket(this.url(token));
      this.ws = ws;
      ws.onopen = () => {
        this.delay = 500;
        this.opened = true;
        this.status("live");
        for (const msg of this.watches.values()) ws.send(JSON.stringify(msg));
        if (this.onopen) this.onopen();
      };
      ws.onmessage = (ev) => {
        let batch;
        try { batch = JSON.parse(ev.data); } catch (e) { return; }
        for (const m of Array.isArray(batch) ? batch : [batch]) this.onMessage(m);
      };
      ws.onclose = () => { if (this.ws === ws) { this.ws = null; this.retry(); } };
    }

    retry() {
      this.status("reconnecting");
      const wait = this.delay * (0.75 + Math.random() * 0.5);
      this.delay = Math.min(this.delay * 2, 10000);
      setTimeout(() => this.connect(), wait);
    }

    status(s) { pill.status(s); }

    send(msg) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
    }

    watch(kind, instance, extra) {
      const msg = Object.assign({ op: "watch", kind: kind }, instance ? { instance: instance } : {}, extra || {});
      this.watches.set(kind + "\u0000" + (instance || ""), msg);
      this.send(msg);
    }

    unwatch(kind, instance) {
      const key = kind + "\u0000" + (instance || "");
      if (!this.watches.delete(key)) return;
      this.send(Object.assign({ op: "unwatch", kind: kind }, instance ? { instance: instance } : {}));
    }
  }

  return {
    config: config, Socket: Socket, fmt: fmt, clock: clock, el: el, zone: zone, withUnit: withUnit,
    span: span, nameNode: nameNode, pill: pill,
  };
})();
