// Progressive enhancement of the mailing compose page: the audience count follows the organiser's choices.
// Without JavaScript the page's "Count" button does the same.
(function () {
  var form = document.getElementById("compose");
  var out = document.getElementById("audience-count");
  if (!form || !out) return;
  var url = form.getAttribute("data-count-url"), timer = null;
  function refresh() {
    var params = new URLSearchParams();
    form.querySelectorAll("[data-audience]").forEach(function (el) {
      if (el.multiple) {
        Array.prototype.forEach.call(el.selectedOptions, function (o) { params.append(el.name, o.value); });
      } else if (el.value) { params.append(el.name, el.value); }
    });
    fetch(url + "?" + params.toString(), {cache: "no-store", credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) out.textContent = data.count.toLocaleString("en-GB"); })
      .catch(function () {});
  }
  form.addEventListener("change", function (e) { if (e.target.hasAttribute("data-audience")) refresh(); });
  form.addEventListener("input", function (e) {
    if (e.target.hasAttribute("data-audience")) { clearTimeout(timer); timer = setTimeout(refresh, 300); }
  });
})();
