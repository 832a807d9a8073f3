// Progressive enhancement: refresh the counts on the page now and then; without JavaScript they are as rendered.
// A file, not an inline script, so the gateway's Content-Security-Policy can forbid inline scripts.
(function () {
  var url = document.currentScript.getAttribute("data-counts-url");
  function refresh() {
    fetch(url, {cache: "no-store"}).then(function (r) { return r.ok ? r.json() : null; }).then(function (data) {
      if (!data) return;
      document.querySelectorAll("[data-count-for]").forEach(function (el) {
        var n = data.counts[el.getAttribute("data-count-for")] || 0;
        var text = n.toLocaleString("en-GB");
        if (el.textContent !== text) el.textContent = text;
      });
    }).catch(function () {});
  }
  setInterval(refresh, 15000);
})();
