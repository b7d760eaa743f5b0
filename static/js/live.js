// The live prediction page: follows /ws/predictions/<id>/ and keeps the page as the server draws it.
//
// The server renders the page, and every change to it: each message carries the fragments it
// changed (status, timeline, output, …), drawn by the same partials as the page, and streamed
// text and logs come as deltas to append. So this file only swaps fragments in, appends deltas
// and ticks the running clock. Events carry a sequence number: a duplicate is ignored, a gap
// asks the server for a fresh snapshot. Each (re)connection starts with a snapshot too, so a
// reload or a dropped connection always ends with the full output.

import { copyButton } from "./copy.js";
import { formatDuration, visibleLogs } from "./format.js";
import { wireRunAgain } from "./run-again.js";
import { LiveSocket } from "./socket.js";

const config = JSON.parse(document.getElementById("prediction-config").textContent);
const $ = (selector) => document.querySelector(selector);

const state = {
  seq: config.seq,
  finished: config.finished,
  logs: null, // the raw logs, once a snapshot brought them: a "\r" in a delta redraws a line
  awaitingSnapshot: true,
  buffered: [],
};

let socket = null;
let resyncTimer = null;
let clockTimer = null;
let streamNode = null;

// ----------------------------------------------------------------------------- drawing

function isFollowing(pre) {
  return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
}

/** Put the server's fragments in place of the elements with their ids. */
function replaceFragments(fragments = {}) {
  const following = isFollowing($("#logs"));
  for (const [id, html] of Object.entries(fragments)) {
    const old = document.getElementById(id);
    if (!old) continue;
    const template = document.createElement("template");
    template.innerHTML = html;
    old.replaceWith(template.content);
  }
  if ("logs" in fragments && following) $("#logs").scrollTop = $("#logs").scrollHeight;
  if ("output" in fragments) $("#copy-output").hidden = !($("#raw-text") || $("#stream")?.textContent);
  tick();
}

function appendText(delta) {
  const stream = $("#stream");
  if (!stream) return;
  if (!streamNode || streamNode.parentNode !== stream) {
    // One text node that grows: appending to it is cheap and screen readers hear the new words.
    streamNode = document.createTextNode(stream.textContent);
    stream.replaceChildren(streamNode);
  }
  streamNode.appendData(delta);
  stream.classList.remove("is-empty");
  $("#copy-output").hidden = false;
}

function appendLogs(delta) {
  const pre = $("#logs");
  const following = isFollowing(pre);
  const before = state.logs ?? pre.textContent;
  state.logs = before + delta;
  // New lines are appended (rewriting long logs each time is quadratic). A carriage return
  // redraws its line (tqdm), and one just before a "\n" is a CRLF: then redraw them all.
  if (!delta.includes("\r") && !before.endsWith("\r")) pre.append(delta);
  else pre.textContent = visibleLogs(state.logs);
  pre.classList.toggle("is-empty", !state.logs);
  if (following) pre.scrollTop = pre.scrollHeight;
  $("#logs-follow").hidden = !following || state.finished;
}

/** The running step's clock, between the server's redraws of the timeline. */
function tick() {
  const now = Date.now();
  document.querySelectorAll("#timeline [data-since]").forEach((clock) => {
    clock.textContent = formatDuration((now - Date.parse(clock.dataset.since)) / 1000);
  });
}

function showConnection(kind) {
  const badge = $("#connection");
  badge.hidden = !(kind === "reconnecting" && !state.finished);
  badge.textContent = badge.hidden ? "" : "Reconnecting…";
}

// ----------------------------------------------------------------------------- events

/** A snapshot, or `done`: the whole prediction, as of its seq. */
function applyWhole(message) {
  state.logs = message.prediction.logs || "";
  replaceFragments(message.fragments);
  if (message.finished || message.type === "done") finish();
}

function apply(message) {
  if (message.type === "done") return applyWhole(message);
  if (message.type === "output" && typeof message.text === "string") appendText(message.text);
  if (message.type === "logs") appendLogs(message.text);
  replaceFragments(message.fragments);
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
    applyWhole(message);
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

function finish() {
  if (state.finished && !socket) return;
  state.finished = true;
  clearInterval(clockTimer);
  clearTimeout(resyncTimer);
  socket?.close();
  socket = null;
  showConnection("closed");
  document.title = document.title.replace(/^Running · /, "");
  $("#logs-follow").hidden = true;
  $("#cancel-form")?.remove();
  $("#run-again")?.removeAttribute("hidden");
}

// ----------------------------------------------------------------------------- actions

function wireCancel() {
  const form = $("#cancel-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("#cancel-button");
    button.disabled = true;
    button.textContent = "Canceling…"; // until the socket brings the server's own
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error(`cancel answered ${response.status}`);
    } catch {
      form.submit(); // let the server answer with a page
    }
  });
}

function wireCopy() {
  copyButton($("#copy-output"), () => {
    const raw = $("#raw-text");
    return raw ? JSON.parse(raw.textContent) : ($("#stream")?.textContent ?? "");
  });
  $("#copy-output").hidden = !($("#raw-text") || $("#stream")?.textContent);
  document.querySelectorAll("[data-copy-target]").forEach((button) => {
    copyButton(button, () => document.getElementById(button.dataset.copyTarget).textContent);
  });
}

// ----------------------------------------------------------------------------- start

wireCopy();
wireCancel();
wireRunAgain($("#run-again"), config, state.finished);
const logs = $("#logs");
logs.scrollTop = logs.scrollHeight;
if (!state.finished) {
  socket = new LiveSocket(config.socket, {
    onMessage,
    onState: (kind) => {
      showConnection(kind);
      // A new connection starts with a snapshot; until then, hold events back.
      if (kind === "connecting" || kind === "reconnecting") state.awaitingSnapshot = true;
    },
  }).connect();
  // Tenths of a second show under 10 s: tick often enough for them to move.
  clockTimer = setInterval(() => {
    if (document.visibilityState === "visible") tick();
  }, 200);
}
