// "Run again" on a finished prediction's page: its input again, as a new run (a re-run of it).

import { LiveSocket } from "./socket.js";

function showActionError(text) {
  let box = document.getElementById("action-error");
  if (!box) {
    box = document.createElement("p");
    box.id = "action-error";
    box.className = "alert alert-error";
    box.setAttribute("role", "alert");
    document.querySelector(".detail-head").after(box);
  }
  box.textContent = text;
}

/** "Run again": the same input, submitted over the feed socket; the new run's page opens. */
export function wireRunAgain(button, config, finished) {
  if (!button) return;
  if (finished) button.hidden = false;
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
        if (!sent) sent = feed.send(config.submit);
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
        if (message.type !== "submitted" && message.type !== "error") return;
        clearTimeout(fallback);
        feed.close();
        if (message.type === "submitted") {
          location.assign(message.url);
          return;
        }
        const fields = Object.entries(message.errors || {}).map(([k, v]) => `${k}: ${[].concat(v).join(" ")}`);
        showActionError([message.message, ...fields].filter(Boolean).join(" — "));
        restore();
      },
    }).connect();
  });
}
