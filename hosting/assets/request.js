// The request page: progress while the request runs, the totals, the output images with what
// was done to each, the output CSV and the webhook's attempts. It reads only the status API.
//
// The input URLs are strangers' URLs: they are shown as text and never given to the browser
// to load (no <img>, no link). Only output URLs, in the service's own bucket, are loaded.
import { api, bytes, el, errorText, mountKeyBox } from "/assets/api.js";

const PAGE_SIZE = 48;
const requestId = decodeURIComponent(window.location.pathname.split("/").filter(Boolean)[1] || "");
const view = { state: "", tokens: [null], page: 0, timer: null, latest: null };

document.getElementById("request-id").textContent = requestId;
document.title = `imgsvc · request ${requestId}`;
const keyBox = mountKeyBox(document.getElementById("key-box"), () => refresh());

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function showProblem(message) {
  const problem = document.getElementById("problem");
  problem.replaceChildren(message ? el("div", { class: "message error", role: "alert" }, message) : "");
}

function statusUrl() {
  const query = new URLSearchParams({ details: "1", page_size: String(PAGE_SIZE) });
  if (view.state) query.set("state", view.state);
  const token = view.tokens[view.page];
  if (token) query.set("page_token", token);
  return `/status/${encodeURIComponent(requestId)}?${query}`;
}

async function refresh() {
  clearTimeout(view.timer);
  const answer = await api(statusUrl());
  if (answer.status !== 200) {
    document.getElementById("overview").hidden = true;
    if (answer.status === 401) keyBox.open();
    showProblem(
      answer.status === 404
        ? `No request ${requestId} is visible with this key.`
        : answer.status === 401
          ? "This service needs an API key: type yours above."
          : errorText(answer),
    );
    return;
  }
  showProblem("");
  view.latest = answer.body;
  render(answer.body);
  const running = answer.body.status === "in progress";
  const webhookPending = answer.body.webhook && answer.body.webhook.state === "pending";
  if (running || webhookPending) view.timer = setTimeout(refresh, running ? 1000 : 3000);
}

function render(status) {
  document.getElementById("overview").hidden = false;
  const badge = document.getElementById("status");
  badge.textContent = status.status;
  badge.className = `badge ${status.status.replace(" ", "-")}`;
  const { total, done, failed, pending } = status.progress;
  const progress = document.getElementById("progress");
  progress.max = Math.max(total, 1);
  progress.value = done + failed;
  const percent = total ? Math.floor(((done + failed) * 100) / total) : 100;
  progress.dataset.percent = String(percent);
  text("progress-text", `${percent}% · ${done + failed} of ${total} images settled: ${done} done, ${failed} failed, ${pending} pending`);
  text("total-images", total);
  text("total-done", done);
  text("total-failed", failed);
  text("total-pending", pending);
  const before = status.bytes ? status.bytes.source : null;
  const after = status.bytes ? status.bytes.output : null;
  text("bytes-before", bytes(before));
  text("bytes-after", bytes(after));
  text(
    "bytes-saved",
    before ? `${bytes(status.bytes.saved)} (${Math.round((status.bytes.saved * 100) / before)}%)` : "–",
  );
  const csv = document.getElementById("csv");
  csv.replaceChildren(
    status.csv_url
      ? el("a", { id: "csv-link", href: status.csv_url, rel: "noreferrer" }, "Download the output CSV")
      : status.error
        ? el("span", { class: "message error" }, `The request failed: ${status.error.message || status.error.code}`)
        : el("span", { class: "muted" }, "The output CSV is written when every image has settled."),
  );
  renderImages(status);
  renderWebhook(status);
}

function imageCard(image) {
  const title = `Row ${image.row} · #${image.position} · ${image.serial_number}`;
  let thumb;
  if (image.state === "done" && image.output_url) {
    thumb = el(
      "div",
      { class: "thumb" },
      el("img", { src: image.output_url, alt: title, loading: "lazy", referrerpolicy: "no-referrer" }),
    );
  } else {
    thumb = el("div", { class: `thumb ${image.state}` }, image.state);
  }
  const facts = [];
  if (image.state === "done") {
    facts.push(
      el("span", { class: "quality" }, `${image.source_format} q${image.source_quality} → ${image.output_format} q${image.output_quality}`),
      el("span", { class: "size" }, `${bytes(image.source_bytes)} → ${bytes(image.output_bytes)}`),
      el("span", { class: "dimensions" }, `${image.width} × ${image.height} px`),
    );
  }
  if (image.error) {
    facts.push(el("span", { class: "error" }, `${image.error.code}: ${image.error.message || ""}`));
  }
  if (image.state === "pending" && image.attempts) facts.push(el("span", { class: "muted" }, `${image.attempts} attempt(s) so far`));
  return el(
    "article",
    { class: `card ${image.state}`, dataset: { id: image.id, state: image.state } },
    thumb,
    el(
      "div",
      { class: "meta" },
      el("strong", {}, title),
      facts,
      // Text only: the browser must never fetch a stranger's URL.
      el("span", { class: "source", title: "input URL (not loaded)" }, image.input_url),
    ),
  );
}

function renderImages(status) {
  const grid = document.getElementById("images");
  grid.replaceChildren(
    ...(status.images.length ? status.images.map(imageCard) : [el("p", { class: "muted" }, "No images here.")]),
  );
  view.tokens[view.page + 1] = status.next_page_token;
  document.getElementById("previous").disabled = view.page === 0;
  document.getElementById("next").disabled = !status.next_page_token;
  text("page", `page ${view.page + 1}`);
}

function attemptRows(series, attempts) {
  return attempts.map((attempt) =>
    el(
      "tr",
      {},
      el("td", {}, series),
      el("td", {}, attempt.number),
      el("td", {}, attempt.started_at),
      el("td", {}, attempt.status_code ?? attempt.error ?? ""),
      el("td", {}, attempt.succeeded ? "delivered" : "failed"),
    ),
  );
}

function renderWebhook(status) {
  const box = document.getElementById("webhook");
  const hook = status.webhook;
  if (!hook) {
    box.replaceChildren(
      el("p", { class: "muted" }, status.status === "in progress" ? "Sent when the request ends, if it has a webhook." : "This request has no webhook."),
    );
    return;
  }
  const series = hook.earlier_series.length + 1;
  const rows = [
    ...hook.earlier_series.flatMap((earlier, index) => attemptRows(index + 1, earlier.attempts)),
    ...attemptRows(series, hook.attempts),
  ];
  const resend = el(
    "button",
    {
      type: "button",
      id: "resend",
      class: "quiet",
      disabled: status.status === "in progress" || hook.state === "pending",
      onclick: resendWebhook,
    },
    "Send again",
  );
  box.replaceChildren(
    el("p", {}, el("strong", {}, hook.state.replace("_", " ")), " · ", el("code", {}, hook.message_id), " → ", el("span", { class: "source" }, hook.url)),
    hook.next_attempt_at ? el("p", { class: "muted" }, `next attempt at ${hook.next_attempt_at}`) : "",
    rows.length
      ? el(
          "table",
          { id: "attempts" },
          el("thead", {}, el("tr", {}, el("th", {}, "Series"), el("th", {}, "Attempt"), el("th", {}, "Started"), el("th", {}, "Answer"), el("th", {}, "Outcome"))),
          el("tbody", {}, rows),
        )
      : el("p", { class: "muted" }, "No attempt yet."),
    el("div", { class: "row" }, resend, el("span", { id: "resend-state", class: "muted" })),
  );
}

async function resendWebhook() {
  const answer = await api(`/requests/${encodeURIComponent(requestId)}/webhook/resend`, { method: "POST" });
  text("resend-state", answer.status === 202 ? "sent again as a new series" : errorText(answer));
  refresh();
}

document.getElementById("filters").addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  for (const other of document.querySelectorAll("#filters button")) {
    other.setAttribute("aria-pressed", String(other === button));
  }
  view.state = button.dataset.state;
  view.tokens = [null];
  view.page = 0;
  refresh();
});
document.getElementById("next").addEventListener("click", () => {
  view.page += 1;
  refresh();
});
document.getElementById("previous").addEventListener("click", () => {
  view.page = Math.max(0, view.page - 1);
  refresh();
});

refresh();
