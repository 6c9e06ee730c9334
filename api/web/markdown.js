// Markdown for model answers, rendered safely: the text is escaped first, so any
// HTML the model writes is shown as text; then a small subset of Markdown
// (paragraphs, line breaks, headings, lists, **bold**, *italic*, `code`, fenced
// code blocks, [links](https://...) and citations [n]) becomes markup built
// from that escaped text. Links open only http(s) URLs, in a new tab.
"use strict";

(function () {
  function escape(text) {
    return text
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  }

  // Inline markup over already-escaped text.
  function inline(text) {
    const codes = [];
    text = text.replace(/`([^`\n]+)`/g, function (_, code) {
      codes.push(code);
      return "\u0000" + (codes.length - 1) + "\u0000";
    });
    text = text.replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g, function (_, label, url) {
      return '<a href="' + url + '" target="_blank" rel="noopener noreferrer nofollow">' +
        label + "</a>";
    });
    text = text.replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>");
    text = text.replace(/(^|[^*\w])\*([^*\n]+)\*(?=[^*\w]|$)/g, "$1<em>$2</em>");
    text = text.replace(/\[(\d{1,3})\]/g, '<sup class="cite">[$1]</sup>');
    return text.replace(/\u0000(\d+)\u0000/g, function (_, n) {
      return "<code>" + codes[Number(n)] + "</code>";
    });
  }

  function render(source) {
    const lines = escape(String(source || "")).split(/\r?\n/);
    const out = [];
    let paragraph = [];
    let list = null;
    let code = null;

    function flush() {
      if (paragraph.length) {
        out.push("<p>" + paragraph.map(inline).join("<br>") + "</p>");
        paragraph = [];
      }
      if (list) {
        out.push("<" + list.tag + ">" + list.items.map(function (item) {
          return "<li>" + inline(item) + "</li>";
        }).join("") + "</" + list.tag + ">");
        list = null;
      }
    }

    for (const line of lines) {
      if (code !== null) {
        if (/^```/.test(line)) {
          out.push("<pre><code>" + code.join("\n") + "</code></pre>");
          code = null;
        } else {
          code.push(line);
        }
        continue;
      }
      if (/^```/.test(line)) {
        flush();
        code = [];
        continue;
      }
      const heading = /^(#{1,4})\s+(.*)$/.exec(line);
      const bullet = /^\s*[-*]\s+(.*)$/.exec(line);
      const numbered = /^\s*\d+[.)]\s+(.*)$/.exec(line);
      if (heading) {
        flush();
        const level = Math.min(heading[1].length + 2, 6);
        out.push("<h" + level + ">" + inline(heading[2]) + "</h" + level + ">");
      } else if (bullet || numbered) {
        const tag = bullet ? "ul" : "ol";
        if (paragraph.length || (list && list.tag !== tag)) flush();
        if (!list) list = { tag: tag, items: [] };
        list.items.push((bullet || numbered)[1]);
      } else if (!line.trim()) {
        flush();
      } else {
        if (list) flush();
        paragraph.push(line);
      }
    }
    if (code !== null) out.push("<pre><code>" + code.join("\n") + "</code></pre>");
    flush();
    return out.join("");
  }

  window.appforgeMarkdown = { render: render, escape: escape };
})();
