// Tempo: the page's one websocket, with reconnect, fresh tokens and re-watching.
"use strict";

window.Tempo = (function () {
  function config() {
    return JSON.parse(document.getElementById("tempo-config").textContent);
  }

  // Numbers as people read them: 1,234 / 56.7 / 0.0123 / 1.2M
  function fmt(v) {
    if (typeof v !== "number" || !isFinite(v)) return "–";
    const a = Math.abs(v);
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

    status(s) {
      const node = document.getElementById("status");
      if (!node) return;
      node.className = "status status-" + s;
      node.textContent = STATUS_TEXT[s] || s;
    }

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

  return { config: config, Socket: Socket, fmt: fmt, clock: clock, el: el };
})();
