// The account view (#account): API keys (created, shown once, listed, revoked), the webhook
// signing secret (shown on request, copied, rotated) and the latest webhook deliveries.
// Everything from the service is written with textContent or as an input's value.
import { api, ApiError } from "./api.js";
import { extendTexts, language, t, translate } from "./i18n.js";

extendTexts({
  en: {
    "nav.account": "Account", "a.title": "Account", "a.keys": "API keys",
    "a.keysHint": "For scripts, the CLI and OpenAI clients: send the key as “Authorization: Bearer <key>”. A key cannot create keys or rotate the secret.",
    "a.keyName": "Name", "a.keyNamePlaceholder": "e.g. laptop script", "a.expires": "Expires",
    "a.days30": "in 30 days", "a.days90": "in 90 days", "a.days365": "in a year", "a.never": "never",
    "a.create": "Create key", "a.once": "Copy this key now: it is shown only once.", "a.copy": "Copy",
    "a.copied": "Copied", "a.done": "Done", "a.try": "Try it:", "a.key": "Key", "a.lastUsed": "Last used",
    "a.revoke": "Revoke", "a.sure": "Revoke — sure?", "a.revoked": "Key {name} revoked: it no longer works.",
    "a.noKeys": "No keys yet.", "a.created": "Key {name} created.",
    "a.secret": "Webhook signing secret",
    "a.secretHint": "Every webhook is signed with it (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature); your receiver checks the signature with it.",
    "a.show": "Show", "a.hide": "Hide", "a.rotate": "Rotate", "a.rotateSure": "Rotate — sure?",
    "a.rotated": "New secret: every delivery from now on is signed with it.", "a.since": "Since {at}",
    "a.deliveries": "Recent webhook deliveries", "a.refresh": "Refresh",
    "a.noDeliveries": "No deliveries yet. Give a task a webhook_url (API or CLI) and its events appear here.",
    "a.when": "When", "a.event": "Event", "a.task": "Task", "a.attempts": "Attempts",
    "a.attempt": "#{n} {at}: {answer} in {ms} ms", "a.next": "next try {at}",
    "d.pending": "pending", "d.delivered": "delivered", "d.failed": "failed", "d.gone": "gone",
  },
  zh: {
    "nav.account": "账户", "a.title": "账户", "a.keys": "API 密钥",
    "a.keysHint": "供脚本、命令行和 OpenAI 客户端使用：以 “Authorization: Bearer <密钥>” 发送。密钥不能创建密钥或轮换签名密钥。",
    "a.keyName": "名称", "a.keyNamePlaceholder": "例如：笔记本脚本", "a.expires": "有效期",
    "a.days30": "30 天", "a.days90": "90 天", "a.days365": "一年", "a.never": "永不过期",
    "a.create": "创建密钥", "a.once": "请立即复制此密钥：它只显示这一次。", "a.copy": "复制",
    "a.copied": "已复制", "a.done": "完成", "a.try": "试一下：", "a.key": "密钥", "a.lastUsed": "最近使用",
    "a.revoke": "吊销", "a.sure": "确定吊销？", "a.revoked": "密钥 {name} 已吊销，不再可用。",
    "a.noKeys": "还没有密钥。", "a.created": "密钥 {name} 已创建。",
    "a.secret": "Webhook 签名密钥",
    "a.secretHint": "每个 webhook 都用它签名（Standard Webhooks：webhook-id、webhook-timestamp、webhook-signature）；接收方用它校验签名。",
    "a.show": "显示", "a.hide": "隐藏", "a.rotate": "轮换", "a.rotateSure": "确定轮换？",
    "a.rotated": "已生成新密钥：此后的每次投递都用它签名。", "a.since": "创建于 {at}",
    "a.deliveries": "最近的 webhook 投递", "a.refresh": "刷新",
    "a.noDeliveries": "还没有投递。为任务指定 webhook_url（API 或命令行），其事件会显示在这里。",
    "a.when": "时间", "a.event": "事件", "a.task": "任务", "a.attempts": "尝试",
    "a.attempt": "第 {n} 次 {at}：{answer}，{ms} 毫秒", "a.next": "下次重试 {at}",
    "d.pending": "等待中", "d.delivered": "已送达", "d.failed": "失败", "d.gone": "已停止",
  },
});

const $ = (selector, root = document) => root.querySelector(selector);
const ARM_MS = 4000;  // how long a "sure?" button waits for its second press
const state = { secret: null, shown: false };

function node(tag, { text, cls, attrs } = {}, children = []) {
  const element = document.createElement(tag);
  if (text !== undefined && text !== null) element.textContent = String(text);
  if (cls) element.className = cls;
  for (const [k, v] of Object.entries(attrs || {})) element.setAttribute(k, v);
  element.append(...children);
  return element;
}

function when(value) {
  if (!value) return "—";
  const date = new Date(value);
  return isNaN(date) ? String(value) : date.toLocaleString(language() === "zh" ? "zh-CN" : "en");
}

function say(text, ok = true) {
  $("#alert-text").textContent = text;
  $("#alert").classList.toggle("ok", ok);
  $("#alert").hidden = false;
}

async function guarded(action) {
  try {
    return await action();
  } catch (err) {
    say(err instanceof ApiError ? err.detail : String(err && err.message ? err.message : err), false);
    return undefined;
  }
}

/** A button that acts on its second press within a few seconds (no blocking dialog). */
function armed(button, sureText, action) {
  let timer = null;
  const label = button.textContent;
  button.addEventListener("click", async () => {
    if (!button.dataset.armed) {
      button.dataset.armed = "true";
      button.textContent = sureText();
      timer = setTimeout(() => { delete button.dataset.armed; button.textContent = label; }, ARM_MS);
      return;
    }
    clearTimeout(timer);
    delete button.dataset.armed;
    button.textContent = label;
    button.disabled = true;
    try { await action(); } finally { button.disabled = false; }
  });
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    return false;  // no clipboard (plain HTTP on another host): the value stays selected to copy by hand
  }
  const label = button.textContent;
  button.textContent = t("a.copied");
  setTimeout(() => { button.textContent = label; }, 1500);
  return true;
}

// ------------------------------------------------------------------ API keys

async function loadKeys() {
  const keys = await api("auth/api-keys");
  const body = $("#keys-table tbody");
  body.replaceChildren(...keys.map(keyRow));
  if (!keys.length) body.append(node("tr", {}, [node("td", { text: t("a.noKeys"), attrs: { colspan: "6" } })]));
}

function keyRow(key) {
  const revoke = node("button", { text: t("a.revoke"), cls: "ghost key-revoke", attrs: { type: "button" } });
  const row = node("tr", { attrs: { "data-key-id": String(key.id) } }, [
    node("td", { text: key.name, cls: "key-name" }), node("td", {}, [node("code", { text: `${key.prefix}…` })]),
    node("td", { text: when(key.created_at) }), node("td", { text: when(key.last_used_at) }),
    node("td", { text: key.expires_at ? when(key.expires_at) : t("a.never") }), node("td", {}, [revoke])]);
  armed(revoke, () => t("a.sure"), () => guarded(async () => {
    await api(`auth/api-keys/${key.id}`, { method: "DELETE" });
    say(t("a.revoked", { name: key.name }));
    await loadKeys();
  }));
  return row;
}

async function createKey(event) {
  event.preventDefault();
  const name = $("#key-name").value.trim();
  if (!name) { $("#key-name").focus(); return; }
  const expiry = $("#key-expiry").value;
  await guarded(async () => {
    const created = await api("auth/api-keys", { method: "POST",
      json: { name, expires_in_days: expiry === "" ? null : Number(expiry) } });
    $("#key-form").reset();
    $("#new-key-value").value = created.key;
    const base = new URL(".", location.href).href.replace(/\/$/, "");
    $("#new-key-example").textContent = `curl -H "Authorization: Bearer ${created.key}" ${base}/auth/me`;
    $("#new-key").hidden = false;
    $("#new-key-value").select();
    say(t("a.created", { name: created.name }));
    await loadKeys();
  });
}

/** The new key leaves the page: it was to be shown once. */
function forgetNewKey() {
  $("#new-key-value").value = "";
  $("#new-key-example").textContent = "";
  $("#new-key").hidden = true;
}

// ------------------------------------------------------------------ webhook secret

function showSecret() {
  const input = $("#secret-value");
  input.value = state.secret ? (state.shown ? state.secret.secret : "whsec_" + "•".repeat(24)) : "";
  $("#secret-show").textContent = state.shown ? t("a.hide") : t("a.show");
  $("#secret-show").setAttribute("aria-pressed", String(state.shown));
  $("#secret-meta").textContent = state.secret ? t("a.since", { at: when(state.secret.created_at) }) : "";
}

async function loadSecret() {
  state.secret = await api("auth/webhook-secret");
  showSecret();
}

// ------------------------------------------------------------------ deliveries

async function loadDeliveries() {
  const deliveries = await api("auth/webhook-deliveries", { query: { limit: 20 } });
  $("#deliveries-empty").hidden = deliveries.length > 0;
  $("#deliveries-table").hidden = deliveries.length === 0;
  $("#deliveries-table tbody").replaceChildren(...deliveries.map(deliveryRow));
}

function deliveryRow(d) {
  const answer = (a) => (a.status_code ? `HTTP ${a.status_code}` : a.error || "—");
  const attempts = node("ul", { cls: "attempts" }, d.attempts.map((a) => node("li", {
    text: t("a.attempt", { n: a.attempt, at: when(a.started_at), answer: answer(a), ms: Math.round(a.duration_ms) }) })));
  if (d.next_attempt_at) attempts.append(node("li", { text: t("a.next", { at: when(d.next_attempt_at) }) }));
  const status = node("span", { text: t(`d.${d.status}`), cls: "badge", attrs: { "data-status": d.status } });
  return node("tr", { cls: "delivery", attrs: { "data-webhook-id": d.webhook_id, "data-status": d.status } }, [
    node("td", { text: when(d.created_at) }), node("td", { text: d.event_type }),
    node("td", {}, [node("code", { text: d.task_id.slice(0, 8), attrs: { title: d.task_id } })]),
    node("td", { text: d.url, cls: "url-cell" }), node("td", {}, [status]),
    node("td", {}, [node("span", { text: String(d.attempt_count) }), attempts])]);
}

// ------------------------------------------------------------------ the view

async function load() {
  await guarded(() => Promise.all([loadKeys(), loadSecret(), loadDeliveries()]));
}

function wire() {
  const view = $("#view-account");
  if (!view) return;
  translate(view);
  translate($("#nav"));
  $("#key-name").placeholder = t("a.keyNamePlaceholder");
  $("#key-form").addEventListener("submit", createKey);
  $("#new-key-copy").addEventListener("click", () => { $("#new-key-value").select(); copy($("#new-key-value").value, $("#new-key-copy")); });
  $("#new-key-done").addEventListener("click", forgetNewKey);
  $("#secret-show").addEventListener("click", () => { state.shown = !state.shown; showSecret(); });
  $("#secret-copy").addEventListener("click", () => { if (state.secret) copy(state.secret.secret, $("#secret-copy")); });
  armed($("#secret-rotate"), () => t("a.rotateSure"), () => guarded(async () => {
    state.secret = await api("auth/webhook-secret", { method: "POST" });
    showSecret();
    say(t("a.rotated"));
  }));
  $("#deliveries-refresh").addEventListener("click", () => guarded(loadDeliveries));
  $("#lang").addEventListener("change", () => { $("#key-name").placeholder = t("a.keyNamePlaceholder"); if (!view.hidden) load(); });
  // Loaded each time the view is shown; leaving it (or logging out) forgets the new key and hides the secret.
  new MutationObserver(() => {
    if (view.hidden) {
      forgetNewKey();
      state.shown = false;
      state.secret = null;
      showSecret();
    } else {
      load();
    }
  }).observe(view, { attributes: true, attributeFilter: ["hidden"] });
  if (!view.hidden) load();
}

wire();
