// custodes dashboard: progressive enhancement only; every page works without it.
// No inline handlers, no innerHTML (the CSP requires Trusted Types for such sinks).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Ask before a state change (activate, roll back).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
  // Access matrix: load a JSON file into its text box (the file is read here, in the browser).
  document.querySelectorAll("input[type=file][data-fill]").forEach(function (input) {
    input.addEventListener("change", function () {
      var target = document.getElementById(input.getAttribute("data-fill"));
      var file = input.files && input.files[0];
      if (!target || !file) { return; }
      file.text().then(function (text) { target.value = text; });
    });
  });
});
