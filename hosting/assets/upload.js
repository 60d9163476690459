// The upload page: choose or drop a CSV, submit it, list what is wrong with it by line and
// column, or go on to the new request's page.
import { api, el, errorText, mountKeyBox } from "/assets/api.js";

const form = document.getElementById("upload-form");
const input = document.getElementById("file");
const drop = document.getElementById("drop");
const fileName = document.getElementById("file-name");
const outcome = document.getElementById("outcome");
const state = document.getElementById("upload-state");
const keyBox = mountKeyBox(document.getElementById("key-box"), () => {});

let chosen = null;

function choose(file) {
  chosen = file || null;
  fileName.textContent = chosen ? `${chosen.name} (${chosen.size} bytes)` : "";
  outcome.replaceChildren();
}

input.addEventListener("change", () => choose(input.files[0]));
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  if (event.dataTransfer.files.length) choose(event.dataTransfer.files[0]);
});

function problemsTable(error) {
  const rows = error.details.map((problem) =>
    el("tr", {}, el("td", {}, problem.line ?? ""), el("td", {}, problem.column ?? ""), el("td", {}, problem.message)),
  );
  return el(
    "div",
    { id: "problems" },
    el("div", { class: "message error", role: "alert" }, error.message),
    el(
      "table",
      { id: "problems-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "Line"), el("th", {}, "Column"), el("th", {}, "Problem"))),
      el("tbody", {}, rows),
    ),
  );
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!chosen) {
    outcome.replaceChildren(el("div", { class: "message error", role: "alert" }, "Choose a CSV first."));
    return;
  }
  const body = new FormData();
  body.append("file", chosen, chosen.name);
  const webhook = document.getElementById("webhook").value.trim();
  if (webhook) body.append("webhook_url", webhook);
  state.textContent = "uploading…";
  const answer = await api("/upload", { method: "POST", body });
  state.textContent = "";
  if (answer.status === 202) {
    window.location.assign(`/requests/${encodeURIComponent(answer.body.request_id)}`);
    return;
  }
  if (answer.status === 401) keyBox.open();
  const error = answer.body && answer.body.error;
  outcome.replaceChildren(
    error && error.code === "invalid_csv"
      ? problemsTable(error)
      : el("div", { class: "message error", role: "alert" }, errorText(answer)),
  );
});
