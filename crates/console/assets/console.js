// Slipway console enhancements (the pages work without them): times in the reader's zone,
// copy buttons, log search, and the tab's icon following the pipeline's status.
(function () {
  "use strict";
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.textContent = d.toLocaleString(); t.title = t.getAttribute("datetime"); }
    });
  }
  function favicon() {
    var g = document.querySelector("[data-status]");
    var icon = document.getElementById("favicon");
    if (g && icon) {
      icon.href = "/-/console/favicon/" + encodeURIComponent(g.getAttribute("data-status")) + ".svg";
    }
  }
  function filterLog(input) {
    var log = document.getElementById(input.getAttribute("data-filter"));
    if (!log) return;
    var q = input.value.toLowerCase();
    log.querySelectorAll(".line").forEach(function (l) {
      l.classList.toggle("hidden", q !== "" && l.textContent.toLowerCase().indexOf(q) < 0);
    });
  }
  document.addEventListener("click", function (e) {
    var b = e.target.closest("button.copy");
    if (!b) return;
    var src = document.getElementById(b.getAttribute("data-copy"));
    if (!src) return;
    src.select();
    if (navigator.clipboard) { navigator.clipboard.writeText(src.value); } else { document.execCommand("copy"); }
    b.textContent = "Copied";
    setTimeout(function () { b.textContent = "Copy"; }, 1500);
  });
  document.addEventListener("input", function (e) {
    if (e.target.matches("input[data-filter]")) filterLog(e.target);
  });
  document.addEventListener("DOMContentLoaded", function () { localTimes(document); favicon(); });
  document.addEventListener("htmx:afterSwap", function (e) {
    localTimes(e.target.parentNode || document);
    favicon();
    var s = document.querySelector("input[data-filter]");
    if (s && s.value) filterLog(s);
  });
})();
