// mlrt UI: zoom on the server-drawn charts. Drag across an <svg class="mlrt-chart" data-src=URL> to ask
// URL&x0=..&x1=.. for that x-range (the server reads and thins only that window) and swap the chart;
// double-click to go back to the whole series. Written here, no library.
(function () {
  "use strict";
  var drag = null;

  function chartOf(target) {
    var svg = target.closest ? target.closest("svg.mlrt-chart[data-src]") : null;
    return svg;
  }

  function svgX(svg, event) {
    var point = svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    return point.matrixTransform(svg.getScreenCTM().inverse()).x;
  }

  function dataX(svg, x) {
    var left = Number(svg.dataset.plotLeft), width = Number(svg.dataset.plotWidth);
    var x0 = Number(svg.dataset.x0), x1 = Number(svg.dataset.x1);
    var f = Math.min(Math.max((x - left) / width, 0), 1);
    return x0 + f * (x1 - x0);
  }

  function load(svg, x0, x1) {
    var url = svg.dataset.src + (x0 === null ? "" : "&x0=" + encodeURIComponent(x0) + "&x1=" + encodeURIComponent(x1));
    svg.classList.add("loading");
    fetch(url, { headers: { "X-Mlrt-Fragment": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (text === null) { svg.classList.remove("loading"); return; }
        var holder = document.createElement("div");
        holder.innerHTML = text;
        var fresh = holder.querySelector("svg");
        if (fresh) fresh.dataset.zoomed = x0 === null ? "0" : "1";  // ui.js leaves a zoomed chart's part be
        if (fresh) svg.replaceWith(fresh); else svg.classList.remove("loading");
      })
      .catch(function () { svg.classList.remove("loading"); });
  }

  document.addEventListener("mousedown", function (event) {
    var svg = chartOf(event.target);
    if (!svg || event.button !== 0) return;
    event.preventDefault();
    var x = svgX(svg, event);
    var band = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    band.setAttribute("class", "zoom-band");
    band.setAttribute("y", "0");
    band.setAttribute("height", svg.viewBox.baseVal.height);
    band.setAttribute("fill", "rgba(9,105,218,.15)");
    band.setAttribute("x", x);
    band.setAttribute("width", "0");
    svg.appendChild(band);
    drag = { svg: svg, start: x, band: band };
  });

  document.addEventListener("mousemove", function (event) {
    if (!drag) return;
    var x = svgX(drag.svg, event);
    drag.band.setAttribute("x", Math.min(x, drag.start));
    drag.band.setAttribute("width", Math.abs(x - drag.start));
  });

  document.addEventListener("mouseup", function (event) {
    if (!drag) return;
    var d = drag;
    drag = null;
    d.band.remove();
    var end = svgX(d.svg, event);
    if (Math.abs(end - d.start) < 4) return;  // a click, not a drag
    var a = dataX(d.svg, Math.min(d.start, end)), b = dataX(d.svg, Math.max(d.start, end));
    if (b > a) load(d.svg, a, b);
  });

  document.addEventListener("dblclick", function (event) {
    var svg = chartOf(event.target);
    if (svg) load(svg, null, null);
  });
})();
