// Progressive enhancement only: every page works without this file, except live updates.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text; // textContent: never parse log text as HTML
    return node;
  }
  function clock(ts) {
    var d = new Date(ts);
    if (isNaN(d)) return "";
    return d.toISOString().slice(11, 23);
  }
  var ERR = /\b(error|errors|failed|failure|traceback|exception|fatal|not found|no such)\b/i;

  // Build log: append lines live while the deployment is building.
  var build = document.getElementById("build-log");
  if (build && build.dataset.live === "true" && window.EventSource) {
    var url = build.dataset.events + "?cursor=" + encodeURIComponent(build.dataset.cursor || "") +
      "&seen=" + encodeURIComponent(build.dataset.seen || "0");
    var source = new EventSource(url);
    var stages = build.querySelector(".stages");
    source.onmessage = function (ev) {
      var line = JSON.parse(ev.data);
      var empty = document.getElementById("build-empty");
      if (empty) empty.remove();
      var all = stages.querySelectorAll("details.stage");
      var last = all[all.length - 1];
      if (!last || last.dataset.stage !== line.stage) {
        if (last) last.open = false;
        last = el("details", "stage");
        last.dataset.stage = line.stage;
        last.open = true;
        var summary = el("summary");
        summary.appendChild(el("span", "stage-name", line.stage));
        summary.appendChild(document.createTextNode(" "));
        summary.appendChild(el("span", "muted", "started " + clock(line.timestamp)));
        last.appendChild(summary);
        last.appendChild(el("ol", "log"));
        stages.appendChild(last);
      }
      var li = el("li", ERR.test(line.message) ? "err" : "");
      var time = el("time", "", clock(line.timestamp));
      time.setAttribute("datetime", line.timestamp);
      li.appendChild(time);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", "msg", line.message));
      last.querySelector("ol").appendChild(li);
    };
    source.addEventListener("end", function () {
      source.close();
      window.location.reload(); // the final status, failing stage and actions come from the server
    });
  }

  // Runtime logs: follow live, newest first.
  var follow = document.getElementById("follow");
  var runtime = document.getElementById("runtime-logs");
  if (follow && runtime && window.EventSource) {
    var live = null;
    follow.addEventListener("click", function () {
      if (live) {
        live.close(); live = null; delete follow.dataset.state;
        follow.setAttribute("aria-pressed", "false"); follow.textContent = "Follow live";
        return;
      }
      var form = runtime.querySelector("form");
      var params = new URLSearchParams();
      params.set("stream", form.elements.stream.value);
      params.set("q", form.elements.q.value);
      live = new EventSource(runtime.dataset.events + "?" + params.toString());
      follow.setAttribute("aria-pressed", "true"); follow.textContent = "Stop following";
      live.addEventListener("ready", function () { follow.dataset.state = "ready"; });
      var body = document.getElementById("runtime-lines");
      live.onmessage = function (ev) {
        var line = JSON.parse(ev.data);
        var empty = document.getElementById("runtime-empty");
        if (empty) empty.remove();
        var tr = el("tr", "stream-" + line.stream);
        var td = el("td", "mono nowrap"); td.appendChild(el("time", "", clock(line.timestamp))); tr.appendChild(td);
        tr.appendChild(el("td", "", line.stream));
        tr.appendChild(el("td", "mono wide", line.instance));
        tr.appendChild(el("td", "msg", line.message));
        body.insertBefore(tr, body.firstChild);
      };
    });
  }
})();
