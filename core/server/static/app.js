// mypt web page: Chat and Training tabs. No external scripts.
"use strict";

const $ = (id) => document.getElementById(id);

async function api(path, opts = {}) {
  const init = { credentials: "same-origin", ...opts };
  if (opts.body !== undefined) {
    init.method = init.method || "POST";
    init.headers = { "Content-Type": "application/json", ...(opts.headers || {}) };
    init.body = JSON.stringify(opts.body);
  }
  const resp = await fetch(path, init);
  if (resp.status === 401 && path !== "/api/login") {
    showLogin();
    throw new Error("login required");
  }
  return resp;
}

async function apiJSON(path, opts) {
  const resp = await api(path, opts);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

// ---- tabs ----
function selectTab(name) {
  for (const t of ["chat", "training"]) {
    $("tab-" + t).classList.toggle("active", t === name);
    $(t + "-panel").hidden = t !== name;
  }
  if (name === "training") refreshRuns();
}
$("tab-chat").addEventListener("click", () => selectTab("chat"));
$("tab-training").addEventListener("click", () => selectTab("training"));

// ---- login ----
function showLogin() {
  $("login-panel").hidden = false;
  $("chat-panel").hidden = true;
  $("training-panel").hidden = true;
}
$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    await apiJSON("/api/login", { body: { password: $("password").value } });
    $("password").value = "";
    $("login-panel").hidden = true;
    $("logout").hidden = false;
    selectTab("chat");
    await init();
  } catch (e) {
    $("login-error").textContent = e.message;
  }
});
$("logout").addEventListener("click", async () => {
  await api("/api/logout", { body: {} }).catch(() => {});
  location.reload();
});

// ---- chat ----
function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role === "user" ? "You" : role === "assistant" ? "Model" : "Error";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  div.append(label, body);
  $("messages").append(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}

async function loadModels() {
  const data = await apiJSON("/api/models");
  const sel = $("model");
  const prev = sel.value;
  sel.replaceChildren(...data.models.map((m) => new Option(m, m)));
  if (data.models.includes(prev)) sel.value = prev;
  $("no-models").hidden = data.models.length > 0;
  $("send").disabled = data.models.length === 0;
}

async function loadHistory() {
  const data = await apiJSON("/api/history");
  $("messages").replaceChildren();
  for (const m of data.messages) addMessage(m.role, m.content);
}

function numberField(id, integer) {
  const v = $(id).value.trim();
  if (v === "") return undefined;
  return integer ? parseInt(v, 10) : parseFloat(v);
}

// readSSE parses a text/event-stream body and calls onEvent(name, data).
async function readSSE(resp, onEvent) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}

let sending = false;
async function send() {
  const text = $("message").value;
  if (sending || text.trim() === "" || !$("model").value) return;
  sending = true;
  $("send").disabled = true;
  $("message").value = "";
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  reply.classList.add("streaming");
  const body = reply.querySelector(".text");
  $("chat-status").textContent = "Generating…";
  const req = {
    model: $("model").value,
    message: text,
    system: $("system").value,
    temperature: numberField("temperature"),
    top_k: numberField("top_k", true),
    top_p: numberField("top_p"),
    repetition_penalty: numberField("repetition_penalty"),
    max_new_tokens: numberField("max_new_tokens", true) || 0,
    seed: numberField("seed", true),
  };
  try {
    const resp = await api("/api/chat", { body: req });
    if (!resp.ok) {
      const data = await resp.json().catch(() => ({}));
      throw new Error(data.error || resp.statusText);
    }
    let finished = false;
    await readSSE(resp, (event, data) => {
      if (event === "token") {
        body.textContent += data.text;
        $("messages").scrollTop = $("messages").scrollHeight;
      } else if (event === "done") {
        finished = true;
        body.textContent = data.reply;
        let status = `${data.tokens} tokens, seed ${data.seed}` + (data.stopped ? "" : " (max_new_tokens reached)");
        if (data.dropped > 0) status += `; ${data.dropped} oldest turns dropped to fit the context`;
        $("chat-status").textContent = status;
        reply.dataset.done = "true";
      } else if (event === "error") {
        throw new Error(data.error);
      }
    });
    if (!finished) throw new Error("the reply stream ended early");
  } catch (e) {
    reply.classList.add("error");
    body.textContent = body.textContent ? body.textContent + "\n[" + e.message + "]" : e.message;
    $("chat-status").textContent = "";
  } finally {
    reply.classList.remove("streaming");
    sending = false;
    $("send").disabled = false;
  }
}
$("send-form").addEventListener("submit", (ev) => { ev.preventDefault(); send(); });
$("message").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); send(); }
});
$("clear").addEventListener("click", async () => {
  await apiJSON("/api/clear", { body: {} });
  $("messages").replaceChildren();
  $("chat-status").textContent = "Conversation cleared.";
});

// ---- training ----
let liveTimer = null;

async function refreshRuns() {
  try {
    const data = await apiJSON("/api/runs");
    const sel = $("run");
    const prev = sel.value;
    sel.replaceChildren(...data.runs.map((r) => new Option(r, r)));
    if (data.runs.includes(prev)) sel.value = prev;
    $("no-runs").hidden = data.runs.length > 0;
    await refreshMetrics();
  } catch (e) {
    $("training-status").textContent = e.message;
  }
}

async function refreshMetrics() {
  const run = $("run").value;
  if (!run) { plot($("loss-plot"), []); plot($("lr-plot"), []); return; }
  const m = await apiJSON("/api/metrics?run=" + encodeURIComponent(run));
  plot($("loss-plot"), [
    { points: m.loss, color: "#1f77b4" },
    { points: m.val_loss, color: "#ff7f0e", dots: true },
  ]);
  plot($("lr-plot"), [{ points: m.lr, color: "#2ca02c" }]);
  const last = m.loss[m.loss.length - 1];
  const lastVal = m.val_loss[m.val_loss.length - 1];
  $("training-status").textContent =
    (last ? `step ${last[0]}: loss ${last[1].toFixed(4)}` : "no steps yet") +
    (lastVal ? `, val loss ${lastVal[1].toFixed(4)} at step ${lastVal[0]}` : "");
}

$("run").addEventListener("change", () => refreshMetrics().catch((e) => { $("training-status").textContent = e.message; }));
function setLive() {
  clearInterval(liveTimer);
  liveTimer = null;
  if ($("live").checked) {
    liveTimer = setInterval(() => {
      if (!$("training-panel").hidden) refreshMetrics().catch(() => {});
    }, 5000);
  }
}
$("live").addEventListener("change", setLive);

function fmt(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-2 ? v.toExponential(1) : +v.toPrecision(3) + "";
}

// plot draws line series of [x, y] points with axes on a canvas.
function plot(canvas, series) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  const L = 60, R = 15, T = 10, B = 30;
  ctx.clearRect(0, 0, W, H);
  const pts = series.flatMap((s) => s.points);
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = "#6b7583";
  if (pts.length === 0) { ctx.fillText("no data", W / 2 - 20, H / 2); return; }
  let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const Y = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  ctx.strokeStyle = "#d5dae1";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const yv = y0 + ((y1 - y0) * i) / 4, y = Y(yv);
    ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(W - R, y); ctx.stroke();
    ctx.fillText(fmt(yv), 4, y + 4);
    const xv = x0 + ((x1 - x0) * i) / 4;
    ctx.fillText(String(Math.round(xv)), X(xv) - 10, H - 10);
  }
  for (const s of series) {
    ctx.strokeStyle = ctx.fillStyle = s.color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    s.points.forEach((p, i) => (i ? ctx.lineTo(X(p[0]), Y(p[1])) : ctx.moveTo(X(p[0]), Y(p[1]))));
    ctx.stroke();
    if (s.dots) for (const p of s.points) { ctx.beginPath(); ctx.arc(X(p[0]), Y(p[1]), 3, 0, 2 * Math.PI); ctx.fill(); }
  }
}

// ---- start ----
async function init() {
  await loadModels();
  await loadHistory();
  setLive();
}

(async () => {
  try {
    const st = await apiJSON("/api/auth");
    if (st.required && !st.ok) { showLogin(); return; }
    $("logout").hidden = !st.required;
    await init();
  } catch (e) {
    $("chat-status").textContent = e.message;
  }
})();
