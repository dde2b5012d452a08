// The evalq leaderboard's script. The table: rows come as JSON (formatted by evalq), are
// sorted and filtered in memory, and only the first rows that match are put in the page,
// as text. The view (filters, search, sort, columns, chosen rows) lives in the URL's hash,
// so a reload or a shared link shows the same. Also: the dark-mode toggle and the charts'
// tooltips. No dependencies, no network; works from file://.
(function () {
  "use strict";
  var PAGE = 200;

  // ---- dark mode: auto (the system's) → dark → light, kept in localStorage
  var THEMES = ["auto", "dark", "light"];
  function theme() { return document.documentElement.getAttribute("data-theme") || "auto"; }
  var toggle = document.getElementById("theme");
  if (toggle) {
    var label = function () { toggle.querySelector("span").textContent = { auto: "auto", dark: "on", light: "off" }[theme()]; };
    toggle.hidden = false; label();
    toggle.addEventListener("click", function () {
      var next = THEMES[(THEMES.indexOf(theme()) + 1) % THEMES.length];
      if (next === "auto") { document.documentElement.removeAttribute("data-theme"); } else { document.documentElement.setAttribute("data-theme", next); }
      try { if (next === "auto") { localStorage.removeItem("evalq-theme"); } else { localStorage.setItem("evalq-theme", next); } } catch (e) { /* file:// may refuse */ }
      label();
    });
  }

  // ---- chart tooltips: the point's label, on hover, keyboard focus and touch
  var tip = null;
  function showTip(el) {
    if (!tip) { tip = document.createElement("div"); tip.className = "tooltip"; tip.setAttribute("role", "tooltip"); tip.id = "tooltip"; document.body.appendChild(tip); }
    tip.textContent = el.getAttribute("aria-label");
    var r = el.getBoundingClientRect();
    tip.hidden = false;
    var left = Math.min(window.scrollX + r.left + r.width / 2 + 8, window.scrollX + document.documentElement.clientWidth - tip.offsetWidth - 4);
    tip.style.left = Math.max(window.scrollX + 4, left) + "px";
    tip.style.top = (window.scrollY + r.top - tip.offsetHeight - 6) + "px";
  }
  function hideTip() { if (tip) { tip.hidden = true; } }
  document.querySelectorAll("svg .point").forEach(function (p) {
    p.addEventListener("focus", function () { showTip(p); });
    p.addEventListener("mouseenter", function () { showTip(p); });
    p.addEventListener("click", function () { showTip(p); });
    p.addEventListener("blur", hideTip);
    p.addEventListener("mouseleave", function () { if (document.activeElement !== p) { hideTip(); } });
  });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") { hideTip(); } });

  // ---- the table
  var scripts = document.querySelectorAll("script.rows");
  if (!scripts.length) { document.body.setAttribute("data-ready", "1"); return; }
  var tables = [];
  var columns = [];  // {id, label, type, index}
  var shownCols = {};  // id → true
  var sort = null;  // {col: id, dir: 1 | -1}
  var chosen = [];  // row keys, in the order chosen
  var byKey = {};
  var compareOpen = false;

  function el(id) { return document.getElementById(id); }

  function cellText(td, text) { td.appendChild(document.createTextNode(text)); }

  function link(href, text) { var a = document.createElement("a"); a.href = href; a.textContent = text; return a; }

  function renderCell(row, c, col) {
    var td = document.createElement("td");
    if (col.id === "model") {
      var box = document.createElement("input");
      box.type = "checkbox"; box.className = "choose"; box.checked = chosen.indexOf(row.key) !== -1;
      box.setAttribute("aria-label", "choose " + row.cells[0][1] + " " + row.variant + " to compare");
      box.addEventListener("change", function () { choose(row.key, box.checked); });
      td.appendChild(box); td.appendChild(document.createTextNode(" "));
      td.appendChild(link(c[3], c[1]));
      row.badges.forEach(function (b) {
        var s = document.createElement("span"); s.className = "badge"; s.textContent = b;
        td.appendChild(document.createTextNode(" ")); td.appendChild(s);
      });
      return td;
    }
    if (col.type === "text") { td.className = "text"; }
    if (c[3]) { td.appendChild(link(c[3], c[1])); } else { cellText(td, c[1]); }
    if (col.id === "status") {
      td.className = "status";
      if (c[2]) { var e = document.createElement("span"); e.className = "error"; e.title = c[2]; e.textContent = " " + c[2].slice(0, 80); td.appendChild(e); }
    } else if (c[2]) {
      var sm = document.createElement("small"); sm.textContent = " " + c[2]; td.appendChild(sm);
    }
    return td;
  }

  function renderRow(row) {
    var tr = document.createElement("tr");
    if (row.failed) { tr.className = "failed"; }
    if (chosen.indexOf(row.key) !== -1) { tr.className += " chosen"; }
    columns.forEach(function (col) { if (shownCols[col.id]) { tr.appendChild(renderCell(row, row.cells[col.index], col)); } });
    return tr;
  }

  function compare(type, dir, col) {
    return function (a, b) {
      var x = a.row.cells[col][0], y = b.row.cells[col][0];
      var xm = x === null || x === undefined, ym = y === null || y === undefined;
      if (xm || ym) { return xm === ym ? a.i - b.i : (xm ? 1 : -1); }  // missing values last, either way
      if (type === "text") { x = String(x).toLowerCase(); y = String(y).toLowerCase(); }
      return (x < y ? -1 : x > y ? 1 : a.i - b.i) * dir;
    };
  }

  function filters() {
    var v = function (id) { var e = el(id); return e ? e.value : ""; };
    var budget = v("f-budget");
    return { family: v("f-family"), variant: v("f-variant"), budget: budget === "" ? Infinity : parseFloat(budget),
             needle: v("f-search").trim().toLowerCase() };
  }

  function matches(row, f) {
    if (f.family && row.family !== f.family) { return false; }
    if (f.variant && row.variant !== f.variant) { return false; }
    if (f.budget !== Infinity && (row.fit === null || row.fit > f.budget)) { return false; }
    if (f.needle) {
      if (row.search === undefined) { row.search = row.cells.map(function (c) { return c[1] + " " + c[2]; }).join(" ").toLowerCase(); }
      if (row.search.indexOf(f.needle) === -1) { return false; }
    }
    return true;
  }

  function colById(id) { for (var i = 0; i < columns.length; i++) { if (columns[i].id === id) { return columns[i]; } } return null; }

  // every table's rows that match the view, in the view's order
  function viewRows(t, f) {
    var list = t.rows.map(function (row, i) { return { row: row, i: i }; }).filter(function (x) { return matches(x.row, f); });
    var col = sort && colById(sort.col);
    if (col) { list.sort(compare(col.type, sort.dir, col.index)); }
    return list.map(function (x) { return x.row; });
  }

  // ---- the view in the URL: #family=…&variant=…&budget=…&q=…&sort=avg:desc&cols=model,variant,…&chosen=…&compare=1
  function writeState() {
    var f = { family: el("f-family").value, variant: el("f-variant").value, budget: el("f-budget").value, q: el("f-search").value };
    var p = new URLSearchParams();
    Object.keys(f).forEach(function (k) { if (f[k]) { p.set(k, f[k]); } });
    if (sort) { p.set("sort", sort.col + ":" + (sort.dir === 1 ? "asc" : "desc")); }
    var ids = columns.filter(function (c) { return shownCols[c.id]; }).map(function (c) { return c.id; });
    var defaults = columns.filter(function (c) { return c.default; }).map(function (c) { return c.id; });
    if (ids.join(",") !== defaults.join(",")) { p.set("cols", ids.join(",")); }
    if (chosen.length) { p.set("chosen", chosen.join(",")); }
    if (compareOpen) { p.set("compare", "1"); }
    var hash = p.toString();
    if (hash === "" && location.hash.indexOf("=") === -1) { return; }  // the default view keeps an anchor (#g-…)
    if (("#" + hash) !== location.hash) {
      history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
    }
  }

  function readState() {
    var raw = location.hash.slice(1);
    if (raw.indexOf("=") === -1) { return; }  // an anchor (#g-…), not a view
    var p = new URLSearchParams(raw);
    [["family", "f-family"], ["variant", "f-variant"], ["budget", "f-budget"], ["q", "f-search"]].forEach(function (kv) {
      if (p.has(kv[0])) { el(kv[1]).value = p.get(kv[0]); }
    });
    if (p.has("sort")) {
      var s = p.get("sort").split(":");
      if (colById(s[0])) { sort = { col: s[0], dir: s[1] === "desc" ? -1 : 1 }; }
    }
    if (p.has("cols")) {
      shownCols = { model: true };
      p.get("cols").split(",").forEach(function (id) { if (colById(id)) { shownCols[id] = true; } });
    }
    if (p.has("chosen")) { chosen = p.get("chosen").split(",").filter(function (k) { return byKey[k]; }); }
    compareOpen = p.get("compare") === "1" && chosen.length > 1;
  }

  function render() {
    var f = filters(), shown = 0, total = 0;
    tables.forEach(function (t) {
      var list = viewRows(t, f);
      var body = document.createElement("tbody");
      list.slice(0, t.limit).forEach(function (row) { body.appendChild(renderRow(row)); });
      t.table.replaceChild(body, t.table.tBodies[0]);
      t.more.hidden = list.length <= t.limit;
      t.table.querySelectorAll("thead th").forEach(function (th) {
        var id = th.getAttribute("data-col");
        th.hidden = !shownCols[id];
        if (sort && sort.col === id) { th.setAttribute("aria-sort", sort.dir === 1 ? "ascending" : "descending"); } else { th.removeAttribute("aria-sort"); }
      });
      shown += list.length; total += t.rows.length;
    });
    var count = el("shown");
    if (count) { count.textContent = shown + " of " + total + " rows"; }
    document.querySelectorAll("#columns input[data-col]").forEach(function (box) { box.checked = !!shownCols[box.getAttribute("data-col")]; });
    el("compare-open").disabled = chosen.length < 2;
    el("compare-open").textContent = "Compare chosen rows (" + chosen.length + ")";
    el("compare-clear").disabled = chosen.length === 0;
    renderCompare();
    writeState();
  }

  function choose(key, on) {
    var at = chosen.indexOf(key);
    if (on && at === -1) { chosen.push(key); }
    if (!on && at !== -1) { chosen.splice(at, 1); }
    if (chosen.length < 2) { compareOpen = false; }
    render();
  }

  // ---- compare: every figure of the chosen rows, and each one's difference from the first
  var NUMBER = /^[+-]?\d+(\.\d+)?$/;
  function renderCompare() {
    var box = el("compare");
    box.hidden = !compareOpen;
    if (!compareOpen) { return; }
    var rows = chosen.map(function (k) { return byKey[k]; });
    var table = el("compare-table");
    table.textContent = "";
    var head = table.createTHead().insertRow();
    var corner = document.createElement("th"); corner.scope = "col"; corner.textContent = "figure"; head.appendChild(corner);
    rows.forEach(function (row) {
      var th = document.createElement("th"); th.scope = "col"; th.textContent = row.cells[0][1] + " · " + row.variant; head.appendChild(th);
    });
    var body = table.createTBody();
    columns.forEach(function (col) {
      if (col.id === "model") { return; }
      var tr = body.insertRow();
      var th = document.createElement("th"); th.scope = "row"; th.textContent = col.label; tr.appendChild(th);
      var first = rows[0].cells[col.index][1];
      rows.forEach(function (row, i) {
        var c = row.cells[col.index];
        var td = tr.insertCell();
        cellText(td, c[1]);
        if (c[2]) { var sm = document.createElement("small"); sm.textContent = " " + c[2]; td.appendChild(sm); }
        if (i > 0 && col.type === "num" && NUMBER.test(c[1]) && NUMBER.test(first)) {
          var decimals = (c[1].split(".")[1] || "").length;
          var d = parseFloat(c[1]) - parseFloat(first);
          var delta = document.createElement("div"); delta.className = "delta";
          delta.textContent = "Δ vs first " + (d >= 0 ? "+" : "") + d.toFixed(decimals);
          td.appendChild(delta);
        }
      });
    });
  }

  // ---- download this view: the rows that match it, in its order, with its columns, as shown
  function download(name, type, text) {
    var a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([text], { type: type }));
    a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 1000);
  }
  function viewRecords() {
    var f = filters(), cols = columns.filter(function (c) { return shownCols[c.id]; }), out = [];
    tables.forEach(function (t) {
      viewRows(t, f).forEach(function (row) { out.push({ group: t.title, cells: cols.map(function (c) { return row.cells[c.index]; }) }); });
    });
    return { cols: cols, rows: out };
  }
  function csvField(s) { s = String(s); return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }

  // ---- start
  var first = scripts[0];
  el(first.getAttribute("data-table")).querySelectorAll("thead th").forEach(function (th, i) {
    columns.push({ id: th.getAttribute("data-col"), label: th.textContent, type: th.getAttribute("data-type") || "text", index: i });
  });
  document.querySelectorAll("#columns input[data-col]").forEach(function (box) {
    var col = colById(box.getAttribute("data-col"));
    col.default = box.hasAttribute("data-default");
    if (col.default) { shownCols[col.id] = true; }
    if (col.id === "model") { box.disabled = true; }  // rows are named and chosen there
    box.addEventListener("change", function () { shownCols[col.id] = box.checked; render(); });
  });
  el("columns-default").addEventListener("click", function () {
    shownCols = {}; columns.forEach(function (c) { if (c.default) { shownCols[c.id] = true; } }); render();
  });
  scripts.forEach(function (s) {
    var table = el(s.getAttribute("data-table"));
    var wrap = table.parentElement;
    var heading = wrap.previousElementSibling.previousElementSibling;  // the group's h2
    var t = { table: table, rows: JSON.parse(s.textContent), limit: PAGE, more: wrap.nextElementSibling,
              title: heading ? heading.firstChild.textContent.trim() : "" };
    t.rows.forEach(function (row) { byKey[row.key] = row; });
    t.more.querySelector("button").addEventListener("click", function () { t.limit += PAGE; render(); });
    table.querySelectorAll("thead th").forEach(function (th) {
      th.querySelector("button").addEventListener("click", function () {
        var id = th.getAttribute("data-col");
        sort = { col: id, dir: sort && sort.col === id && sort.dir === 1 ? -1 : 1 };
        render();
      });
    });
    tables.push(t);
  });
  ["f-family", "f-variant", "f-budget", "f-search"].forEach(function (id) {
    var e = el(id);
    if (e) { e.addEventListener("input", render); e.addEventListener("change", render); }
  });
  el("compare-open").addEventListener("click", function () { compareOpen = true; render(); el("compare-title").focus(); });
  el("compare-clear").addEventListener("click", function () { chosen = []; compareOpen = false; render(); });
  el("view-csv").addEventListener("click", function () {
    var v = viewRecords(), several = tables.length > 1;
    var lines = [(several ? ["group"] : []).concat(v.cols.map(function (c) { return c.label; })).map(csvField).join(",")];
    v.rows.forEach(function (r) { lines.push((several ? [r.group] : []).concat(r.cells.map(function (c) { return c[1]; })).map(csvField).join(",")); });
    download("evalq-view.csv", "text/csv", lines.join("\n") + "\n");
  });
  el("view-json").addEventListener("click", function () {
    var v = viewRecords();
    var out = v.rows.map(function (r) {
      var o = { group: r.group };
      v.cols.forEach(function (c, i) { o[c.label] = { value: r.cells[i][0], text: r.cells[i][1] }; });
      return o;
    });
    download("evalq-view.json", "application/json", JSON.stringify({ view: location.hash, rows: out }, null, 1) + "\n");
  });
  window.addEventListener("hashchange", function () { readState(); render(); });
  readState();
  render();
  document.body.setAttribute("data-ready", "1");
}());
