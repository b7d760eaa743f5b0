// The history page: statuses change live through the feed socket (/ws/predictions/).
//
// A status for a row on the page swaps in its badge (the feed carries it, rendered by the
// server); a finished run's row is fetched again from the server (the same template fragment
// as the page) for its thumbnail and duration.
// On the first page a new run appears at the top if it matches the filters.

import { LiveSocket } from "./socket.js";

const config = JSON.parse(document.getElementById("history-config").textContent);
const announcer = document.createElement("p");
announcer.className = "visually-hidden";
announcer.setAttribute("role", "status");
document.querySelector("main").append(announcer);

function findRow(id) {
  return document.querySelector(`tr[data-prediction="${CSS.escape(id)}"]`);
}

async function fetchRow(id) {
  const response = await fetch(config.row_url + encodeURIComponent(id), { credentials: "same-origin" });
  if (response.status !== 200) return null;
  const template = document.createElement("template");
  template.innerHTML = (await response.text()).trim();
  return template.content.querySelector("tr");
}

/** The words on the status badge the server drew. */
function statusOf(message) {
  const template = document.createElement("template");
  template.innerHTML = message.fragments.badge;
  return template.content.textContent.trim();
}

function flash(row) {
  row.classList.remove("flash");
  void row.offsetWidth; // restart the animation
  row.classList.add("flash");
}

async function onStatus(message) {
  const row = findRow(message.id);
  if (row) {
    const template = document.createElement("template");
    template.innerHTML = message.fragments.badge;
    row.querySelector(".badge").replaceWith(template.content);
    flash(row);
    if (message.terminal) {
      const fresh = await fetchRow(message.id);
      if (fresh) {
        findRow(message.id)?.replaceWith(fresh);
        flash(fresh);
      }
    }
    announcer.textContent = `${message.model || "Prediction"} ${message.id.slice(0, 8)}: ${statusOf(message)}`;
    return;
  }
  if (!config.insert) return;
  const fresh = await fetchRow(message.id);
  if (!fresh || findRow(message.id)) return;
  const body = document.getElementById("history-rows");
  if (!body) {
    location.reload(); // the empty state has no table to add to
    return;
  }
  body.prepend(fresh);
  flash(fresh);
  announcer.textContent = `New prediction of ${message.model || "a model"}: ${statusOf(message)}`;
}

new LiveSocket(config.feed, {
  // Shown to tests and styles alike: "open", "reconnecting", …
  onState: (kind) => {
    document.body.dataset.feed = kind;
  },
  onMessage: (message) => {
    if (message.type === "status" && message.id) onStatus(message).catch(console.warn);
  },
}).connect();
