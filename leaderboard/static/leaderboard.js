// The evalq leaderboard's table: rows come as JSON (formatted by evalq), are sorted and
// filtered in memory, and only the first rows that match are put in the page, as text.
// No dependencies; works from file://.
(function () {
  "use strict";
  var PAGE = 200;
  var tables = [];

  function cellText(td, text) { td.appendChild(document.createTextNode(text)); }

  function renderRow(row) {
    var tr = document.createElement("tr");
    if (row.failed) { tr.className = "failed"; }
    row.cells.forEach(function (c, i) {
      var td = document.createElement("td");
      if (i === 0) {
        td.setAttribute("data-v", c[0]);
        var a = document.createElement("a");
        a.href = row.href; a.textContent = c[1]; td.appendChild(a);
        row.badges.forEach(function (b) {
          var s = document.createElement("span"); s.className = "badge"; s.textContent = b;
          td.appendChild(document.createTextNode(" ")); td.appendChild(s);
        });
      } else if (i === row.cells.length - 1) {
        td.className = "status"; cellText(td, c[1]);
        if (c[2]) { var e = document.createElement("span"); e.className = "error"; e.title = c[2]; e.textContent = " " + c[2].slice(0, 80); td.appendChild(e); }
      } else {
        cellText(td, c[1]);
        if (c[2]) { var sm = document.createElement("small"); sm.textContent = " " + c[2]; td.appendChild(sm); }
      }
      tr.appendChild(td);
    });
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
    var v = function (id) { var el = document.getElementById(id); return el ? el.value : ""; };
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

  function render() {
    var f = filters(), shown = 0, total = 0;
    tables.forEach(function (t) {
      var list = t.rows.map(function (row, i) { return { row: row, i: i }; }).filter(function (x) { return matches(x.row, f); });
      if (t.sort) { list.sort(compare(t.sort.type, t.sort.dir, t.sort.col)); }
      var body = document.createElement("tbody");
      list.slice(0, t.limit).forEach(function (x) { body.appendChild(renderRow(x.row)); });
      t.table.replaceChild(body, t.table.tBodies[0]);
      t.more.hidden = list.length <= t.limit;
      shown += list.length; total += t.rows.length;
    });
    var el = document.getElementById("shown");
    if (el) { el.textContent = shown + " of " + total + " rows"; }
  }

  document.querySelectorAll("script.rows").forEach(function (s) {
    var table = document.getElementById(s.getAttribute("data-table"));
    var t = { table: table, rows: JSON.parse(s.textContent), sort: null, limit: PAGE,
              more: table.nextElementSibling };
    t.more.querySelector("button").addEventListener("click", function () { t.limit += PAGE; render(); });
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.addEventListener("click", function () {
        var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
        t.sort = { col: col, dir: dir, type: th.getAttribute("data-type") || "text" };
        render();
      });
    });
    tables.push(t);
  });
  ["f-family", "f-variant", "f-budget", "f-search"].forEach(function (id) {
    var el = document.getElementById(id);
    if (el) { el.addEventListener("input", render); el.addEventListener("change", render); }
  });
  render();
  document.body.setAttribute("data-ready", "1");
}());
