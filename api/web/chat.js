// The chat page of one app: /chat/<uuid> (?embed=1 inside the widget's frame).
//
// Chat apps: a conversation whose answer streams in as NDJSON arrives; the
// session id is kept per app in localStorage, so a reload continues it. Text
// apps: a form made from the app's inputs, each output shown as it streams.
// A private app's key comes from the URL fragment (#key=..., which browsers
// never send to a server) or from the form, and is kept in sessionStorage.
"use strict";

(function () {
  const md = window.appforgeMarkdown;
  const $ = (id) => document.getElementById(id);
  const uuid = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
  const embed = new URLSearchParams(location.search).get("embed") === "1";
  const keyName = "appforge:key:" + uuid;
  const sessionName = "appforge:session:" + uuid;
  let page = null;
  let running = null; // the AbortController of the run going on

  // --- the key and the calls ------------------------------------------------------

  function takeKeyFromFragment() {
    const match = /(?:^#|&)key=([^&]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem(keyName, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function headers(extra) {
    const all = Object.assign({ Accept: "application/json" }, extra || {});
    const key = sessionStorage.getItem(keyName);
    if (key) all.Authorization = "Bearer " + key;
    return all;
  }

  async function problem(response) {
    let message = response.status + " " + response.statusText;
    let code = "";
    try {
      const body = await response.json();
      if (body && body.error) {
        message = body.error.message || message;
        code = body.error.code || "";
      }
    } catch (ignored) { /* not JSON */ }
    if (response.status === 429) {
      const wait = response.headers.get("Retry-After");
      message = "Too many requests" + (wait ? ": try again in " + wait + " s." : ".");
    }
    const error = new Error(message);
    error.status = response.status;
    error.code = code;
    return error;
  }

  function showError(error) {
    const box = $("error");
    box.textContent = error ? (error.message || String(error)) : "";
    box.hidden = !error;
  }

  // --- loading the app -------------------------------------------------------------

  async function load() {
    if (embed) document.body.classList.add("embed");
    takeKeyFromFragment();
    const response = await fetch("/api/apps/" + encodeURIComponent(uuid) + "/page", {
      headers: headers(),
    });
    if (response.status === 401 || response.status === 403) {
      sessionStorage.removeItem(keyName);
      askForKey((await problem(response)).message);
      return;
    }
    if (!response.ok) {
      $("title").textContent = "Not available";
      showError(await problem(response));
      return;
    }
    page = await response.json();
    show();
  }

  function askForKey(why) {
    $("title").textContent = "Private app";
    $("key-form").hidden = false;
    if (why) showError(new Error(why));
    $("key-form").onsubmit = function (event) {
      event.preventDefault();
      const value = $("key").value.trim();
      if (!value) return;
      sessionStorage.setItem(keyName, value);
      $("key-form").hidden = true;
      showError(null);
      load();
    };
  }

  function show() {
    const ui = page.ui || {};
    document.title = ui.title || page.name;
    $("title").textContent = ui.title || page.name;
    if (ui.accent) document.documentElement.style.setProperty("--accent", ui.accent);
    if (page.description && !embed) {
      $("description").textContent = page.description;
      $("description").hidden = false;
    }
    if (page.type === "chat" && page.message_input) startChat(ui);
    else startForm();
  }

  // --- chat apps ---------------------------------------------------------------------

  async function startChat(ui) {
    $("composer").hidden = false;
    $("new-chat").hidden = false;
    $("new-chat").onclick = newChat;
    $("composer").onsubmit = function (event) {
      event.preventDefault();
      send($("message").value);
    };
    $("message").addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        send($("message").value);
      }
    });
    $("message").addEventListener("input", grow);
    $("stop").onclick = function () { if (running) running.abort(); };
    if (ui.welcome) addMessage("assistant", ui.welcome, true);
    await restore();
    offerSuggestions(ui.suggestions || []);
    $("message").focus();
  }

  function grow() {
    const box = $("message");
    box.style.height = "auto";
    box.style.height = Math.min(box.scrollHeight, 160) + "px";
  }

  function offerSuggestions(suggestions) {
    const box = $("suggestions");
    box.textContent = "";
    const fresh = !document.querySelector(".message.user");
    suggestions.forEach(function (text) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = text;
      button.onclick = function () { send(text); };
      box.appendChild(button);
    });
    box.hidden = !(fresh && suggestions.length);
  }

  async function restore() {
    const session = localStorage.getItem(sessionName);
    if (!session) return;
    const response = await fetch("/api/sessions/" + encodeURIComponent(session), {
      headers: headers(),
    });
    if (!response.ok) {
      localStorage.removeItem(sessionName); // gone, or not ours: start afresh
      return;
    }
    const body = await response.json();
    body.turns.forEach(function (turn) {
      addMessage("user", String(turn.input[page.message_input] || ""));
      const reply = addMessage("assistant", "", true);
      fill(reply, turn.output, false);
    });
  }

  function newChat() {
    if (running) running.abort();
    localStorage.removeItem(sessionName);
    $("messages").textContent = "";
    showError(null);
    const ui = page.ui || {};
    if (ui.welcome) addMessage("assistant", ui.welcome, true);
    offerSuggestions(ui.suggestions || []);
    $("message").focus();
  }

  function addMessage(role, text, markdown) {
    const box = document.createElement("div");
    box.className = "message " + role;
    const body = document.createElement("div");
    body.className = "text";
    if (markdown) body.innerHTML = md.render(text);
    else body.textContent = text;
    box.appendChild(body);
    $("messages").appendChild(box);
    box.scrollIntoView({ block: "end" });
    return box;
  }

  // Show an answer's output: its text (Markdown, escaped) and list outputs as citations.
  function fill(box, output, streaming) {
    const text = output[page.answer];
    box.querySelector(".text").innerHTML = md.render(typeof text === "string" ? text : "");
    box.classList.toggle("streaming", streaming);
    let sources = box.querySelector(".sources");
    const lists = Object.keys(output).filter(function (key) {
      return key !== page.answer && Array.isArray(output[key]) && output[key].length;
    });
    if (!lists.length) return;
    if (!sources) {
      sources = document.createElement("div");
      sources.className = "sources";
      box.appendChild(sources);
    }
    sources.textContent = "";
    lists.forEach(function (key) {
      const title = document.createElement("div");
      title.textContent = key === "sources" ? "Sources" : key;
      const items = document.createElement("ol");
      output[key].forEach(function (item) {
        const li = document.createElement("li");
        li.textContent = typeof item === "string" ? item : JSON.stringify(item);
        items.appendChild(li);
      });
      sources.appendChild(title);
      sources.appendChild(items);
    });
  }

  async function send(text) {
    text = String(text || "").trim();
    if (!text || running) return;
    $("message").value = "";
    grow();
    $("suggestions").hidden = true;
    showError(null);
    addMessage("user", text);
    const reply = addMessage("assistant", "", true);
    reply.classList.add("streaming");
    const input = defaults();
    input[page.message_input] = text;
    try {
      await run(input, function (output) { fill(reply, output, true); }, true);
      reply.classList.remove("streaming");
    } catch (error) {
      reply.classList.remove("streaming");
      if (error.name === "AbortError") {
        reply.classList.add("stopped");
      } else {
        reply.classList.add("failed");
        if (!reply.querySelector(".text").textContent) reply.remove();
        showError(error);
      }
    }
  }

  function defaults() {
    const values = {};
    Object.keys(page.input).forEach(function (key) {
      const field = page.input[key];
      if (field.default !== null && field.default !== undefined) values[key] = field.default;
    });
    return values;
  }

  // --- running -----------------------------------------------------------------------

  // POST the run with stream: true and hand the growing output to onOutput.
  async function run(input, onOutput, chat) {
    const controller = new AbortController();
    const output = {};
    running = controller;
    setBusy(true);
    const session = chat ? localStorage.getItem(sessionName) : null;
    const url = "/api/apps/" + encodeURIComponent(uuid) + "/run" +
      (session ? "/" + encodeURIComponent(session) : "");
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json", Accept: "application/x-ndjson" }),
        body: JSON.stringify({ input: input, stream: true }),
        signal: controller.signal,
      });
      if (!response.ok) {
        const error = await problem(response);
        if (chat && session && error.code === "SESSION_NOT_FOUND") {
          localStorage.removeItem(sessionName); // forgotten meanwhile: start a new one
          running = null;
          return run(input, onOutput, chat);
        }
        throw error;
      }
      const id = response.headers.get("X-Session-ID");
      if (chat && id) localStorage.setItem(sessionName, id);
      await readLines(response, function (line) {
        if (line.error) throw new Error(line.error.message || "the run failed");
        if (line.output) {
          Object.keys(line.output).forEach(function (key) {
            const piece = line.output[key];
            output[key] = typeof piece === "string" && typeof output[key] === "string"
              ? output[key] + piece : piece;
          });
          onOutput(output);
        }
      });
    } finally {
      if (running === controller) running = null;
      setBusy(false);
    }
    return output;
  }

  async function readLines(response, onLine) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).trim();
        buffer = buffer.slice(end + 1);
        if (line) onLine(JSON.parse(line));
      }
    }
    if (buffer.trim()) onLine(JSON.parse(buffer));
  }

  function setBusy(busy) {
    $("send").disabled = busy;
    $("stop").hidden = !busy;
    const submit = document.querySelector("#inputs button[type=submit]");
    if (submit) submit.disabled = busy;
    const stop = $("form-stop");
    if (stop) stop.hidden = !busy;
  }

  // --- text apps ---------------------------------------------------------------------

  function startForm() {
    const form = $("inputs");
    form.hidden = false;
    form.textContent = "";
    Object.keys(page.input).forEach(function (key) {
      form.appendChild(field(key, page.input[key]));
    });
    const buttons = document.createElement("div");
    buttons.className = "buttons";
    const submit = document.createElement("button");
    submit.type = "submit";
    submit.textContent = "Run";
    const stop = document.createElement("button");
    stop.type = "button";
    stop.className = "stop";
    stop.id = "form-stop";
    stop.textContent = "Stop";
    stop.hidden = true;
    stop.onclick = function () { if (running) running.abort(); };
    buttons.appendChild(submit);
    buttons.appendChild(stop);
    form.appendChild(buttons);
    form.onsubmit = function (event) {
      event.preventDefault();
      submitForm();
    };
  }

  function field(key, spec) {
    const wrap = document.createElement("div");
    const label = document.createElement("label");
    label.htmlFor = "in-" + key;
    label.textContent = key + (spec.required ? " *" : "");
    if (spec.description) {
      const hint = document.createElement("span");
      hint.className = "hint";
      hint.textContent = " — " + spec.description;
      label.appendChild(hint);
    }
    let control;
    if (spec.enum) {
      control = document.createElement("select");
      spec.enum.forEach(function (choice) {
        const option = document.createElement("option");
        option.value = JSON.stringify(choice);
        option.textContent = String(choice);
        if (JSON.stringify(choice) === JSON.stringify(spec.default)) option.selected = true;
        control.appendChild(option);
      });
    } else if (spec.type === "boolean") {
      wrap.className = "check";
      control = document.createElement("input");
      control.type = "checkbox";
      control.checked = spec.default === true;
    } else if (spec.type === "integer" || spec.type === "number") {
      control = document.createElement("input");
      control.type = "number";
      control.step = spec.type === "integer" ? "1" : "any";
      if (spec.default !== null && spec.default !== undefined) control.value = spec.default;
    } else {
      control = document.createElement("textarea");
      control.rows = spec.type === "string" ? 3 : 4;
      if (spec.type !== "string") control.placeholder = "JSON";
      const value = spec.default;
      if (value !== null && value !== undefined) {
        control.value = typeof value === "string" ? value : JSON.stringify(value);
      }
      if (spec.max_length) control.maxLength = spec.max_length;
    }
    control.id = "in-" + key;
    control.name = key;
    if (spec.required && spec.type !== "boolean") control.required = true;
    if (wrap.className === "check") {
      wrap.appendChild(control);
      wrap.appendChild(label);
    } else {
      wrap.appendChild(label);
      wrap.appendChild(control);
    }
    return wrap;
  }

  function readForm() {
    const values = {};
    Object.keys(page.input).forEach(function (key) {
      const spec = page.input[key];
      const control = $("in-" + key);
      if (spec.enum) values[key] = JSON.parse(control.value);
      else if (spec.type === "boolean") values[key] = control.checked;
      else if (control.value === "") return;
      else if (spec.type === "integer" || spec.type === "number") values[key] = Number(control.value);
      else if (spec.type === "string") values[key] = control.value;
      else {
        try {
          values[key] = JSON.parse(control.value);
        } catch (ignored) {
          throw new Error(key + " must be JSON");
        }
      }
    });
    return values;
  }

  async function submitForm() {
    if (running) return;
    showError(null);
    const box = $("outputs");
    box.hidden = false;
    box.textContent = "";
    const shown = {};
    try {
      await run(readForm(), function (output) {
        Object.keys(output).forEach(function (key) {
          if (!shown[key]) {
            const section = document.createElement("div");
            section.className = "output";
            const title = document.createElement("h2");
            title.textContent = key;
            const value = document.createElement("div");
            value.className = "value";
            section.appendChild(title);
            section.appendChild(value);
            box.appendChild(section);
            shown[key] = value;
          }
          const value = output[key];
          if (typeof value === "string") shown[key].innerHTML = md.render(value);
          else shown[key].textContent = JSON.stringify(value, null, 2);
        });
      }, false);
    } catch (error) {
      if (error.name !== "AbortError") showError(error);
    }
  }

  load().catch(showError);
})();
