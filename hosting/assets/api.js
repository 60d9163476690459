// What every page shares: the API key (kept in this tab only), calls to the API, and DOM
// building that only ever sets text, so nothing the API returns can become markup.

const KEY = "imgsvc.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

// Same-origin calls only: the pages are served beside the API (the gateway, or Hosting's
// rewrites in production). The key goes as a Bearer header, never in a URL or a cookie.
export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers, credentials: "omit", cache: "no-store" });
  } catch (error) {
    return { status: 0, body: null, error: String(error) };
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return { status: response.status, body, headers: response.headers };
}

export function errorText(answer) {
  if (answer.status === 0) return `the service did not answer (${answer.error})`;
  const message = answer.body && answer.body.error && answer.body.error.message;
  return message ? `${message} (HTTP ${answer.status})` : `HTTP ${answer.status}`;
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function bytes(count) {
  if (count === null || count === undefined) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let value = count;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

// The key box: shown on every page; a key typed here stays in this tab (sessionStorage) and
// is sent with every call the page makes.
export function mountKeyBox(container, onChange) {
  const input = el("input", {
    type: "password",
    id: "api-key",
    name: "api-key",
    autocomplete: "off",
    placeholder: "isk_…",
    "aria-label": "API key",
  });
  input.value = apiKey();
  const state = el("span", { class: "key-state", id: "key-state" });
  const show = () => {
    state.textContent = apiKey() ? "a key is set for this tab" : "no key (an open local stack needs none)";
  };
  const form = el(
    "form",
    {
      class: "key-form",
      id: "key-form",
      onsubmit: (event) => {
        event.preventDefault();
        setApiKey(input.value.trim());
        show();
        onChange();
      },
    },
    el("label", { for: "api-key" }, "API key"),
    input,
    el("button", { type: "submit" }, "Use key"),
    state,
  );
  show();
  container.replaceChildren(form);
  return { open: () => container.closest("details")?.setAttribute("open", "") };
}
