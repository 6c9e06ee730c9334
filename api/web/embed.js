// The appforge chat widget. On any page:
//
//   <script src="https://HOST/embed.js" data-app="<app uuid>" data-key="<runner key>"
//           data-accent="#2563eb" data-position="right" async></script>
//
// adds a chat bubble that opens the app's chat page (/chat/<uuid>?embed=1) in a
// frame. Everything it draws lives in a shadow root whose host resets
// every inherited style, so the page's styles do not reach it and its styles do
// not leak out. A key travels in the frame's URL fragment, which is never sent
// to a server.
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.dataset.app) return;
  var base = new URL(script.src, location.href).origin;
  var app = script.dataset.app;
  var accent = /^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/.test(script.dataset.accent || "")
    ? script.dataset.accent : "#2563eb";
  var side = script.dataset.position === "left" ? "left" : "right";
  var src = base + "/chat/" + encodeURIComponent(app) + "?embed=1" +
    (script.dataset.key ? "#key=" + encodeURIComponent(script.dataset.key) : "");

  var host = document.createElement("div");
  host.setAttribute("data-appforge-widget", app);
  var root = host.attachShadow({ mode: "open" });
  var style = document.createElement("style");
  style.textContent = [
    ":host { all: initial; }",
    ".bubble { position: fixed; bottom: 20px; " + side + ": 20px; z-index: 2147483000;",
    "  width: 56px; height: 56px; border-radius: 50%; border: none; cursor: pointer;",
    "  background: " + accent + "; color: #fff; box-shadow: 0 4px 14px rgba(0,0,0,.25);",
    "  display: flex; align-items: center; justify-content: center; padding: 0; }",
    ".bubble svg { width: 26px; height: 26px; fill: currentColor; }",
    ".panel { position: fixed; bottom: 88px; " + side + ": 20px; z-index: 2147483000;",
    "  width: 380px; height: 560px; max-width: calc(100vw - 40px);",
    "  max-height: calc(100vh - 110px); border: 1px solid #e5e7eb; border-radius: 14px;",
    "  overflow: hidden; background: #fff; box-shadow: 0 10px 30px rgba(0,0,0,.25); }",
    ".panel[hidden] { display: none; }",
    ".panel iframe { width: 100%; height: 100%; border: 0; display: block; }",
  ].join("\n");
  var bubble = document.createElement("button");
  bubble.className = "bubble";
  bubble.type = "button";
  bubble.setAttribute("aria-label", "Open chat");
  bubble.setAttribute("aria-expanded", "false");
  bubble.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"/></svg>';
  var panel = document.createElement("div");
  panel.className = "panel";
  panel.hidden = true;
  var frame = null;

  bubble.addEventListener("click", function () {
    var open = panel.hidden;
    if (open && !frame) {
      frame = document.createElement("iframe");
      frame.title = "Chat";
      frame.src = src;
      frame.setAttribute("allow", "clipboard-write");
      panel.appendChild(frame);
    }
    panel.hidden = !open;
    bubble.setAttribute("aria-expanded", String(open));
    bubble.setAttribute("aria-label", open ? "Close chat" : "Open chat");
  });

  root.appendChild(style);
  root.appendChild(panel);
  root.appendChild(bubble);
  (document.body || document.documentElement).appendChild(host);
})();
