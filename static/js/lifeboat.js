// Progressive enhancement only: every page works without this file.
// Elements marked data-when="field:value1,value2" are shown only while the named form field
// (a select, a checked radio or a checked checkbox, whose value is "on") has one of the values.
(function () {
  function currentValue(form, name) {
    const checked = form.querySelector(`[name="${name}"]:checked`);
    if (checked) return checked.value;
    const select = form.querySelector(`select[name="${name}"]`);
    return select ? select.value : "";
  }

  function apply(root) {
    root.querySelectorAll("[data-when]").forEach(function (el) {
      const form = el.closest("form");
      if (!form) return;
      const [name, values] = el.dataset.when.split(":");
      const show = values.split(",").includes(currentValue(form, name));
      // Never hide a field that carries an error message.
      el.hidden = !show && !el.querySelector(".field-error");
    });
  }

  document.addEventListener("change", function (event) {
    const form = event.target.closest && event.target.closest("form");
    if (form) apply(form);
  });
  document.addEventListener("DOMContentLoaded", function () { apply(document); });
  document.addEventListener("htmx:afterSettle", function () { apply(document); });
})();
