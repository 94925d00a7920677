// The daemon's bearer token, when it has one. Asked for once, in a small form, the
// first time the daemon says a call is unauthenticated, and kept for this tab only
// (sessionStorage), so that it does not outlive the browser session.
import { fill, h } from "./dom";

const STORAGE_KEY = "streamd.token";

function storage(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    // Storage can be disabled; the token then lasts as long as the page.
    return null;
  }
}

let inMemory: string | null = null;

export function currentToken(): string | null {
  return storage()?.getItem(STORAGE_KEY) ?? inMemory;
}

function keepToken(token: string | null): void {
  inMemory = token;
  const store = storage();
  if (!store) return;
  if (token === null) store.removeItem(STORAGE_KEY);
  else store.setItem(STORAGE_KEY, token);
}

let slot: HTMLElement | null = null;
let pending: Promise<void> | null = null;

/** Where the form appears. */
export function mountTokenForm(container: HTMLElement): void {
  slot = container;
}

/**
 * Shows the form (one form, however many calls were refused at once) and resolves
 * when a token has been entered. `refusal` is the daemon's reason.
 */
export function askForToken(refusal: string): Promise<void> {
  pending ??= showForm(refusal).finally(() => {
    pending = null;
  });
  return pending;
}

function showForm(refusal: string): Promise<void> {
  const refused = currentToken() !== null;
  // A token the daemon refused is no use for the next call either.
  keepToken(null);
  const target = slot ?? document.body;
  return new Promise((resolve) => {
    const input = h("input", {
      id: "token-input",
      type: "password",
      name: "token",
      autocomplete: "off",
      spellcheck: "false",
      required: true,
    });
    const form = h(
      "form",
      { class: "token-form", "data-token": "", "aria-labelledby": "token-heading" },
      h("h2", { id: "token-heading" }, "This daemon needs its token"),
      h("p", {}, refused ? "The token was refused: " : "The daemon refused the request: ", refusal),
      h("label", { for: "token-input" }, "Token"),
      h("div", { class: "token-row" }, input, h("button", { type: "submit" }, "Use token")),
      h("p", { class: "hint" }, "Kept in this tab only, until it is closed."),
    );
    form.addEventListener("submit", (event) => {
      // The page's CSP forbids form submissions anyway; the token never leaves in a URL.
      event.preventDefault();
      const token = input.value.trim();
      if (token === "") return;
      keepToken(token);
      form.remove();
      resolve();
    });
    fill(target, form);
    input.focus();
  });
}
