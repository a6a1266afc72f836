// The demo page: every text from the server is put in with textContent, never as HTML.
"use strict";

const state = {
  dir: null,
  parent: null,
  tab: "sms",
  mailbox: null,
  selectedMail: null,
  phoneKey: "",
  mailKey: "",
  announcements: [],
};

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function call(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const resp = await fetch(path, options);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = { error: await resp.text().catch(() => "") }; }
  return { status: resp.status, data };
}

function setStatus(id, text, error) {
  const node = $(id);
  node.textContent = text || "";
  node.classList.toggle("error", Boolean(error));
}

function clock(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleTimeString("nb-NO", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// --- the parent's phone -----------------------------------------------------------

function parentById(id) { return state.dir.parents.find((p) => p.id === id); }
function unitName(id) { const u = state.dir.units.find((x) => x.id === id); return u ? u.name : id; }

function fillParents() {
  const filter = $("parent-filter").value.trim().toLowerCase();
  const select = $("parent-select");
  const current = select.value;
  select.replaceChildren();
  for (const p of state.dir.parents) {
    const kids = p.children.map((c) => c.name.split(" ")[0]).join(", ");
    const label = `${p.name} (${kids}) · ${p.channels.join(" › ")}`;
    if (filter && !label.toLowerCase().includes(filter)) continue;
    const option = el("option", label);
    option.value = p.id;
    select.append(option);
  }
  if ([...select.options].some((o) => o.value === current)) select.value = current;
  if (select.value !== state.parent) pickParent(select.value);
}

function pickParent(id) {
  state.parent = id || null;
  state.phoneKey = "";
  const p = id ? parentById(id) : null;
  const info = $("parent-info");
  info.replaceChildren();
  if (!p) return;
  const lines = p.children.map((c) => `${c.name}: ${c.where}`);
  lines.push(`Kanaler / channels: ${p.channels.join(", ")} · språk ${p.language}${p.digest ? " · daglig e-post" : ""}`);
  info.textContent = lines.join("\n");
  const to = $("mail-to");
  to.replaceChildren();
  const units = [...new Set(p.children.flatMap((c) => c.units))];
  for (const u of units) {
    const option = el("option", `${unitName(u)} <${u}@${state.dir.reply_domain}>`);
    option.value = `${u}@${state.dir.reply_domain}`;
    to.append(option);
  }
  $("mail-in-reply-to").value = "";
  refreshPhone();
}

function pickTab(tab) {
  state.tab = tab;
  state.phoneKey = "";
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  $("mail-fields").hidden = tab !== "email";
  $("telegram-actions").hidden = tab !== "telegram";
  refreshPhone();
}

function bubble(text, mine, meta) {
  const node = $("bubble").content.firstElementChild.cloneNode(true);
  node.classList.toggle("mine", Boolean(mine));
  node.querySelector(".text").textContent = text;
  node.querySelector(".meta").textContent = meta;
  return node;
}

function renderPhone(data) {
  const log = $("phone-log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
  log.replaceChildren();
  const title = $("phone-title");
  const p = parentById(state.parent);
  if (state.tab === "sms") {
    title.textContent = `SMS med skolen / with the school ${data.school_number}`;
    for (const m of data.sms) {
      log.append(bubble(m.text, m.mine, `${clock(m.at)}${m.mine ? "" : " · " + m.status}`));
    }
  } else if (state.tab === "telegram") {
    title.textContent = `Telegram @${state.dir.bot_username}`;
    for (const m of data.telegram) {
      const node = bubble(m.text, m.mine, clock(m.at));
      const row = node.querySelector(".buttons");
      for (const line of m.buttons) {
        for (const b of line) {
          const button = el("button", b.text);
          button.type = "button";
          button.addEventListener("click", () => telegram({ action: "button", message_id: m.id, data: b.data }));
          row.append(button);
        }
      }
      log.append(node);
    }
  } else {
    title.textContent = `E-post ${p ? p.name : ""}`;
    for (const m of data.email) {
      const node = bubble(m.text, m.mine, `${clock(m.at)} · ${m.mine ? "til " + m.to : "fra " + m.from}`);
      node.querySelector(".text").before(el("div", m.subject, "subject"));
      if (!m.mine && m.reply_to) {
        const button = el("button", "Svar / reply");
        button.type = "button";
        button.addEventListener("click", () => replyAsParent(m));
        node.querySelector(".buttons").append(button);
      }
      log.append(node);
    }
  }
  if (!log.childElementCount) log.append(el("div", "Ingen meldinger ennå / no messages yet", "empty"));
  if (atBottom || !state.phoneScrolled) log.scrollTop = log.scrollHeight;
  state.phoneScrolled = true;
}

function replyAsParent(mail) {
  const to = $("mail-to");
  let option = [...to.options].find((o) => o.value === mail.reply_to);
  if (!option) {
    option = el("option", `svar / reply: ${mail.reply_to}`);
    option.value = mail.reply_to;
    to.append(option);
  }
  to.value = mail.reply_to;
  $("mail-subject").value = mail.subject.startsWith("Re:") ? mail.subject : `Re: ${mail.subject}`;
  $("mail-in-reply-to").value = mail.message_id;
  $("phone-text").focus();
}

async function refreshPhone() {
  if (!state.parent) return;
  const id = state.parent;
  const { status, data } = await call("GET", `/demo/phone/${encodeURIComponent(id)}`);
  if (status !== 200 || id !== state.parent) return;
  const key = state.tab + JSON.stringify(data[state.tab]);
  if (key === state.phoneKey) return;
  state.phoneKey = key;
  renderPhone(data);
}

async function telegram(body) {
  const { status, data } = await call("POST", "/demo/telegram", { guardian: state.parent, ...body });
  setStatus("phone-status", status === 200 ? "sendt / sent" : data.error || `feil ${status}`, status !== 200);
  setTimeout(refreshPhone, 300);
}

async function sendFromPhone(event) {
  event.preventDefault();
  const text = $("phone-text").value;
  if (!text.trim() || !state.parent) return;
  let result;
  if (state.tab === "sms") {
    result = await call("POST", "/demo/sms", { guardian: state.parent, text });
    const ok = result.status === 200 && result.data.webhook_status === 200;
    setStatus("phone-status", ok ? "levert til broen / delivered to the bridge" : `webhook: ${result.data.webhook_status || result.status}`, !ok);
  } else if (state.tab === "telegram") {
    await telegram({ action: "text", text });
    result = { status: 200 };
  } else {
    result = await call("POST", "/demo/mail", {
      from: state.parent,
      to: $("mail-to").value,
      subject: $("mail-subject").value,
      text,
      in_reply_to: $("mail-in-reply-to").value,
    });
    const ok = result.status === 200 && result.data.ok;
    setStatus("phone-status", ok ? `SMTP: ${result.data.smtp}` : `SMTP: ${result.data.smtp || result.data.error}`, !ok);
    $("mail-in-reply-to").value = "";
  }
  if (result.status === 200) $("phone-text").value = "";
  setTimeout(refreshPhone, 300);
}

// --- staff mailboxes --------------------------------------------------------------

function fillMailboxes() {
  const select = $("staff-select");
  for (const m of state.dir.mailboxes) {
    const groups = m.groups.length ? m.groups.join(", ") : "hele enheten / whole unit";
    const option = el("option", `${m.name} · ${m.unit} · ${m.notify}${m.notify === "office" ? "" : " · " + groups}`);
    option.value = m.id;
    select.append(option);
  }
  pickMailbox(select.value);
}

function pickMailbox(id) {
  state.mailbox = id;
  state.selectedMail = null;
  state.mailKey = "";
  $("staff-reply").hidden = true;
  const m = state.dir.mailboxes.find((x) => x.id === id);
  $("staff-info").textContent = m ? `Varsling / notify: ${m.notify}` : "";
  refreshMailbox();
}

function renderMailbox(data) {
  const box = $("mailbox");
  box.replaceChildren();
  const all = data.received.map((m) => ({ ...m, sent: false })).concat(data.sent.map((m) => ({ ...m, sent: true })));
  all.sort((a, b) => b.at - a.at);
  for (const m of all) {
    const key = m.sent ? `s${m.message_id}` : `r${m.n}`;
    const node = el("div", null, `mail${m.sent ? " sent" : ""}${state.selectedMail === key ? " selected" : ""}`);
    const head = el("div", null, "head");
    head.append(el("span", m.sent ? `til / to ${m.to}` : m.from), el("span", clock(m.at)));
    node.append(head, el("div", m.subject, "subject"));
    if (state.selectedMail === key) node.append(el("div", m.text, "body"));
    node.addEventListener("click", () => selectMail(key, m));
    box.append(node);
  }
  if (!all.length) box.append(el("div", "Ingen e-post ennå / no mail yet", "empty"));
}

function selectMail(key, mail) {
  state.selectedMail = key;
  state.mailKey = "";
  if (!mail.sent && mail.reply_to) {
    state.replyTo = mail;
    $("staff-reply-to").textContent = mail.reply_to;
    $("staff-reply").hidden = false;
  } else {
    $("staff-reply").hidden = true;
  }
  refreshMailbox();
}

async function refreshMailbox() {
  if (!state.mailbox) return;
  const id = state.mailbox;
  const { status, data } = await call("GET", `/demo/mailbox/${encodeURIComponent(id)}`);
  if (status !== 200 || id !== state.mailbox) return;
  const key = JSON.stringify(data) + state.selectedMail;
  if (key === state.mailKey) return;
  state.mailKey = key;
  renderMailbox(data);
}

async function sendStaffReply(event) {
  event.preventDefault();
  const mail = state.replyTo;
  const text = $("staff-text").value;
  if (!mail || !text.trim()) return;
  const quoted = mail.text.split("\n").map((line) => `> ${line}`).join("\n");
  const { status, data } = await call("POST", "/demo/mail", {
    from: state.mailbox,
    to: mail.reply_to,
    subject: mail.subject.startsWith("Re:") ? mail.subject : `Re: ${mail.subject}`,
    text: `${text}\n\n${mail.date}, ${mail.from} skrev:\n${quoted}\n`,
    in_reply_to: mail.message_id,
  });
  const ok = status === 200 && data.ok;
  setStatus("staff-status", ok ? `SMTP: ${data.smtp}` : `SMTP: ${data.smtp || data.error}`, !ok);
  if (ok) $("staff-text").value = "";
  refreshMailbox();
}

async function digestNow() {
  const m = state.dir.mailboxes.find((x) => x.id === state.mailbox);
  const unit = m && state.dir.units.find((u) => u.name === m.unit);
  if (!unit) return;
  const { status, data } = await call("POST", "/demo/digest", { unit_id: unit.id, kind: "absence" });
  if (status !== 200) setStatus("digest-status", data.error || `feil ${status}`, true);
  else setStatus("digest-status", data.already ? "allerede sendt i dag / already sent today" : `${data.deliveries} e-post i kø / mails queued`);
}

// --- announcements ----------------------------------------------------------------

function fillAnnounce() {
  const unit = $("announce-unit");
  for (const u of state.dir.units) {
    const option = el("option", u.name);
    option.value = u.id;
    unit.append(option);
  }
  unit.addEventListener("change", fillGroups);
  fillGroups();
}

function fillGroups() {
  const unit = $("announce-unit").value;
  const select = $("announce-group");
  select.replaceChildren(Object.assign(el("option", "alle / all"), { value: "" }));
  for (const g of state.dir.groups.filter((x) => x.unit_id === unit)) {
    const option = el("option", g.name);
    option.value = g.id;
    select.append(option);
  }
}

async function sendAnnouncement(event) {
  event.preventDefault();
  const text = $("announce-text").value;
  if (!text.trim()) return;
  const group = $("announce-group").value;
  const { status, data } = await call("POST", "/demo/announcements", {
    unit_id: $("announce-unit").value,
    group_ids: group ? [group] : [],
    subject: $("announce-subject").value,
    text,
    urgent: $("announce-urgent").checked,
  });
  if (status !== 201) {
    setStatus("announce-status", data.detail || data.error || `feil ${status}`, true);
    return;
  }
  setStatus("announce-status", `${data.announcement_id}: ${data.deliveries} leveranser / deliveries`);
  $("announce-text").value = "";
  state.announcements.unshift({ id: data.announcement_id, data: null });
  refreshAnnouncements();
}

function renderAnnouncement(node, a) {
  node.replaceChildren();
  const d = a.data;
  node.append(el("div", `${a.id}${d ? " · " + unitName(d.unit_id) : ""}`, "subject"));
  if (!d) return;
  node.append(el("div", d.text, "body"));
  node.append(el("div", `${d.deliveries} leveranser / deliveries (API)`, "meta"));
  const table = el("table");
  const head = el("tr");
  head.append(el("th", "kanal"), el("th", "status (API)"), el("th", "mottatt hos falsk leverandør / at the fake"));
  table.append(head);
  const channels = new Set([...Object.keys(d.summary || {}), "sms", "telegram", "email"]);
  for (const channel of channels) {
    const statuses = (d.summary || {})[channel] || {};
    const text = Object.entries(statuses).map(([s, n]) => `${s} ${n}`).join(", ") || "–";
    const tr = el("tr");
    tr.append(el("td", channel), el("td", text), el("td", (d.fakes || {})[channel] ?? "–"));
    table.append(tr);
  }
  node.append(table);
}

async function refreshAnnouncements() {
  const box = $("announcements");
  for (const a of state.announcements.slice(0, 5)) {
    const { status, data } = await call("GET", `/demo/announcements/${encodeURIComponent(a.id)}`);
    if (status === 200) a.data = data;
  }
  box.replaceChildren();
  for (const a of state.announcements) {
    const node = el("div", null, "announcement");
    node.dataset.id = a.id;
    renderAnnouncement(node, a);
    box.append(node);
  }
}

// --- start ------------------------------------------------------------------------

async function start() {
  const { data } = await call("GET", "/demo/directory");
  state.dir = data;
  $("parent-filter").addEventListener("input", fillParents);
  $("parent-select").addEventListener("change", (e) => pickParent(e.target.value));
  for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => pickTab(b.dataset.tab));
  $("phone-form").addEventListener("submit", sendFromPhone);
  $("phone-text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && state.tab !== "email") { e.preventDefault(); $("phone-form").requestSubmit(); }
  });
  $("tg-contact").addEventListener("click", () => telegram({ action: "contact" }));
  $("tg-fravaer").addEventListener("click", () => telegram({ action: "text", text: "/fravaer" }));
  $("staff-select").addEventListener("change", (e) => pickMailbox(e.target.value));
  $("staff-reply").addEventListener("submit", sendStaffReply);
  $("digest-now").addEventListener("click", digestNow);
  $("announce-form").addEventListener("submit", sendAnnouncement);
  fillParents();
  fillMailboxes();
  fillAnnounce();
  document.body.dataset.ready = "yes";
  setInterval(() => { refreshPhone(); refreshMailbox(); }, 1000);
  setInterval(refreshAnnouncements, 1500);
}

start();
