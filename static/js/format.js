// What the live page computes between the server's redraws: a running clock, and logs that
// keep a terminal's carriage returns. Everything else on a page is drawn by the server.

/** 2.3 s, 45 s, 3 min 5 s, 1 h 2 min: the same words as the `duration` template filter. */
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

/** Logs as a terminal shows them: a carriage return redraws its line (tqdm bars). */
export function visibleLogs(text) {
  return text
    .replace(/\r\n/g, "\n")
    .split("\n")
    .map((line) => (line.includes("\r") ? line.slice(line.lastIndexOf("\r") + 1) : line))
    .join("\n");
}
