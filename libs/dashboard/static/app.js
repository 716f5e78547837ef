// qe-worker dashboard: listens to /events (server-sent events) and draws the workers.
// No framework, no CDN: plain DOM (textContent only: names and errors come from workers) and
// hand-made SVG line charts. Each chart carries data-points (how many points it draws) and
// each row data-calls (the command's total calls), which the browser test watches.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const CHART_W = 112, CHART_H = 30, SHOWN = 150; // points drawn per chart (the newest)
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  const workers = new Map(); // jid -> {info, series: Map(cmd -> [[seq, t, calls, errors, p50, p99]])}
  let history = 150;

  const main = document.getElementById("workers");
  const conn = document.getElementById("conn");
  const summary = document.getElementById("summary");

  function setConn(state, text) { conn.dataset.state = state; conn.textContent = text; }

  function merge(view) {
    history = view.history || history;
    const seen = new Set();
    for (const w of view.workers) {
      seen.add(w.jid);
      let entry = workers.get(w.jid);
      if (!entry || view.since === 0) { entry = { series: new Map() }; workers.set(w.jid, entry); }
      entry.info = w;
      for (const c of w.commands) {
        let points = entry.series.get(c.cmd) || [];
        for (const p of c.points) {
          if (!points.length || p[0] > points[points.length - 1][0]) points.push(p);
        }
        if (points.length > history) points = points.slice(points.length - history);
        entry.series.set(c.cmd, points);
      }
    }
    for (const jid of Array.from(workers.keys())) if (!seen.has(jid)) workers.delete(jid);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function fmtNum(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (Math.abs(v) >= 100) return v.toFixed(0);
    return v.toFixed(digits === undefined ? 2 : digits);
  }
  function fmtMs(v) { return v === null || v === undefined ? "–" : (v >= 1000 ? (v / 1000).toFixed(2) + " s" : fmtNum(v) + " ms"); }
  function fmtDuration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.max(0, Math.round(s));
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m) return m + "m " + String(sec).padStart(2, "0") + "s";
    return sec + "s";
  }
  function fmtWhen(value) {
    if (!value) return "–";
    const when = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    if (Number.isNaN(when.getTime())) return String(value);
    const delta = (when.getTime() - Date.now()) / 1000;
    const rel = Math.abs(delta) < 1 ? "now" : delta > 0 ? "in " + fmtDuration(delta) : fmtDuration(-delta) + " ago";
    return when.toLocaleTimeString() + " (" + rel + ")";
  }

  // One SVG chart of some fields of the points ([seq, t, calls, errors, p50, p99]); a null
  // value breaks the line (no call in that interval: no latency).
  function chart(points, fields, kind, cmd, unit) {
    const shown = points.slice(-SHOWN);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("width", CHART_W);
    svg.setAttribute("height", CHART_H);
    svg.setAttribute("viewBox", "0 0 " + CHART_W + " " + CHART_H);
    svg.dataset.kind = kind;
    svg.dataset.cmd = cmd;
    svg.dataset.points = String(shown.length);
    let max = 0;
    for (const p of shown) for (const f of fields) if (p[f.index] !== null && p[f.index] > max) max = p[f.index];
    max = max > 0 ? max * 1.1 : 1;
    // newest point on the right; a young series fills the chart, an old one scrolls
    const slots = Math.max(30, shown.length);
    const x = (i) => 2 + (CHART_W - 4) * (slots - shown.length + i) / (slots - 1);
    const y = (v) => CHART_H - 2 - (CHART_H - 4) * v / max;
    for (const f of fields) {
      let run = [];
      const flush = () => {
        if (run.length === 1) run.push([run[0][0] + 1, run[0][1]]); // a lone point: a short dash
        if (run.length) {
          const line = document.createElementNS(SVG, "polyline");
          line.setAttribute("class", f.name);
          line.setAttribute("points", run.map((xy) => xy[0].toFixed(1) + "," + xy[1].toFixed(1)).join(" "));
          svg.append(line);
        }
        run = [];
      };
      shown.forEach((p, i) => { if (p[f.index] === null) flush(); else run.push([x(i), y(p[f.index])]); });
      flush();
    }
    const title = document.createElementNS(SVG, "title");
    const last = shown[shown.length - 1];
    title.textContent = last ? fields.map((f) => f.name + " " + fmtNum(last[f.index]) + unit).join(", ") : "no data yet";
    svg.append(title);
    return svg;
  }

  function commandsTable(entry) {
    const info = entry.info;
    if (!info.commands.length) return el("p", { class: "legend" }, "No calls yet.");
    const table = el("table", { class: "commands" },
      el("thead", {}, el("tr", {},
        el("th", {}, "command"), el("th", {}, "calls"), el("th", {}, "errors"),
        el("th", {}, el("span", { class: "legend" }, "calls/s", el("i", { class: "calls" }))),
        el("th", {}, el("span", { class: "legend" }, "latency", el("i", { class: "p50" }), "p50", el("i", { class: "p99" }), "p99")),
        el("th", {}, el("span", { class: "legend" }, "errors/s", el("i", { class: "errors" }))))));
    const body = el("tbody");
    for (const c of info.commands) {
      const points = entry.series.get(c.cmd) || [];
      const last = c.last;
      body.append(el("tr", { "data-cmd": c.cmd, "data-calls": String(c.calls) },
        el("td", { class: "cmd" }, c.cmd),
        el("td", { class: "num" }, c.calls),
        el("td", { class: "num" }, c.errors),
        el("td", {}, chart(points, [{ name: "calls", index: 2 }], "calls", c.cmd, "/s"),
           el("span", { class: "legend" }, last ? fmtNum(last[2]) + "/s" : "–")),
        el("td", {}, chart(points, [{ name: "p50", index: 4 }, { name: "p99", index: 5 }], "latency", c.cmd, " ms"),
           el("span", { class: "legend" }, last ? fmtMs(last[4]) + " / " + fmtMs(last[5]) : "–")),
        el("td", {}, chart(points, [{ name: "errors", index: 3 }], "errors", c.cmd, "/s"),
           el("span", { class: "legend" }, last ? fmtNum(last[3]) + "/s" : "–"))));
    }
    table.append(body);
    return table;
  }

  function timersTable(timers) {
    if (!timers.length) return null;
    const body = el("tbody");
    for (const t of timers) {
      const late = t.lateness_p99_ms !== null && t.interval_ms && t.lateness_p99_ms > t.interval_ms / 10;
      body.append(el("tr", { "data-timer": t.name },
        el("td", { class: "cmd" }, t.name), el("td", { class: "num" }, fmtMs(t.interval_ms)),
        el("td", { class: "num" }, t.runs + " / " + t.errors + " / " + t.missed),
        el("td", { class: "num" + (late ? " late" : "") }, fmtMs(t.lateness_p50_ms) + " / " + fmtMs(t.lateness_p99_ms)),
        el("td", {}, fmtWhen(t.last_run))));
    }
    return el("div", {}, el("h3", {}, "timers"), el("table", { class: "timers" },
      el("thead", {}, el("tr", {}, el("th", {}, "timer"), el("th", {}, "every"),
        el("th", {}, "runs / errors / missed"), el("th", {}, "lateness p50 / p99"), el("th", {}, "last run"))), body));
  }

  function jobsBlock(jobs) {
    if (!jobs) return null;
    const head = el("div", { class: "facts" }, el("span", {}, el("b", {}, jobs.count), " jobs"),
      el("span", {}, el("b", {}, jobs.runs), " runs"), el("span", {}, el("b", {}, jobs.failures), " failed"),
      el("span", {}, el("b", {}, jobs.missed), " missed"));
    const block = el("div", {}, el("h3", {}, "scheduled jobs"), head);
    if (jobs.list && jobs.list.length) {
      const body = el("tbody");
      for (const j of jobs.list) {
        body.append(el("tr", { "data-job": j.job },
          el("td", { class: "cmd" }, j.cmd || "?"), el("td", {}, j.trigger),
          el("td", {}, fmtWhen(j.next_run)), el("td", {}, fmtWhen(j.last_run)),
          el("td", { class: "num" }, j.run_count), el("td", { class: "num" }, j.error_count),
          el("td", { class: "error" }, j.last_error || "")));
      }
      block.append(el("table", { class: "jobs" }, el("thead", {}, el("tr", {}, el("th", {}, "command"),
        el("th", {}, "trigger"), el("th", {}, "next run"), el("th", {}, "last run"), el("th", {}, "runs"),
        el("th", {}, "errors"), el("th", {}, "last error"))), body));
    }
    return block;
  }

  function card(entry) {
    const w = entry.info;
    const req = w.requests || {};
    return el("section", { class: "worker", "data-jid": w.jid, "data-status": w.status },
      el("div", { class: "head" }, el("h2", {}, w.jid), el("span", { class: "status " + w.status }, w.status)),
      el("div", { class: "facts" },
        el("span", {}, "service ", el("b", {}, w.service || "–")),
        el("span", {}, "version ", el("b", {}, w.version || "–")),
        el("span", {}, "uptime ", el("b", {}, fmtDuration(w.uptime_s))),
        w.load !== null ? el("span", {}, "load ", el("b", {}, w.load)) : null,
        el("span", {}, "in flight ", el("b", {}, req.in_flight === undefined ? "–" : req.in_flight)),
        el("span", {}, "seen via ", el("b", {}, w.sources.join(", "))),
        w.age_s !== null ? el("span", {}, "answered ", el("b", {}, fmtDuration(w.age_s)), " ago") : null),
      w.error ? el("div", { class: "error" }, w.error) : null,
      el("h3", {}, "commands"), commandsTable(entry), timersTable(w.timers), jobsBlock(w.jobs));
  }

  function render() {
    const cards = [];
    const counts = { online: 0, stale: 0, offline: 0, waiting: 0 };
    for (const jid of Array.from(workers.keys()).sort()) {
      const entry = workers.get(jid);
      counts[entry.info.status] = (counts[entry.info.status] || 0) + 1;
      cards.push(card(entry));
    }
    main.replaceChildren(...cards);
    main.dataset.count = String(cards.length);
    summary.textContent = cards.length + " worker" + (cards.length === 1 ? "" : "s") + ": " +
      Object.entries(counts).filter((kv) => kv[1]).map((kv) => kv[1] + " " + kv[0]).join(", ");
  }

  const events = new EventSource("events" + query);
  events.addEventListener("state", (ev) => {
    merge(JSON.parse(ev.data));
    render();
    setConn("live", "live");
  });
  events.onerror = () => setConn("reconnecting", "reconnecting…");
})();
