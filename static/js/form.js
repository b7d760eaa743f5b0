// The model form: slider and number box kept in step, the API tab following the form,
// Ctrl/Cmd+Enter to run, and one submission at a time.

import { copyButton } from "./copy.js";

const form = document.getElementById("run-form");
const config = JSON.parse(document.getElementById("snippet-config").textContent);
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
      update();
    });
  });
}

// ----------------------------------------------------------------------------- snippet

function fileName(file) {
  return `open(${JSON.stringify(file.name)}, "rb")`;
}

/** A field's value as a program would send it; undefined when it would be left out. */
function valueOf(wrapper) {
  const name = wrapper.dataset.field;
  const kind = wrapper.dataset.kind;
  const named = [...wrapper.querySelectorAll(`[name="${CSS.escape(name)}"]`)];
  const text = (el) => (el ? el.value.replace(/\r\n/g, "\n") : "");
  switch (kind) {
    case "boolean":
      return named.find((el) => el.type === "checkbox").checked;
    case "integer":
    case "number": {
      const raw = text(named.find((el) => el.type === "number")).trim();
      if (raw === "" || Number.isNaN(Number(raw))) return undefined;
      return Number(raw);
    }
    case "choice": {
      const raw = text(named[0]);
      if (raw === "") return undefined;
      return typeof config.defaults[name] === "number" ? Number(raw) : raw;
    }
    case "file": {
      const picker = named.find((el) => el.type === "file");
      if (picker?.files.length) return { python: fileName(picker.files[0]) };
      const kept = named.find((el) => el.type === "hidden");
      if (kept?.value) return { python: `open("${kept.value.slice(5).split("/")[0] || "input"}-file", "rb")` };
      const url = text(named.find((el) => el.type === "text")).trim();
      return url || undefined;
    }
    case "list":
    case "file_list": {
      const lines = text(named.find((el) => el.tagName === "TEXTAREA"))
        .split("\n")
        .map((line) => line.trim())
        .filter(Boolean);
      const picker = named.find((el) => el.type === "file");
      const files = picker ? [...picker.files].map((f) => ({ python: fileName(f) })) : [];
      const items = [...lines.map((l) => (wrapper.dataset.itemKind === "integer" || wrapper.dataset.itemKind === "number") && !Number.isNaN(Number(l)) ? Number(l) : l), ...files];
      return items.length ? items : undefined;
    }
    case "json": {
      const raw = text(named[0]).trim();
      if (!raw) return undefined;
      try {
        return JSON.parse(raw);
      } catch {
        return raw;
      }
    }
    default: {
      const raw = text(named[0]);
      return raw === "" ? undefined : raw;
    }
  }
}

function isDefault(name, value) {
  if (!(name in config.defaults)) return false;
  return JSON.stringify(value) === JSON.stringify(config.defaults[name]);
}

/** Python source for a value; mirrors predictions.schema.python_literal. */
function python(value, indent) {
  const pad = " ".repeat(indent);
  const inner = " ".repeat(indent + 4);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "object" && "python" in value) return value.python;
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") return String(value);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => inner + python(v, indent + 4)).join(",\n")},\n${pad}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${python(v, indent + 4)}`).join(",\n")},\n${pad}}`;
}

function update() {
  if (!form || !snippet) return;
  const input = {};
  form.querySelectorAll("[data-field]").forEach((wrapper) => {
    const value = valueOf(wrapper);
    if (value !== undefined && !isDefault(wrapper.dataset.field, value)) input[wrapper.dataset.field] = value;
  });
  snippet.textContent =
    "import asyncio\n\n" +
    "import replicate  # reads REPLICATE_API_TOKEN from the environment\n\n\n" +
    "async def main() -> None:\n" +
    "    output = await replicate.async_run(\n" +
    `        ${JSON.stringify(config.ref)},\n` +
    `        input=${python(input, 8)},\n` +
    "    )\n" +
    "    print(output)\n\n\n" +
    "asyncio.run(main())\n";
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
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  update();
}
document.querySelectorAll("[data-copy-target]").forEach((button) => {
  copyButton(button, () => document.getElementById(button.dataset.copyTarget).textContent);
});
document.getElementById("error-summary")?.focus();
