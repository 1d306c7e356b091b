/* cloudmgr portal: behaviour on top of htmx. */
(function () {
  "use strict";

  // Keep the console log scrolled to its end while the reader is there; leave it alone
  // when they scrolled up to read something.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var el = event.detail.target;
    if (el && el.id === "console-log") {
      el.dataset.stick = String(el.scrollHeight - el.scrollTop - el.clientHeight < 24 || !el.dataset.seen);
      el.dataset.seen = "1";
    }
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var el = event.detail.target;
    if (el && el.id === "console-log" && el.dataset.stick === "true") {
      el.scrollTop = el.scrollHeight;
    }
  });

  // Show when live updates fail (server down, network gone), and when they work again.
  function setStale(stale) {
    document.querySelectorAll(".live-hint").forEach(function (hint) {
      hint.classList.toggle("stale", stale);
      hint.lastChild.textContent = stale ? " reconnecting" : " live";
    });
  }
  document.addEventListener("htmx:sendError", function () { setStale(true); });
  document.addEventListener("htmx:responseError", function () { setStale(true); });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) setStale(false);
  });
})();
