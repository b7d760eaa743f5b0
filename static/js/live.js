// The live prediction page: follows /ws/predictions/<id>/ and redraws as events arrive.
//
// The server renders the whole page first, so without JavaScript (or before the socket
// connects) it is complete as of page load. Events carry a sequence number: a duplicate
// is ignored, a gap asks the server for a fresh snapshot. Each (re)connection starts with
// a snapshot too, so a reload or a dropped connection always ends with the full output.

import { copyButton } from "./copy.js";
import { formatDuration, formatSize, setBadge, TERMINAL, visibleLogs } from "./format.js";
import { LiveSocket } from "./socket.js";

const config = JSON.parse(document.getElementById("prediction-config").textContent);
const $ = (selector) => document.querySelector(selector);

const state = {
  seq: config.seq,
  status: config.status,
  canceling: config.canceling,
  text: config.text || "",
  logs: null, // raw logs once a snapshot brought them; the page shows them processed
  createdAt: config.created_at,
  startedAt: config.started_at,
  completedAt: config.completed_at,
  metrics: {},
  awaitingSnapshot: true,
  buffered: [],
  finished: TERMINAL.has(config.status),
};

let socket = null;
let resyncTimer = null;
let clockTimer = null;
let streamNode = null;

// ----------------------------------------------------------------------------- drawing

function setStatus(status, canceling) {
  state.status = status;
  state.canceling = Boolean(canceling);
  setBadge($("#status .badge"), status, state.canceling);
  const cancel = $("#cancel-form button");
  if (cancel) {
    cancel.disabled = state.canceling || TERMINAL.has(status);
    cancel.textContent = state.canceling ? "Canceling…" : "Cancel";
  }
  if (TERMINAL.has(status)) $("#cancel-form")?.remove();
  drawTimeline();
}

function streamElement() {
  const stream = $("#stream");
  if (stream && (!streamNode || streamNode.parentNode !== stream)) {
    // One text node that grows: appending to it is cheap and screen readers hear the new words.
    streamNode = document.createTextNode(stream.textContent);
    stream.replaceChildren(streamNode);
  }
  return stream;
}

function setText(text) {
  state.text = text;
  const stream = streamElement();
  if (!stream) return;
  streamNode.data = text;
  stream.classList.toggle("is-empty", !text);
  $("#copy-output").hidden = !text;
}

function appendText(delta) {
  state.text += delta;
  const stream = streamElement();
  if (!stream) return;
  streamNode.appendData(delta);
  stream.classList.remove("is-empty");
  $("#copy-output").hidden = false;
}

let logsFrame = 0;
let logsDrawn = null; // the raw logs #logs shows; null: redraw them whole

function drawLogs({ replaced = false } = {}) {
  if (replaced) logsDrawn = null;
  // Many log events can land in one frame; draw once per frame.
  if (logsFrame) return;
  logsFrame = requestAnimationFrame(() => {
    logsFrame = 0;
    const pre = $("#logs");
    const following = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    const logs = state.logs || "";
    const added = logsDrawn === null ? null : logs.slice(logsDrawn.length);
    // New lines are appended (rewriting long logs every frame is quadratic). A carriage
    // return redraws a line (tqdm), and one just before a "\n" is a CRLF: redraw it all.
    if (added !== null && !added.includes("\r") && !logsDrawn.endsWith("\r")) {
      if (added) pre.append(added);
    } else {
      pre.textContent = visibleLogs(logs);
    }
    logsDrawn = logs;
    pre.classList.toggle("is-empty", !state.logs);
    if (following) pre.scrollTop = pre.scrollHeight;
    $("#logs-follow").hidden = !following || !state.logs || state.finished;
  });
}

function setProgress(progress) {
  // Snapshots carry the percentage alone; progress events carry current and total too.
  if (typeof progress === "number") progress = { percent: progress };
  const row = $("#progress-row");
  if (!progress || progress.percent == null) {
    row.hidden = true;
    return;
  }
  row.hidden = false;
  const percent = Math.max(0, Math.min(100, Number(progress.percent)));
  $("#progress").value = percent;
  $("#progress").textContent = `${percent}%`;
  const counts = progress.total ? ` · ${progress.current}/${progress.total}` : "";
  $("#progress-label").textContent = `${Math.round(percent)}%${counts}`;
}

// The types the server serves inline (views.INLINE_TYPES); the rest are downloads.
const INLINE_TYPES = new Set(config.inline_types);

function mediaKind(contentType) {
  const type = (contentType || "").split(";")[0].trim().toLowerCase();
  return INLINE_TYPES.has(type) ? type.split("/")[0] : "file";
}

/** One of our archived files, or (no `url`) a placeholder while its copy is being saved:
 * media only ever load from our own copies. */
function figure({ url, kind, name, size, index }) {
  if (!url) kind = "file";
  const fig = document.createElement("figure");
  fig.className = `media media-${kind}`;
  let media;
  if (kind === "image") {
    media = document.createElement("a");
    media.href = url;
    media.target = "_blank";
    media.rel = "noopener";
    const img = document.createElement("img");
    img.src = url;
    img.alt = `Output ${index + 1}`;
    media.append(img);
  } else if (kind === "audio" || kind === "video") {
    media = document.createElement(kind);
    media.controls = true;
    media.preload = "metadata";
    media.src = url;
  } else {
    media = document.createElement("div");
    media.className = "file-chip mono";
    media.textContent = name;
  }
  const caption = document.createElement("figcaption");
  const label = document.createElement("span");
  label.className = "mono small";
  label.textContent = name;
  caption.append(label, " ");
  if (size != null) {
    const sizeLabel = document.createElement("span");
    sizeLabel.className = "muted small";
    sizeLabel.textContent = formatSize(size);
    caption.append(sizeLabel, " ");
  }
  if (url) {
    const link = document.createElement("a");
    link.className = "btn btn-small";
    link.href = `${url}?download=1`;
    link.download = "";
    link.textContent = "Download";
    caption.append(link);
  } else {
    const note = document.createElement("span");
    note.className = "muted small";
    note.textContent = "saving a copy…";
    caption.append(note);
  }
  fig.append(media, caption);
  return fig;
}

let archivedCount = 0;

/** Our archived copies: these replace the placeholders shown while they were saved. */
function drawFiles(files) {
  if (!files || !files.length) return;
  archivedCount = files.length;
  const gallery = $("#gallery");
  gallery.replaceChildren(
    ...files.map((f, index) =>
      figure({
        url: f.url,
        kind: mediaKind(f.content_type),
        name: f.name || `output-${f.position}`,
        size: f.size,
        index,
      }),
    ),
  );
  gallery.hidden = false;
}

// Upstream URLs, or our archived copies (the runner rewrites the output to those).
const URL_LIKE = /^(https?:\/\/|data:|\/predictions\/[0-9a-f-]{36}\/files\/\d+\/$)/;

function urlsIn(value, found = []) {
  if (typeof value === "string" && URL_LIKE.test(value) && !value.startsWith("data:")) found.push(value);
  else if (Array.isArray(value)) value.forEach((v) => urlsIn(v, found));
  else if (value && typeof value === "object") Object.values(value).forEach((v) => urlsIn(v, found));
  return found;
}

/** A non-text output so far. Files not archived yet get a placeholder: showing them from
 * upstream would load remote media in the viewer's browser. */
function drawOutput(output) {
  if (output == null) return;
  if (typeof output === "string" || (Array.isArray(output) && output.every((o) => typeof o === "string"))) {
    const urls = urlsIn(output);
    if (!urls.length) {
      setText(Array.isArray(output) ? output.join("") : output);
      return;
    }
  }
  const urls = urlsIn(output);
  if (urls.length > archivedCount) {
    const gallery = $("#gallery");
    const extra = urls.slice(archivedCount).map((url, i) =>
      figure({ name: url.split("?")[0].split("/").pop(), index: archivedCount + i }),
    );
    gallery.querySelectorAll("figure.pending").forEach((f) => f.remove());
    extra.forEach((f) => f.classList.add("pending"));
    gallery.append(...extra);
    gallery.hidden = false;
  }
  if (!urls.length) {
    let pre = $("#structured-live");
    if (!pre) {
      pre = document.createElement("pre");
      pre.id = "structured-live";
      pre.className = "json";
      $("#output").append(pre);
    }
    pre.textContent = JSON.stringify(output, null, 2);
  }
}

function drawTimeline() {
  const now = Date.now();
  const t = (iso) => (iso ? Date.parse(iso) : null);
  const created = t(state.createdAt);
  const started = t(state.startedAt);
  const completed = t(state.completedAt);
  const reached = { queued: 0, starting: 1, processing: 2 }[state.status] ?? 3;
  const seconds = (from, to) => (from != null && to != null ? (to - from) / 1000 : null);
  const live = {
    queued: reached === 0 ? seconds(created, now) : null,
    starting: started ? seconds(created, started) : reached === 1 ? seconds(created, now) : null,
    processing: started ? seconds(started, completed ?? (reached === 2 ? now : null)) : null,
    done: completed ? seconds(created, completed) : null,
  };
  document.querySelectorAll("#timeline .step").forEach((li, index) => {
    const name = li.dataset.step;
    let stepState;
    if (name === "done") stepState = reached === 3 ? state.status : "pending";
    else if (index < reached) stepState = "done";
    else if (index === reached) stepState = "current";
    else stepState = "pending";
    if (reached === 3 && state.status !== "succeeded" && name !== "done" && index > 0 && live[name] == null) {
      stepState = "skipped";
    }
    li.className = `step step-${stepState}`;
    if (name === "done") {
      li.querySelector(".step-name").textContent =
        reached === 3 ? state.status[0].toUpperCase() + state.status.slice(1) : "Done";
    }
    const value = live[name];
    li.querySelector(".step-time").textContent = value == null ? "" : formatDuration(value);
  });
}

function drawMetrics() {
  const metrics = state.metrics || {};
  const predict = document.querySelector('[data-metric="predict_time"]');
  const total = document.querySelector('[data-metric="total_time"]');
  if (metrics.predict_time != null) predict.textContent = formatDuration(metrics.predict_time);
  const totalSeconds =
    metrics.total_time ??
    (state.completedAt ? (Date.parse(state.completedAt) - Date.parse(state.createdAt)) / 1000 : null);
  if (totalSeconds != null) total.textContent = formatDuration(totalSeconds);
}

// An unpinned official model learns its version from Replicate once created.
function drawVersion(version) {
  const fact = document.querySelector("[data-version]");
  if (!fact || !version || fact.title === version) return;
  fact.title = version;
  fact.textContent = version.slice(0, 12);
}

function showConnection(kind) {
  const badge = $("#connection");
  if (kind === "reconnecting" && !state.finished) {
    badge.hidden = false;
    badge.textContent = "Reconnecting…";
  } else {
    badge.hidden = true;
  }
}

// ----------------------------------------------------------------------------- events

function textOf(prediction) {
  if (prediction.text_output) return prediction.text_output;
  const output = prediction.output;
  if (typeof output === "string" && !URL_LIKE.test(output)) return output;
  if (Array.isArray(output) && output.length && output.every((o) => typeof o === "string" && !URL_LIKE.test(o))) {
    return output.join("");
  }
  return "";
}

function applySnapshot(prediction) {
  state.createdAt = prediction.created_at || state.createdAt;
  state.startedAt = prediction.started_at || null;
  state.completedAt = prediction.completed_at || null;
  state.metrics = prediction.metrics || {};
  state.logs = prediction.logs || "";
  setStatus(prediction.status, prediction.canceling);
  setText(textOf(prediction));
  drawLogs({ replaced: true });
  if (prediction.progress != null) setProgress(prediction.progress);
  drawFiles(prediction.files);
  if (!textOf(prediction)) drawOutput(prediction.output);
  drawMetrics();
  drawVersion(prediction.version);
  if (TERMINAL.has(prediction.status)) finish();
}

function apply(message) {
  switch (message.type) {
    case "status":
      if (message.status === "processing" && !state.startedAt) state.startedAt = new Date().toISOString();
      setStatus(message.status, message.canceling);
      if (TERMINAL.has(message.status) && !state.completedAt) state.completedAt = new Date().toISOString();
      break;
    case "output":
      if (typeof message.text === "string") appendText(message.text);
      else if ("output" in message) drawOutput(message.output);
      break;
    case "logs":
      state.logs = (state.logs ?? "") + message.text;
      drawLogs();
      break;
    case "progress":
      setProgress(message);
      break;
    case "files":
      drawFiles(message.files);
      break;
    case "done":
      applySnapshot(message.prediction);
      break;
  }
}

function askForSnapshot() {
  state.awaitingSnapshot = true;
  socket.send({ type: "resync", after: state.seq });
  clearTimeout(resyncTimer);
  // No snapshot in a while: start over with a new connection (which always sends one).
  resyncTimer = setTimeout(() => {
    if (state.awaitingSnapshot && !state.finished) socket.reconnectNow();
  }, 5000);
}

function onMessage(message) {
  if (message.type === "error") {
    console.warn("prediction socket:", message.message);
    return;
  }
  if (message.type === "snapshot" || (message.type === "done" && state.awaitingSnapshot)) {
    clearTimeout(resyncTimer);
    state.awaitingSnapshot = false;
    state.seq = message.seq ?? state.seq;
    applySnapshot(message.prediction);
    // Events that overtook the snapshot: keep the ones after it, in order.
    const later = state.buffered.filter((m) => m.seq > state.seq).sort((a, b) => a.seq - b.seq);
    state.buffered = [];
    later.forEach(onMessage);
    return;
  }
  if (typeof message.seq !== "number") return;
  if (state.awaitingSnapshot) {
    state.buffered.push(message);
    return;
  }
  if (message.seq <= state.seq) return; // already seen (a resync overlapped)
  if (message.seq !== state.seq + 1) {
    state.buffered.push(message);
    askForSnapshot();
    return;
  }
  state.seq = message.seq;
  apply(message);
}

async function finish() {
  if (state.finished && !socket) return;
  state.finished = true;
  clearInterval(clockTimer);
  clearTimeout(resyncTimer);
  socket?.close();
  socket = null;
  showConnection("closed");
  document.title = document.title.replace(/^Running · /, "");
  $("#logs-follow").hidden = true;
  if (state.status === "succeeded") $("#progress-row").hidden = true;
  $("#run-again")?.removeAttribute("hidden");
  drawTimeline();
  drawMetrics();
  // The server renders the final output: Markdown, sanitised; our archived files.
  try {
    const response = await fetch(config.fragment, { credentials: "same-origin" });
    if (!response.ok) return;
    const template = document.createElement("template");
    template.innerHTML = await response.text();
    const fresh = template.content.querySelector("#output");
    if (fresh) $("#output").replaceWith(fresh);
    const raw = $("#raw-text");
    $("#copy-output").hidden = !raw;
  } catch (error) {
    console.warn("could not load the final output", error);
  }
}

// ----------------------------------------------------------------------------- actions

function wireCancel() {
  const form = $("#cancel-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    button.textContent = "Canceling…";
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error(`cancel answered ${response.status}`);
      if (!TERMINAL.has(state.status)) setStatus(state.status, true);
    } catch {
      form.submit(); // let the server answer with a page
    }
  });
}

function showActionError(text) {
  let box = $("#action-error");
  if (!box) {
    box = document.createElement("p");
    box.id = "action-error";
    box.className = "alert alert-error";
    box.setAttribute("role", "alert");
    $(".detail-head").after(box);
  }
  box.textContent = text;
}

function wireRunAgain() {
  const button = $("#run-again");
  if (!button) return;
  if (state.finished) button.hidden = false;
  button.addEventListener("click", () => {
    button.disabled = true;
    button.textContent = "Starting…";
    const restore = () => {
      button.disabled = false;
      button.textContent = "Run again";
    };
    const fallback = setTimeout(() => location.assign(config.rerun), 15000);
    let sent = false;
    const feed = new LiveSocket(config.feed, {
      // Once only: the socket reconnects after a drop, and each submit starts a run.
      onOpen: () => {
        if (!sent) sent = feed.send({ type: "submit", model: config.model, input: config.input, parent: config.id });
      },
      onState: (kind) => {
        if (!sent || kind !== "reconnecting") return;
        // Dropped before the answer: the run may have started, so do not send it again.
        clearTimeout(fallback);
        feed.close();
        showActionError("The connection dropped before the console answered. See History before running it again.");
        restore();
      },
      onMessage: (message) => {
        if (message.type === "submitted") {
          clearTimeout(fallback);
          feed.close();
          location.assign(message.url || `/predictions/${message.id}/`);
        } else if (message.type === "error") {
          clearTimeout(fallback);
          feed.close();
          const fields = Object.entries(message.errors || {}).map(([k, v]) => `${k}: ${[].concat(v).join(" ")}`);
          showActionError([message.message, ...fields].filter(Boolean).join(" — "));
          restore();
        }
      },
    }).connect();
  });
}

function wireCopy() {
  copyButton($("#copy-output"), () => {
    const raw = $("#raw-text");
    return raw ? JSON.parse(raw.textContent) : state.text;
  });
  $("#copy-output").hidden = !($("#raw-text") || state.text);
  document.querySelectorAll("[data-copy-target]").forEach((button) => {
    copyButton(button, () => document.getElementById(button.dataset.copyTarget).textContent);
  });
}

// ----------------------------------------------------------------------------- start

wireCopy();
wireCancel();
wireRunAgain();
const logs = $("#logs");
logs.scrollTop = logs.scrollHeight;
if (!state.finished) {
  streamElement();
  socket = new LiveSocket(config.socket, {
    onMessage,
    onState: (kind) => {
      showConnection(kind);
      // A new connection starts with a snapshot; until then, hold events back.
      if (kind === "connecting" || kind === "reconnecting") state.awaitingSnapshot = true;
    },
  }).connect();
  drawTimeline();
  // Tenths of a second show under 10 s: tick often enough for them to move.
  clockTimer = setInterval(() => {
    if (document.visibilityState === "visible") drawTimeline();
  }, 200);
}
