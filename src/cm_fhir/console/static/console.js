// cm-fhir console. Part of cm-fhir (Apache-2.0); no third-party code.
// Panels marked data-refresh="<seconds>" reload their own region from the same URL.
(function () {
  "use strict";
  function refresh(region) {
    var seconds = parseInt(region.getAttribute("data-refresh"), 10) || 30;
    window.setTimeout(function () {
      fetch(window.location.pathname, { credentials: "same-origin", headers: { "X-Console-Fragment": region.id } })
        .then(function (response) {
          if (response.redirected || !response.ok) { window.location.reload(); return null; }
          return response.text();
        })
        .then(function (html) {
          if (html === null) { return; }
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById(region.id);
          if (fresh) { region.replaceWith(fresh); refresh(fresh); }
        })
        .catch(function () { refresh(region); });
    }, seconds * 1000);
  }
  // Buttons with data-confirm ask before their form is sent.
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var question = button && button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
  });
})();
