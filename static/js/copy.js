// Copy text to the clipboard, with a fallback for plain-http hosts (no Clipboard API there).

export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

/** Wire a button: copy what `getText()` returns and say so on the button for a moment. */
export function copyButton(button, getText) {
  if (!button) return;
  // Buttons start hidden: without JavaScript they could not copy anything.
  if (button.dataset.copyTarget) button.hidden = false;
  const label = button.textContent;
  button.addEventListener("click", async () => {
    try {
      await copyText(getText());
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => {
      button.textContent = label;
    }, 1600);
  });
}
