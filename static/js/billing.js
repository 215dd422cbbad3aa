/* The billing pages' few behaviours; every page works without them. */
(function () {
  "use strict";

  // Copy buttons (a generation's full id): shown only where this script runs.
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    document.body.removeChild(area);
    return Promise.resolve();
  }

  document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      copyText(button.dataset.copy).then(function () {
        button.classList.add("copied");
        button.setAttribute("title", "Copied");
        setTimeout(function () { button.classList.remove("copied"); }, 1500);
      });
    });
  });

  // The statement page's Print button (the browser's own print works without it).
  document.querySelectorAll("button.print-button").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  });

  // A period preset fills the date inputs with its range; editing a date makes it Custom.
  document.querySelectorAll("select[name=preset]").forEach(function (select) {
    var form = select.form;
    var from = form.querySelector("input[name=from]");
    var to = form.querySelector("input[name=to]");
    if (!from || !to) { return; }
    select.addEventListener("change", function () {
      var option = select.options[select.selectedIndex];
      if (option.dataset.from) {
        from.value = option.dataset.from;
        to.value = option.dataset.to;
      }
    });
    [from, to].forEach(function (input) {
      input.addEventListener("change", function () { select.value = ""; });
    });
  });
})();
