// The console's helper: sign-in, calls to the JSON API with the CSRF token, the rule form,
// sorting and filtering of tables, the overview's refresh. No framework, no build step.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

async function api(method, url, body) {
  const options = { method, headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  return { status: response.status, ok: response.ok, data };
}

function say(text, bad) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = bad ? "message bad" : "message";
  box.hidden = false;
}

function detail(result) {
  return (result.data && result.data.detail) || ("error " + result.status);
}

function signIn() {
  const form = document.getElementById("signin-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = await api("POST", "/api/session", {
      name: form.elements.name.value, password: form.elements.password.value,
    });
    if (result.ok) { window.location = "/"; return; }
    const error = document.getElementById("signin-error");
    error.textContent = detail(result);
    error.hidden = false;
  });
}

function signOut() {
  const button = document.getElementById("sign-out");
  if (!button) return;
  button.addEventListener("click", async () => {
    await api("DELETE", "/api/session");
    window.location = "/signin";
  });
}

function sortable() {
  document.querySelectorAll("table.sortable th[data-sort]").forEach((th) => {
    th.addEventListener("click", () => {
      const table = th.closest("table");
      const body = table.tBodies[0];
      const index = Number(th.dataset.sort);
      const numeric = th.hasAttribute("data-numeric");
      const ascending = th.dataset.order !== "asc";
      table.querySelectorAll("th").forEach((other) => delete other.dataset.order);
      th.dataset.order = ascending ? "asc" : "desc";
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = a.cells[index].textContent.trim();
        const y = b.cells[index].textContent.trim();
        const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach((row) => body.appendChild(row));
    });
  });
  document.querySelectorAll("input[data-filter]").forEach((input) => {
    input.addEventListener("input", () => {
      const needle = input.value.toLowerCase();
      const table = document.getElementById(input.dataset.filter);
      Array.from(table.tBodies[0].rows).forEach((row) => {
        row.hidden = needle !== "" && !row.textContent.toLowerCase().includes(needle);
      });
    });
  });
}

function addRow(fieldset, value) {
  const row = document.createElement("div");
  row.className = "row";
  const input = document.createElement("input");
  input.name = fieldset.dataset.rows;
  input.value = value || "";
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "remove-row";
  remove.textContent = "remove";
  row.append(input, " ", remove);
  fieldset.insertBefore(row, fieldset.querySelector(".add-row"));
  return input;
}

function ruleValues(form) {
  const entry = {};
  form.querySelectorAll("[data-field]").forEach((field) => {
    const name = field.dataset.field;
    const kind = field.dataset.kind;
    if (kind === "boolean") {
      entry[name] = field.querySelector("input").checked;
    } else if (kind === "choices") {
      entry[name] = Array.from(field.querySelectorAll("input:checked")).map((i) => i.value);
    } else if (kind === "rows") {
      entry[name] = Array.from(field.querySelectorAll(".row input"))
        .map((i) => i.value.trim()).filter((v) => v !== "");
    } else {
      const value = field.querySelector("[name]").value.trim();
      if (value === "") return;
      entry[name] = kind === "integer" && /^-?\d+$/.test(value) ? Number(value) : value;
    }
  });
  return entry;
}

function showProblems(form, problems) {
  form.querySelectorAll("[data-error]").forEach((box) => {
    const found = problems[box.dataset.error];
    box.textContent = found ? found.join("; ") : "";
    box.hidden = !found;
  });
  const known = new Set(Array.from(form.querySelectorAll("[data-error]")).map((b) => b.dataset.error));
  const other = Object.keys(problems).filter((name) => !known.has(name))
    .map((name) => name + ": " + problems[name].join("; "));
  if (other.length) {
    const general = form.querySelector('[data-error="_general"]');
    general.textContent = [general.textContent, ...other].filter(Boolean).join("; ");
    general.hidden = false;
  }
}

function ruleForm() {
  const form = document.getElementById("rule-form");
  if (!form) return;
  form.querySelectorAll(".add-row").forEach((button) => {
    button.addEventListener("click", () => addRow(button.closest("fieldset")).focus());
  });
  form.addEventListener("click", (event) => {
    if (event.target.classList.contains("remove-row")) event.target.closest(".row").remove();
  });
  const uri = form.elements.coercionURI;
  form.querySelectorAll("input.option").forEach((box) => {
    box.addEventListener("change", () => {
      const chosen = Array.from(form.querySelectorAll("input.option:checked")).map((b) => b.value);
      uri.value = "deidentify:" + chosen.join(",");
    });
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const dn = form.dataset.dn;
    const body = { ae_title: form.elements.ae_title.value || null, entry: ruleValues(form) };
    const result = dn
      ? await api("PUT", "/api/rule?dn=" + encodeURIComponent(dn), body)
      : await api("POST", "/api/rules", body);
    if (result.ok) {
      window.location = "/rules/view?dn=" + encodeURIComponent(result.data.dn) + "&saved=1";
      return;
    }
    if (result.status === 422 && result.data && result.data.problems) {
      showProblems(form, result.data.problems);
      say("Not saved: see the problems beside the fields.", true);
    } else if (result.status === 422) {
      say("Not saved: " + JSON.stringify(result.data.detail), true);
    } else {
      say("Not saved: " + detail(result), true);
    }
  });
}

function ruleActions() {
  const toggle = document.getElementById("toggle-rule");
  if (toggle) {
    toggle.addEventListener("click", async () => {
      const result = await api("PUT", "/api/rule/enabled?dn=" + encodeURIComponent(toggle.dataset.dn),
        { enabled: toggle.dataset.enable === "true" });
      if (result.ok) { window.location.reload(); } else { say(problemText(result), true); }
    });
  }
  const remove = document.getElementById("delete-rule");
  if (remove) {
    remove.addEventListener("click", async () => {
      if (!window.confirm("Delete the rule " + remove.dataset.name + "?")) return;
      const result = await api("DELETE", "/api/rule?dn=" + encodeURIComponent(remove.dataset.delete));
      if (result.ok) { window.location = "/rules"; } else { say(problemText(result), true); }
    });
  }
  if (new URLSearchParams(window.location.search).get("saved")) {
    say("Saved; the node applies it at its next check of the directory.", false);
  }
}

function problemText(result) {
  if (result.data && result.data.problems) {
    return Object.entries(result.data.problems).map(([k, v]) => k + ": " + v.join("; ")).join("\n");
  }
  return detail(result);
}

function refreshOverview() {
  const section = document.getElementById("overview");
  if (!section) return;
  setInterval(async () => {
    const response = await fetch(section.dataset.refresh, { credentials: "same-origin" });
    if (response.status === 401) { window.location = "/signin"; return; }
    if (!response.ok) return;
    const data = await response.json();
    const body = document.querySelector("#objects tbody");
    body.replaceChildren(...data.objects.map((row) => {
      const tr = document.createElement("tr");
      [row.called_ae, row.result, row.total, row.per_minute].forEach((value, index) => {
        const td = document.createElement("td");
        td.textContent = String(value);
        if (index === 2) td.className = "total";
        tr.appendChild(td);
      });
      return tr;
    }));
  }, 2000);
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  return td;
}

function queueActions() {
  document.querySelectorAll("[data-queue-action]").forEach((button) => {
    button.addEventListener("click", async () => {
      const action = button.dataset.queueAction;
      const destination = button.dataset.destination;
      if (action === "discard" && !window.confirm("Delete the failed objects for " + destination + "?")) return;
      const result = await api("POST", "/api/queues/" + encodeURIComponent(destination) + "/" + action);
      if (result.ok) { window.location.reload(); } else { say(detail(result), true); }
    });
  });
}

function previewForm() {
  const form = document.getElementById("preview-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = document.getElementById("preview-file").files[0];
    if (!file) return;
    const query = new URLSearchParams({
      calling: document.getElementById("calling").value,
      called: document.getElementById("called").value,
      dimse: document.getElementById("dimse").value,
      role: document.getElementById("role").value,
    });
    const response = await fetch("/api/preview?" + query.toString(), {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "X-CSRF-Token": csrf(), "Content-Type": "application/octet-stream" },
      body: await file.arrayBuffer(),
    });
    const data = await response.json();
    const section = document.getElementById("preview-result");
    const rules = document.getElementById("preview-rules");
    rules.replaceChildren();
    if (!response.ok) { section.hidden = true; say("No preview: " + (data.detail || response.status), true); return; }
    document.getElementById("message").hidden = true;
    document.getElementById("preview-context").textContent = data.context;
    if (!data.rules.length) {
      const none = document.createElement("p");
      none.id = "no-rule";
      none.textContent = "No rule applies.";
      rules.appendChild(none);
    }
    data.rules.forEach((rule) => {
      const title = document.createElement("h3");
      title.textContent = rule.rule + " (" + rule.uri + ")" + (rule.failure ? ": failed: " + rule.failure : "");
      const table = document.createElement("table");
      table.className = "preview";
      const head = document.createElement("tr");
      ["tag", "keyword", "action", "before", "after"].forEach((name) => {
        const th = document.createElement("th"); th.textContent = name; head.appendChild(th);
      });
      table.appendChild(head);
      rule.changes.forEach((change) => {
        const tr = document.createElement("tr");
        [change.tag, change.keyword, change.action, change.before, change.after]
          .forEach((value) => tr.appendChild(cell(value)));
        table.appendChild(tr);
      });
      rules.append(title, table);
    });
    section.hidden = false;
    form.reset();  // the file is not kept in the page either
  });
}

function auditPage() {
  const form = document.getElementById("audit-form");
  if (!form) return;
  let page = 1;
  const load = async () => {
    const query = new URLSearchParams({ page: String(page) });
    ["since", "until", "ae_title", "dimse", "rule", "status"].forEach((name) => {
      const value = document.getElementById(name).value.trim();
      if (value) query.set(name, value);
    });
    const response = await fetch("/api/audit?" + query.toString(), { credentials: "same-origin" });
    if (!response.ok) { say("error " + response.status, true); return; }
    const data = await response.json();
    const body = document.querySelector("#audit-table tbody");
    body.replaceChildren(...data.lines.map((line) => {
      const tr = document.createElement("tr");
      const rules = (line.rules || []).map((r) => r.rule + (r.failure ? " (failed)" : "")).join(", ");
      [line.time, line.dimse, line.role, line.calling_ae, line.called_ae, rules, line.status,
        line.object, line.detail || line.error || ""].forEach((value) => tr.appendChild(cell(value)));
      return tr;
    }));
    document.getElementById("audit-page").textContent = String(page);
    document.getElementById("audit-newer").disabled = page <= 1;
    document.getElementById("audit-older").disabled = !data.more;
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); page = 1; load(); });
  document.getElementById("audit-newer").addEventListener("click", () => { page -= 1; load(); });
  document.getElementById("audit-older").addEventListener("click", () => { page += 1; load(); });
  load();
}

function scriptForm() {
  const form = document.getElementById("script-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const dn = form.dataset.dn;
    const body = {
      name: document.getElementById("script-name").value,
      description: document.getElementById("script-description").value.trim(),
      body: document.getElementById("script-body").value,
    };
    const result = dn
      ? await api("PUT", "/api/script?dn=" + encodeURIComponent(dn), body)
      : await api("POST", "/api/scripts", body);
    if (result.ok) { window.location = "/scripts"; return; }
    if (result.status === 422 && result.data && result.data.problems) {
      showProblems(form, result.data.problems);
      say("Not saved: see the problems beside the fields.", true);
    } else {
      say("Not saved: " + detail(result), true);
    }
  });
}

function mercureForm() {
  const form = document.getElementById("mercure-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = document.getElementById("mercure-file").files[0];
    const result = await api("POST", "/api/scripts/import-mercure", {
      name: document.getElementById("mercure-name").value,
      settings: file ? await file.text() : "",
      lenient: document.getElementById("mercure-lenient").checked,
    });
    if (result.ok) {
      const report = document.getElementById("mercure-report");
      report.textContent = "Imported. " + result.data.report.join("\n");
      report.hidden = false;
      say("Imported as " + result.data.dn, false);
      return;
    }
    if (result.status === 422 && result.data && result.data.problems) {
      showProblems(form, result.data.problems);
    } else {
      say("Not imported: " + detail(result), true);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  scriptForm();
  mercureForm();
  queueActions();
  previewForm();
  auditPage();
  signIn();
  signOut();
  sortable();
  ruleForm();
  ruleActions();
  refreshOverview();
});
