/* sms-replies dashboard: reads the analytics API, draws with the vendored uPlot.
 * Page parameters (query string): since, until, tz, campaign, bucket, refresh (seconds, 0: off).
 * API token: asked for once when the API answers 401, kept in this browser's localStorage for
 * this origin only, sent as "Authorization: Bearer"; "#token=..." in the URL is taken once and
 * removed from the address bar (a fragment never reaches the server or its logs).
 * Every figure shown is also in the DOM as text (data-testid attributes) for tests and copy-paste.
 * Texts coming from replies (keywords, campaign names) are only ever set with textContent.
 * Times: 24-hour, in the query's zone (the "tz" the API resolved), never the browser's zone or
 * locale: the range, the campaign windows, the status line, the time axes and the cursor.
 * Count axes tick at whole numbers only. Each chart's tick labels are also in the DOM
 * (data-x-ticks, data-y-ticks: JSON arrays), as drawn. */
(function () {
  "use strict";

  var page = new URLSearchParams(window.location.search);
  var API = new URL("../api/", window.location.href);
  var DEFAULT_REFRESH = 30;
  var charts = {};
  var timer = null;
  var TOKEN_KEY = "sms-replies-api-token";
  var memoryToken = null;  // when localStorage is disabled
  var zone = null;  // the query's zone, as the API resolved it (set by each summary)
  var formats = {};

  function storedToken() {
    try { return window.localStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  function keepToken(value) {
    try {
      if (value) window.localStorage.setItem(TOKEN_KEY, value);
      else window.localStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: the token lasts as long as the page */ }
    memoryToken = value || null;
    byId("forget-token").hidden = !value;
  }

  function token() { return storedToken() || memoryToken; }

  function AuthNeeded(message) { this.message = message; }

  function param(name) {
    var v = page.get(name);
    return v === null || v.trim() === "" ? null : v.trim();
  }

  function apiUrl(path, params) {
    var url = new URL(path, API);
    Object.keys(params).forEach(function (k) {
      if (params[k] !== null && params[k] !== undefined && params[k] !== "") {
        url.searchParams.set(k, params[k]);
      }
    });
    return url;
  }

  function getJson(path, params) {
    var headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    return fetch(apiUrl(path, params), { headers: headers, credentials: "omit" }).then(
      function (r) {
        return r.json().then(function (body) {
          if (r.status === 401) throw new AuthNeeded(body && body.message ? body.message : "");
          if (!r.ok) {
            var where = body && body.parameter ? " (" + body.parameter + ")" : "";
            throw new Error((body && body.message ? body.message : r.statusText) + where);
          }
          return body;
        });
      }
    );
  }

  function byId(id) { return document.getElementById(id); }

  function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%"; }
  function num(v) { return v === null || v === undefined ? "–" : String(v); }
  function seconds(v) { return v === null || v === undefined ? "–" : v.toFixed(1); }

  function setCell(testid, text, value) {
    var el = document.querySelector('[data-testid="' + testid + '"]');
    el.textContent = text;
    el.setAttribute("data-value", value === null || value === undefined ? "" : String(value));
  }

  function cell(row, text, testid) {
    var td = document.createElement("td");
    td.textContent = text;
    if (testid) td.setAttribute("data-testid", testid);
    row.appendChild(td);
    return td;
  }

  function bar(row, fraction, cls) {
    var td = document.createElement("td");
    td.style.width = "35%";
    var div = document.createElement("div");
    div.className = "bar" + (cls ? " " + cls : "");
    div.style.width = Math.max(0, Math.min(1, fraction || 0)) * 100 + "%";
    td.appendChild(div);
    row.appendChild(td);
  }

  // Fields of an instant in a zone, 24-hour, zero-padded: {year, month, day, hour, minute, second}.
  function zoneParts(ms, tz) {
    var format = formats[tz];
    if (!format) {
      format = formats[tz] = new Intl.DateTimeFormat("en-US", {
        timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit"
      });
    }
    var parts = {};
    format.formatToParts(new Date(ms)).forEach(function (p) { parts[p.type] = p.value; });
    if (parts.hour === "24") parts.hour = "00";  // engines that still write midnight as 24
    return parts;
  }

  function day(p) { return p.year + "-" + p.month + "-" + p.day; }
  function dateTime(ms, tz) { var p = zoneParts(ms, tz); return day(p) + " " + p.hour + ":" + p.minute; }
  function clock(ms, tz) { var p = zoneParts(ms, tz); return p.hour + ":" + p.minute + ":" + p.second; }
  function shortTime(iso) { return dateTime(Date.parse(iso), zone); }

  // x-axis labels: "HH:MM", with the date under the first tick and under each new day; days
  // alone when ticks are a day or more apart.
  function timeTicks(el, tz) {
    return function (u, splits, axisIdx, space, incr) {
      var previous = null;
      var labels = splits.map(function (ts) {
        var p = zoneParts(ts * 1000, tz);
        var label = incr >= 86400 ? day(p)
          : p.hour + ":" + p.minute + (day(p) !== previous ? "\n" + day(p) : "");
        previous = day(p);
        return label;
      });
      el.setAttribute("data-x-ticks", JSON.stringify(labels));
      return labels;
    };
  }

  // Count axes: whole-number steps, from 0.
  var COUNT_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2.5e3, 5e3, 1e4, 2e4,
    2.5e4, 5e4, 1e5, 2e5, 2.5e5, 5e5, 1e6, 2e6, 2.5e6, 5e6, 1e7, 2e7, 5e7, 1e8];

  function countScale() {
    return {
      range: function (u, min, max) {
        var top = Math.max(1, Math.ceil(max || 0));
        return [0, top + Math.max(1, Math.ceil(top * 0.05))];
      }
    };
  }

  function countAxis(el) {
    return {
      incrs: COUNT_INCRS,
      values: function (u, splits) {
        var labels = splits.map(function (v) { return String(Math.round(v)); });
        el.setAttribute("data-y-ticks", JSON.stringify(labels));
        return labels;
      }
    };
  }

  function renderSummary(s) {
    zone = s.tz;
    var t = s.totals;
    setCell("summary-replies", num(t.replies), t.replies);
    setCell("summary-senders", num(t.senders), t.senders);
    setCell("summary-stops", num(t.stops), t.stops);
    setCell("summary-stop-share", pct(t.stop_share), t.stop_share);
    setCell("summary-multipart-share", pct(t.multipart_share), t.multipart_share);
    setCell("summary-incomplete-share", pct(t.incomplete_share), t.incomplete_share);
    setCell(
      "summary-median-assembly",
      s.median_assembly_available ? seconds(t.median_assembly_seconds) : "n/a",
      t.median_assembly_seconds
    );
    byId("range").textContent =
      shortTime(s.start) + " → " + shortTime(s.end) + " (" + s.tz + ")" +
      (s.campaign ? " · campaign " + s.campaign : "");
    var body = byId("keywords");
    body.replaceChildren();
    var max = s.keywords.reduce(function (m, k) { return Math.max(m, k.replies); }, 0);
    s.keywords.forEach(function (k) {
      var row = document.createElement("tr");
      row.setAttribute("data-testid", "keyword-row");
      row.setAttribute("data-keyword", k.keyword);
      cell(row, k.keyword, "keyword-name");
      cell(row, String(k.replies), "keyword-count");
      cell(row, pct(k.share), "keyword-share");
      bar(row, max ? k.replies / max : 0, k.keyword === "STOP" ? "stop" : "");
      body.appendChild(row);
    });
    if (!s.keywords.length) emptyRow(body, 4, "no keyword in this range");
  }

  function emptyRow(body, span, text) {
    var row = document.createElement("tr");
    var td = cell(row, text);
    td.colSpan = span;
    td.className = "empty";
    body.appendChild(row);
  }

  function renderCampaigns(data) {
    var body = byId("campaigns");
    body.replaceChildren();
    var select = byId("f-campaign");
    var chosen = param("campaign");
    while (select.options.length > 1) select.remove(1);
    var max = data.campaigns.reduce(function (m, c) { return Math.max(m, c.stats.replies); }, 0);
    data.campaigns.forEach(function (c) {
      var k = c.campaign;
      var option = document.createElement("option");
      option.value = k.name;
      option.textContent = k.name;
      option.selected = k.name === chosen;
      select.appendChild(option);
      var row = document.createElement("tr");
      row.setAttribute("data-testid", "campaign-row");
      row.setAttribute("data-campaign", k.name);
      cell(row, k.name, "campaign-name");
      cell(row, k.recipient || "short number");
      cell(row, shortTime(k.start) + " → " + shortTime(k.end));
      cell(row, num(k.delivered), "campaign-delivered");
      cell(row, String(c.stats.replies), "campaign-replies");
      cell(row, String(c.stats.stops), "campaign-stops");
      cell(row, pct(c.reply_rate), "campaign-reply-rate");
      cell(row, pct(c.opt_out_rate), "campaign-opt-out-rate");
      bar(row, max ? c.stats.replies / max : 0);
      body.appendChild(row);
    });
    if (!data.campaigns.length) emptyRow(body, 9, "no campaign declared");
  }

  function chart(id, title, series, data, tz, opts) {
    var el = byId(id);
    var width = Math.max(300, el.clientWidth || 600);
    if (charts[id]) charts[id].destroy();
    el.replaceChildren();
    charts[id] = new uPlot(
      {
        title: title,
        width: width,
        height: 220,
        tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), tz); },
        scales: { x: { time: true }, y: opts && opts.y ? opts.y : countScale() },
        axes: [
          { values: timeTicks(el, tz), space: 60 },
          opts && opts.yAxis ? opts.yAxis : countAxis(el)
        ],
        series: [{
          value: function (u, ts) { return ts === null || ts === undefined ? "–" : dateTime(ts * 1000, tz); }
        }].concat(series)
      },
      data,
      el
    );
    el.setAttribute("data-points", String(data[0].length));
  }

  function renderTimeseries(ts) {
    var xs = ts.buckets.map(function (iso) { return Date.parse(iso) / 1000; });
    var points = ts.series.length ? ts.series[0].points : [];
    function col(name) { return points.map(function (p) { return p[name]; }); }
    var shares = points.map(function (p) {
      return p.stop_share === null ? null : p.stop_share * 100;
    });
    chart("chart-replies", "Replies per " + ts.bucket, [
      { label: "replies", stroke: "#2563eb", fill: "rgba(37,99,235,0.12)", width: 2 },
      { label: "STOPs", stroke: "#dc2626", width: 2 }
    ], [xs, col("replies"), col("stops")], ts.tz);
    chart("chart-stop-share", "STOP share per " + ts.bucket + " (%)", [
      { label: "STOP share %", stroke: "#dc2626", width: 2, spanGaps: false,
        points: { show: true } }
    ], [xs, shares], ts.tz, { y: { range: [0, 100] }, yAxis: {} });
    chart("chart-health", "Reassembly per " + ts.bucket, [
      { label: "multipart", stroke: "#2563eb", width: 2 },
      { label: "incomplete", stroke: "#d97706", width: 2 }
    ], [xs, col("multipart"), col("incomplete")], ts.tz);
  }

  function rangeParams() {
    return { since: param("since"), until: param("until"), tz: param("tz"),
             campaign: param("campaign") };
  }

  function refresh() {
    var status = byId("status");
    status.setAttribute("data-state", "loading");
    var base = rangeParams();
    return Promise.all([
      getJson("summary", Object.assign({ top: 10 }, base)),
      getJson("campaigns", { tz: base.tz })
    ])
      .then(function (results) {
        var s = results[0];
        renderSummary(s);
        renderCampaigns(results[1]);
        var hours = (Date.parse(s.end) - Date.parse(s.start)) / 3.6e6;
        var bucket = param("bucket") || (hours <= 72 ? "hour" : "day");
        // The resolved bounds, so that the series covers exactly the summary's range.
        return getJson("timeseries", {
          since: s.start, until: s.end, tz: s.tz, campaign: base.campaign, bucket: bucket
        });
      })
      .then(function (ts) {
        renderTimeseries(ts);
        byId("error").hidden = true;
        status.textContent = "ok";
        status.setAttribute("data-state", "ok");
        byId("updated").textContent = clock(Date.now(), zone);
      })
      .catch(function (err) {
        if (err instanceof AuthNeeded) {
          askForToken(token() ? "this token was refused" : "");
          status.textContent = "token needed";
          status.setAttribute("data-state", "auth");
          return;
        }
        var box = byId("error");
        box.textContent = "Could not load the statistics: " + err.message;
        box.hidden = false;
        status.textContent = "error";
        status.setAttribute("data-state", "error");
      });
  }

  function askForToken(message) {
    byId("auth-message").textContent = message;
    byId("auth").hidden = false;
    byId("f-token").focus();
  }

  function tokenFromFragment() {
    var hash = window.location.hash;
    if (hash.indexOf("#token=") !== 0) return;
    keepToken(decodeURIComponent(hash.slice("#token=".length)));
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  function init() {
    tokenFromFragment();
    byId("forget-token").hidden = !token();
    byId("auth").addEventListener("submit", function (e) {
      e.preventDefault();
      var value = byId("f-token").value.trim();
      if (!value) return;
      keepToken(value);
      byId("f-token").value = "";
      byId("auth").hidden = true;
      refresh();
    });
    byId("forget-token").addEventListener("click", function () {
      keepToken(null);
      window.location.reload();
    });
    ["since", "until", "tz", "bucket", "refresh"].forEach(function (name) {
      var v = param(name);
      if (v !== null) byId("f-" + name).value = v;
    });
    byId("filters").addEventListener("submit", function (e) {
      // Drop empty fields from the query string.
      e.preventDefault();
      var q = new URLSearchParams();
      new FormData(e.target).forEach(function (v, k) { if (String(v).trim()) q.set(k, v); });
      window.location.search = q.toString();
    });
    var every = param("refresh") === null ? DEFAULT_REFRESH : Number(param("refresh"));
    refresh();
    if (every > 0) timer = window.setInterval(refresh, every * 1000);
    window.addEventListener("resize", function () {
      Object.keys(charts).forEach(function (id) {
        var el = byId(id);
        charts[id].setSize({ width: Math.max(300, el.clientWidth), height: 220 });
      });
    });
  }

  init();
})();
