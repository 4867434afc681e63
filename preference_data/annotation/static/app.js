"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem("annotateToken") || "";
  let task = null;        // {task_id, prompt, responses}
  let order = [];         // response indices, best first
  let tied = new Set();   // response indices tied with the card just before them
  let picked = 0;         // how many leading cards were chosen with the number keys
  let busy = false;

  function status(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = kind || "";
  }

  async function api(method, path, body) {
    const opts = { method, headers: { "Authorization": "Bearer " + token } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(path, opts);
    let data = null;
    if (resp.status !== 204) {
      try { data = await resp.json(); } catch (e) { data = null; }
    }
    if (resp.status === 401) { signOut("Token refused: sign in again."); }
    if (!resp.ok) {
      const msg = (data && data.error) ? data.error : ("HTTP " + resp.status);
      throw new Error(msg);
    }
    return { status: resp.status, data };
  }

  function signOut(message) {
    token = "";
    sessionStorage.removeItem("annotateToken");
    $("signin").hidden = false;
    $("work").hidden = true;
    $("done").hidden = true;
    $("signout").hidden = true;
    $("progress").textContent = "";
    if (message) status(message, "error");
  }

  async function refreshProgress() {
    try {
      const { data } = await api("GET", "/api/progress");
      $("progress").textContent = data.judged + " judged, " + data.remaining + " left";
    } catch (e) { /* the status line already tells about errors of the main action */ }
  }

  async function loadNext() {
    busy = true;
    try {
      const { status: code, data } = await api("GET", "/api/next");
      $("signin").hidden = true;
      $("signout").hidden = false;
      if (code === 204) {
        task = null;
        $("work").hidden = true;
        $("done").hidden = false;
      } else {
        task = data;
        order = task.responses.map((_, i) => i);
        tied = new Set();
        picked = 0;
        $("comment").value = "";
        $("prompt").textContent = promptText(task.prompt);
        $("work").hidden = false;
        $("done").hidden = true;
        render();
      }
      refreshProgress();
    } catch (e) {
      status(e.message, "error");
    } finally {
      busy = false;
    }
  }

  function promptText(prompt) {
    // A conversational prompt is a list of {role, content} messages.
    if (typeof prompt === "string") return prompt;
    return prompt.map((m) => (m.role || "") + ": " + (m.content || "")).join("\n\n");
  }

  function ranks() {
    // ranks[i] = place of response i (0 = best, the store's convention); tied cards share
    // the place of the card before them.
    const out = new Array(order.length);
    let place = -1;
    order.forEach((resp, pos) => {
      if (pos === 0 || !tied.has(resp)) place += 1;
      out[resp] = place;
    });
    return out;
  }

  function render(focusResp) {
    const box = $("cards");
    box.replaceChildren();
    const r = ranks();
    order.forEach((resp, pos) => {
      const card = document.createElement("div");
      card.className = "card" + (pos < picked ? " picked" : "") + (pos > 0 && tied.has(resp) ? " tied" : "");
      card.tabIndex = 0;
      card.draggable = true;
      card.setAttribute("role", "listitem");
      card.dataset.resp = String(resp);
      const head = document.createElement("div");
      const label = document.createElement("span");
      label.className = "rank";
      label.textContent = "#" + (r[resp] + 1) + (pos > 0 && tied.has(resp) ? " (tie)" : "");
      const name = document.createElement("span");
      name.textContent = "  response " + (resp + 1);
      head.append(label, name);
      const text = document.createElement("pre");
      text.textContent = task.responses[resp];
      card.append(head, text);
      card.addEventListener("dragstart", (ev) => {
        ev.dataTransfer.setData("text/plain", String(resp));
        card.classList.add("dragging");
      });
      card.addEventListener("dragend", () => card.classList.remove("dragging"));
      card.addEventListener("dragover", (ev) => ev.preventDefault());
      card.addEventListener("drop", (ev) => {
        ev.preventDefault();
        const moved = Number(ev.dataTransfer.getData("text/plain"));
        if (!Number.isInteger(moved) || moved === resp) return;
        order.splice(order.indexOf(moved), 1);
        order.splice(order.indexOf(resp), 0, moved);
        render(moved);
      });
      box.append(card);
    });
    if (focusResp !== undefined) {
      const el = box.querySelector('[data-resp="' + focusResp + '"]');
      if (el) el.focus();
    }
  }

  function focusedResp() {
    const el = document.activeElement;
    return (el && el.classList && el.classList.contains("card")) ? Number(el.dataset.resp) : null;
  }

  function move(resp, delta) {
    const pos = order.indexOf(resp);
    const to = pos + delta;
    if (to < 0 || to >= order.length) return;
    order.splice(pos, 1);
    order.splice(to, 0, resp);
    render(resp);
  }

  function toggleTie(resp) {
    if (resp === null || order.indexOf(resp) === 0) {
      status("Focus a card (not the first) to tie it with the one before it.", "error");
      return;
    }
    if (tied.has(resp)) tied.delete(resp); else tied.add(resp);
    render(resp);
  }

  function pickBest(resp) {
    // Number key n: response n becomes the best of those not yet picked.
    const pos = order.indexOf(resp);
    if (pos < picked) return;
    order.splice(pos, 1);
    order.splice(picked, 0, resp);
    picked += 1;
    render(resp);
  }

  async function submit() {
    if (!task || busy) return;
    busy = true;
    status("saving...", "");
    const body = { task_id: task.task_id, ranks: ranks() };
    const comment = $("comment").value.trim();
    if (comment) body.comment = comment;
    try {
      const { status: code } = await api("POST", "/api/judgements", body);
      if (code === 201) status("saved", "ok");
      busy = false;
      await loadNext();
    } catch (e) {
      status(e.message, "error");
    } finally {
      busy = false;
    }
  }

  async function skip() {
    if (!task || busy) return;
    busy = true;
    try {
      await api("POST", "/api/skip", { task_id: task.task_id });
      status("skipped", "");
      busy = false;
      await loadNext();
    } catch (e) {
      status(e.message, "error");
    } finally {
      busy = false;
    }
  }

  document.addEventListener("keydown", (ev) => {
    if (!task || $("work").hidden) return;
    const inText = ev.target && (ev.target.tagName === "TEXTAREA" || ev.target.tagName === "INPUT");
    if (ev.key === "Enter" && !ev.shiftKey && (!inText || ev.target.id === "comment")) {
      ev.preventDefault();
      submit();
      return;
    }
    if (inText) return;
    const n = Number(ev.key);
    if (Number.isInteger(n) && n >= 1 && n <= order.length) { pickBest(n - 1); return; }
    const resp = focusedResp();
    if (ev.key === "t") { toggleTie(resp); return; }
    if (resp === null) return;
    if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") { ev.preventDefault(); move(resp, -1); }
    if (ev.key === "ArrowRight" || ev.key === "ArrowDown") { ev.preventDefault(); move(resp, 1); }
  });

  document.addEventListener("DOMContentLoaded", () => {
    let lastFocused = null;
    $("cards").addEventListener("focusin", (ev) => {
      if (ev.target.classList.contains("card")) lastFocused = Number(ev.target.dataset.resp);
    });
    $("tie").addEventListener("click", () => toggleTie(lastFocused));
    $("skip").addEventListener("click", skip);
    $("submit").addEventListener("click", submit);
    $("signout").addEventListener("click", () => signOut(""));
    const signIn = () => {
      token = $("token").value.trim();
      $("token").value = "";
      if (!token) return;
      sessionStorage.setItem("annotateToken", token);
      status("", "");
      loadNext();
    };
    $("signin-btn").addEventListener("click", signIn);
    $("token").addEventListener("keydown", (ev) => { if (ev.key === "Enter") signIn(); });
    if (token) loadNext();
  });
})();
