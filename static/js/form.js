// The model form: slider and number box kept in step, the API tab following the form,
// Ctrl/Cmd+Enter to run, and one submission at a time.

import { copyButton } from "./copy.js";

const form = document.getElementById("run-form");
const snippet = document.getElementById("api-snippet");

// ----------------------------------------------------------------------------- tabs

function wireTabs() {
  const list = document.querySelector("[data-tabs]");
  if (!list) return;
  const tabs = [...list.querySelectorAll('[role="tab"]')];
  const select = (tab, focus) => {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
    }
    if (focus) tab.focus();
    history.replaceState(null, "", tab.id === "tab-api" ? "#api" : location.pathname + location.search);
  };
  list.hidden = false;
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => select(tab, false));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) select(tabs[(index + step + tabs.length) % tabs.length], true);
      if (event.key === "Home") select(tabs[0], true);
      if (event.key === "End") select(tabs[tabs.length - 1], true);
    });
  });
  select(location.hash === "#api" ? tabs[1] : tabs[0], false);
}

// ----------------------------------------------------------------------------- inputs

function wireSliders() {
  document.querySelectorAll("[data-slider-for]").forEach((range) => {
    const box = document.getElementById(range.dataset.sliderFor);
    range.addEventListener("input", () => {
      box.value = range.value;
      box.dispatchEvent(new Event("change", { bubbles: true }));
    });
    box.addEventListener("input", () => {
      if (box.value !== "" && !Number.isNaN(Number(box.value))) range.value = box.value;
    });
  });
  document.querySelectorAll("[data-remove-kept]").forEach((button) => {
    button.addEventListener("click", () => {
      const kept = button.closest("[data-kept-file]");
      const picker = kept.parentElement.querySelector('input[type="file"]');
      kept.remove();
      picker?.focus();
      snippetSoon();
    });
  });
}

// ----------------------------------------------------------------------------- snippet

// The server draws the snippet (predictions.views.model_snippet); this asks it again as
// the form changes, a moment after the last keystroke.
let asked = 0; // the latest request's number: an answer to an older one arrives too late
let timer;

/** The form's fields for the snippet: a picked file by its name, never its bytes. */
function snippetBody() {
  const body = new URLSearchParams();
  for (const [name, value] of new FormData(form)) {
    if (value instanceof File) {
      if (value.name) body.append("file-name", `${name}:${value.name}`); // forms.FILE_NAMES
    } else if (value.startsWith("data:")) {
      // A file kept from before: the snippet shows only its type, so its bytes stay here.
      body.append(name, value.slice(0, value.indexOf(",") + 1));
    } else {
      body.append(name, value);
    }
  }
  return body;
}

async function refreshSnippet() {
  const ticket = ++asked;
  try {
    const response = await fetch(snippet.dataset.snippetUrl, { method: "POST", body: snippetBody() });
    if (!response.ok) return;
    const html = await response.text();
    if (ticket === asked) snippet.innerHTML = html;
  } catch {
    // Offline, or the server restarting: the last snippet stays.
  }
}

function snippetSoon() {
  if (!form || !snippet) return;
  clearTimeout(timer);
  timer = setTimeout(refreshSnippet, 250);
}

// ----------------------------------------------------------------------------- submit

function wireSubmit() {
  if (!form) return;
  const button = form.querySelector('button[type="submit"]');
  form.addEventListener("submit", (event) => {
    if (form.dataset.busy) {
      event.preventDefault(); // one run per click, however impatient the click
      return;
    }
    form.dataset.busy = "1";
    button.setAttribute("aria-disabled", "true");
    button.textContent = button.dataset.busyLabel;
  });
  // Back/forward cache: a page restored after submitting must be usable again.
  window.addEventListener("pageshow", () => {
    delete form.dataset.busy;
    button.removeAttribute("aria-disabled");
    button.textContent = "Run";
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && form.contains(document.activeElement)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}

wireTabs();
wireSliders();
wireSubmit();
if (form) {
  form.addEventListener("input", snippetSoon);
  form.addEventListener("change", snippetSoon);
  // Back/forward and reload refill the form after the server drew the snippet for it.
  const navigation = performance.getEntriesByType("navigation")[0];
  if (navigation?.type === "back_forward" || navigation?.type === "reload") snippetSoon();
}
document.querySelectorAll("[data-copy-target]").forEach((button) => {
  copyButton(button, () => document.getElementById(button.dataset.copyTarget).textContent);
});
document.getElementById("error-summary")?.focus();
