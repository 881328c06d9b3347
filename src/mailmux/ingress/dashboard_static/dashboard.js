// mailmux dashboard: reads GET /dashboard/stream (Server-Sent Events) with fetch(), so that it
// can send the admin key, and draws what it says. No build step: plain browser JavaScript.
"use strict";

(function () {
  const KEY_STORAGE = "mailmux.adminKey";
  const MAX_EVENTS = 100;
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- state

  let windowSeconds = 900;
  let first = null; // the second counts[v][0] is for
  let length = 0; // seconds held, from `first`
  const counts = new Map(); // vendor -> accepted messages in each second
  let vendors = []; // the latest vendors report, in config order
  let chart = null;
  let chartVendors = "";
  let backoff = 1000;
  const waitingForKey = []; // what to run again once the operator gave a key

  // ---------------------------------------------------------------- the admin key

  function adminKey() {
    return sessionStorage.getItem(KEY_STORAGE);
  }

  function authHeaders() {
    const key = adminKey();
    return key ? { Authorization: "Bearer " + key } : {};
  }

  function askForKey(reason, retry) {
    waitingForKey.push(retry);
    $("key-reason").textContent = reason;
    $("key-form").hidden = false;
    $("key-input").focus();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("key-input").value.trim());
    $("key-input").value = "";
    $("key-form").hidden = true;
    for (const retry of waitingForKey.splice(0)) retry();
  });

  async function errorMessage(response) {
    try {
      const body = await response.json();
      return (body.error && body.error.message) || response.statusText;
    } catch (_) {
      return response.status + " " + response.statusText;
    }
  }

  // ---------------------------------------------------------------- the stream

  function setConnection(text) {
    $("connection").textContent = text;
  }

  function reconnectLater(reason) {
    setConnection(reason + "; reconnecting in " + Math.round(backoff / 1000) + " s");
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 15000);
  }

  async function connect() {
    let response;
    try {
      response = await fetch("dashboard/stream", { headers: authHeaders(), cache: "no-store" });
    } catch (_) {
      reconnectLater("cannot reach mailmux");
      return;
    }
    if (response.status === 401 || response.status === 403) {
      const reason = await errorMessage(response);
      setConnection("needs the admin key");
      askForKey(reason, connect);
      return;
    }
    if (!response.ok) {
      reconnectLater(await errorMessage(response));
      return;
    }
    backoff = 1000;
    setConnection("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
    } catch (_) {
      // the connection broke: reconnect below
    }
    reconnectLater("the stream ended");
  }

  // One SSE block: "event:" and "data:" lines; lines starting with ":" are comments.
  function dispatch(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (data.length === 0) return;
    const payload = JSON.parse(data.join("\n"));
    if (name === "snapshot") onSnapshot(payload);
    else if (name === "tick") onTick(payload);
    else if (name === "notice") addEvents([payload]);
  }

  function onSnapshot(snapshot) {
    windowSeconds = snapshot.window;
    first = null;
    length = 0;
    counts.clear();
    $("events").replaceChildren();
    addEvents(snapshot.notices);
    onTick(snapshot);
  }

  function onTick(tick) {
    addSeconds(tick.start, tick.series);
    showState(tick);
    drawChart();
  }

  // ---------------------------------------------------------------- the series

  function addSeconds(start, series) {
    const names = Object.keys(series);
    for (const name of [...counts.keys()]) if (!names.includes(name)) counts.delete(name);
    for (const name of names) if (!counts.has(name)) counts.set(name, new Array(length).fill(0));
    const n = names.length ? series[names[0]].length : 0;
    if (first === null) first = start;
    for (let i = 0; i < n; i++) {
      const index = start + i - first;
      if (index < 0) continue;
      while (length <= index) {
        for (const values of counts.values()) values.push(0);
        length++;
      }
      for (const name of names) counts.get(name)[index] = series[name][i];
    }
    const extra = length - windowSeconds;
    if (extra > 0) {
      for (const values of counts.values()) values.splice(0, extra);
      first += extra;
      length -= extra;
    }
  }

  function times() {
    const out = new Array(length);
    for (let i = 0; i < length; i++) out[i] = first + i;
    return out;
  }

  function chartWidth() {
    return Math.max(200, $("chart").clientWidth);
  }

  function chartHeight() {
    return window.innerWidth < 600 ? 220 : 300;
  }

  function drawChart() {
    const names = [...counts.keys()];
    const data = [times(), ...names.map((name) => counts.get(name))];
    if (chart && chartVendors === names.join(",")) {
      chart.setData(data);
      showLatest();
      return;
    }
    if (chart) chart.destroy();
    chartVendors = names.join(",");
    chart = new uPlot(
      {
        width: chartWidth(),
        height: chartHeight(),
        scales: {
          // At least a minute wide, so the first seconds after a start do not fill the axis.
          x: { time: true, range: (_u, min, max) => [Math.min(min, max - 60), max] },
          y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] },
        },
        series: [
          {},
          ...names.map((name, i) => ({
            label: name,
            stroke: COLORS[i % COLORS.length],
            width: 2,
            points: { show: false },
            value: (_u, v) => (v == null ? "–" : v + " msg/s"),
          })),
        ],
        axes: [{ space: 70, values: timeLabels }, { label: "msg/s", size: 50 }],
      },
      data,
      $("chart"),
    );
    showLatest();
  }

  // One line of wall-clock labels (uPlot's default adds a date row that crowds a phone).
  function timeLabels(_u, splits) {
    const span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
    const parts = span < 600 ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
    return splits.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false, ...parts }));
  }

  // Away from the cursor, the legend shows the latest second's rates.
  function showLatest() {
    if (length > 0 && chart.cursor.left < 0) chart.setLegend({ idx: length - 1 });
  }

  new ResizeObserver(() => {
    if (chart) chart.setSize({ width: chartWidth(), height: chartHeight() });
  }).observe($("chart"));

  // ---------------------------------------------------------------- vendors, spool, config

  function clockTime(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  function age(seconds) {
    if (seconds == null) return "none queued";
    const s = Math.round(seconds);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function ms(value) {
    return value == null ? "–" : value + " ms";
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    node.append(...children);
    return node;
  }

  function showState(state) {
    const overall = $("overall");
    overall.textContent = state.status;
    overall.className = "badge " + state.status;
    vendors = state.vendors;
    showVendors();
    $("spool-depth").textContent = String(state.spool.depth);
    $("spool-age").textContent = age(state.spool.oldest_age_seconds);
    showConfig(state.config);
  }

  function showConfig(config) {
    const banner = $("reload-error");
    const failed = config && config.reload_error;
    banner.hidden = !failed;
    if (failed) {
      const errors = Array.isArray(failed.errors) ? failed.errors : [];
      banner.textContent =
        "Config reload refused at " + clockTime(failed.at) + " (" + failed.path +
        "), the previous config is still in force: " + errors.join("; ");
    }
    $("config-line").textContent =
      config && config.path
        ? "Config " + config.path + (config.loaded_at ? ", loaded " + clockTime(config.loaded_at) : "")
        : "";
  }

  function overrideText(o) {
    let text = o.kind === "weights" ? "weight " + o.weight : o.hard ? "hard drain" : o.kind;
    text += " by " + o.created_by;
    if (o.expires_at) text += " until " + clockTime(o.expires_at);
    if (o.reason) text += " (" + o.reason + ")";
    return text;
  }

  function vendorCard(name, index) {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = COLORS[index % COLORS.length];
    const field = (label, cls) => [el("dt", {}, label), el("dd", { class: cls })];
    const input = el("input", {
      type: "number",
      min: "0",
      step: "any",
      class: "weight-input",
      "aria-label": "weight for " + name,
    });
    input.addEventListener("input", () => (input.dataset.dirty = "1"));
    const button = (action, label, cls) =>
      el("button", { type: "button", "data-action": action, "data-vendor": name, class: cls || "" }, label);
    const card = el(
      "div",
      { class: "vendor", "data-vendor": name },
      el(
        "div",
        { class: "row" },
        el("h3", {}, swatch, name),
        el("span", { class: "muted kind" }),
        el("span", { class: "badge state" }),
        el("span", { class: "badge drained" }, "drained"),
      ),
      el(
        "dl",
        { class: "facts" },
        ...field("Weight", "weight"),
        ...field("Latency", "latency"),
        ...field("Overrides", "overrides"),
        ...field("Last error", "last-error"),
      ),
      el(
        "div",
        { class: "row controls" },
        button("drain", "Drain", "danger"),
        button("restore", "Restore"),
        input,
        button("weight", "Set weight"),
      ),
    );
    card.addEventListener("click", (event) => {
      const action = event.target.closest("button") && event.target.closest("button").dataset.action;
      if (action === "drain") act("POST", "admin/v1/overrides", { kind: "drain", vendor: name, reason: "dashboard" });
      else if (action === "restore") act("DELETE", "admin/v1/overrides/" + encodeURIComponent(name));
      else if (action === "weight") {
        const weight = Number(input.value);
        if (input.value === "" || !Number.isFinite(weight)) {
          showActionError("weight for " + name + ": enter a number");
          return;
        }
        delete input.dataset.dirty;
        act("POST", "admin/v1/overrides", { kind: "weights", weights: { [name]: weight }, reason: "dashboard" });
      }
    });
    return card;
  }

  function showVendors() {
    const list = $("vendors");
    const names = vendors.map((v) => v.name);
    for (const card of [...list.children]) if (!names.includes(card.dataset.vendor)) card.remove();
    vendors.forEach((v, index) => {
      let card = list.querySelector('.vendor[data-vendor="' + CSS.escape(v.name) + '"]');
      if (!card) card = vendorCard(v.name, index);
      list.append(card); // keeps config order
      const q = (cls) => card.querySelector("." + cls);
      q("kind").textContent = v.kind;
      const state = q("state");
      state.className = "badge state " + v.state;
      state.textContent = v.ejected_until ? v.state + " until " + clockTime(v.ejected_until) : v.state;
      const drain = v.overrides.find((o) => o.kind === "drain");
      q("drained").hidden = !drain;
      q("drained").textContent = drain && drain.hard ? "hard-drained" : "drained";
      q("weight").textContent =
        v.weight + " effective (" + Math.round(v.share * 100) + " %), " + v.configured_weight + " configured";
      if (v.latency_p50_ms !== undefined) {
        q("latency").textContent = "p50 " + ms(v.latency_p50_ms) + ", p90 " + ms(v.latency_p90_ms);
      }
      q("overrides").textContent = v.overrides.length ? v.overrides.map(overrideText).join("; ") : "none";
      q("last-error").textContent = v.last_error || "none";
      const input = q("weight-input");
      if (!input.dataset.dirty && document.activeElement !== input) input.value = String(v.weight);
    });
  }

  // ---------------------------------------------------------------- events

  function addEvents(notices) {
    const list = $("events");
    for (const n of notices) {
      list.prepend(
        el(
          "li",
          {},
          el("time", {}, clockTime(n.at)),
          el("span", { class: "badge" }, n.kind),
          " ",
          n.summary,
        ),
      );
    }
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }

  // ---------------------------------------------------------------- controls

  function showActionError(text) {
    const box = $("action-error");
    box.textContent = text;
    box.hidden = !text;
  }

  async function act(method, path, body) {
    showActionError("");
    const headers = authHeaders();
    if (body) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    } catch (_) {
      showActionError("cannot reach mailmux");
      return;
    }
    if (response.status === 401 || response.status === 403) {
      askForKey(await errorMessage(response), () => act(method, path, body));
      return;
    }
    if (!response.ok) {
      showActionError(await errorMessage(response));
      return;
    }
    // The answer is the vendors report without latency: keep what the stream last said.
    const latency = new Map(vendors.map((v) => [v.name, v]));
    vendors = (await response.json()).vendors.map((v) => {
      const known = latency.get(v.name) || {};
      return { latency_p50_ms: known.latency_p50_ms, latency_p90_ms: known.latency_p90_ms, ...v };
    });
    showVendors();
  }

  // ---------------------------------------------------------------- for tests and the console

  window.mailmuxDashboard = {
    // {vendor: [[epoch second, messages that second], ...]}, oldest first, as charted.
    series() {
      const out = {};
      for (const [name, values] of counts) out[name] = values.map((v, i) => [first + i, v]);
      return out;
    },
    vendors() {
      return vendors.map((v) => ({ ...v }));
    },
  };

  connect();
})();
