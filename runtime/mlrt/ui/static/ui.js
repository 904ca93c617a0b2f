// mlrt UI: live fragments. An element with data-live="URL" is refreshed from URL every few seconds
// (only while the tab is visible) until an answer carries "X-Mlrt-Live: done".
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
          element.innerHTML = text;
          element.querySelectorAll("input[type=checkbox]").forEach(function (box) {
            if (ticked.indexOf(box.name + "=" + box.value) >= 0) box.checked = true;
          });
          element.dataset.liveUpdates = String(Number(element.dataset.liveUpdates || "0") + 1);
        }
      })
      .catch(function () { /* the next tick tries again */ })
      .finally(function () { element.dataset.liveBusy = "0"; });
  }

  function tick() {
    if (document.hidden) return;
    document.querySelectorAll("[data-live]").forEach(function (element) {
      if (element.dataset.liveDone !== "1") refresh(element);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { window.setInterval(tick, PERIOD_MS); });
})();
