// Small formatting helpers shared by the pages; they mirror predictions/templatetags/console.py.

export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

const LABELS = {
  queued: "Queued",
  starting: "Starting",
  processing: "Processing",
  succeeded: "Succeeded",
  failed: "Failed",
  canceled: "Canceled",
};

export function statusLabel(status) {
  return LABELS[status] || status;
}

/** 2.3 s, 45 s, 3 min 5 s, 1 h 2 min — like the `duration` template filter. */
export function formatDuration(seconds) {
  if (seconds == null || Number.isNaN(seconds)) return "—";
  const value = Math.max(0, seconds);
  if (value < 10) return `${value.toFixed(1)} s`;
  if (value < 60) return `${Math.round(value)} s`;
  let minutes = Math.floor(Math.round(value) / 60);
  const rest = Math.round(value) % 60;
  if (minutes < 60) return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  minutes %= 60;
  return `${hours} h ${minutes} min`;
}

export function formatSize(bytes) {
  if (bytes == null) return "";
  let value = bytes;
  for (const unit of ["bytes", "KB", "MB", "GB"]) {
    if (value < 1024 || unit === "GB") {
      return unit === "bytes" ? `${value.toFixed(0)} ${unit}` : `${value.toFixed(1)} ${unit}`;
    }
    value /= 1024;
  }
  return "";
}

/** Redraw a status badge (the same markup as includes/badge.html). */
export function setBadge(badge, status, canceling) {
  if (!badge) return;
  const shown = canceling && !TERMINAL.has(status) ? "canceling" : status;
  badge.dataset.status = shown;
  badge.textContent = shown === "canceling" ? "Canceling…" : statusLabel(status);
}

/** Logs as a terminal shows them: a carriage return redraws its line (tqdm bars). */
export function visibleLogs(text) {
  return text
    .replace(/\r\n/g, "\n")
    .split("\n")
    .map((line) => (line.includes("\r") ? line.slice(line.lastIndexOf("\r") + 1) : line))
    .join("\n");
}
