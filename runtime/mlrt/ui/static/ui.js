// mlrt UI: live fragments. An element with data-live="URL" is refreshed from URL every few seconds
// (only while the tab is visible) until an answer carries "X-Mlrt-Live: done". Logs stay scrolled to their end.
(function () {
  "use strict";
  var PERIOD_MS = 2000;

  function refresh(element) {
    if (element.dataset.liveBusy === "1") return;
    element.dataset.liveBusy = "1";
    fetch(element.dataset.live, { headers: { "X-Mlrt-Fragment": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        if (!response.ok) return null;
        if (response.headers.get("X-Mlrt-Live") === "done") element.dataset.liveDone = "1";
        return response.text();
      })
      .then(function (text) {
        if (text !== null && text !== undefined) {
          // Ticked boxes (runs picked for comparison) stay ticked across a refresh.
          var ticked = Array.prototype.map.call(element.querySelectorAll("input[type=checkbox]:checked"),
            function (box) { return box.name + "=" + box.value; });
          var restore = keepScroll(element);
          element.innerHTML = text;
          restore();
          element.querySelectorAll("input[type=checkbox]").forEach(function (box) {
            if (ticked.indexOf(box.name + "=" + box.value) >= 0) box.checked = true;
          });
          element.dataset.liveUpdates = String(Number(element.dataset.liveUpdates || "0") + 1);
        }
      })
      .catch(function () { /* the next tick tries again */ })
      .finally(function () { element.dataset.liveBusy = "0"; });
  }

  function keepScroll(element) {
    // A log stays at its end when it was there (it was scrolled back: it stays where it was).
    var places = {};
    element.querySelectorAll("pre.log").forEach(function (pre, index) {
      places[index] = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4 ? -1 : pre.scrollTop;
    });
    return function () {
      element.querySelectorAll("pre.log").forEach(function (pre, index) {
        var place = index in places ? places[index] : -1;
        pre.scrollTop = place < 0 ? pre.scrollHeight : place;
      });
    };
  }

  function tick() {
    if (document.hidden) return;
    document.querySelectorAll("[data-live]").forEach(function (element) {
      // A chart zoomed in (static/charts.js) keeps its part as it is until zoomed out.
      if (element.dataset.liveDone !== "1" && !element.querySelector("svg[data-zoomed='1']")) refresh(element);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("pre.log").forEach(function (pre) { pre.scrollTop = pre.scrollHeight; });
    window.setInterval(tick, PERIOD_MS);
  });
})();
