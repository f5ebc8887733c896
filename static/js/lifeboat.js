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

// The navigation folds behind a "Menu" button on narrow screens; the button is shown by the
// style sheet only there, and only once this script runs (without it the links wrap).
(function () {
  document.addEventListener("DOMContentLoaded", function () {
    const button = document.querySelector(".nav-toggle");
    const nav = document.getElementById("site-nav");
    if (!button || !nav) return;
    button.hidden = false;
    document.documentElement.classList.add("js");
    button.addEventListener("click", function () {
      const open = button.getAttribute("aria-expanded") !== "true";
      button.setAttribute("aria-expanded", String(open));
      nav.classList.toggle("open", open);
    });
  });
})();

// An htmx request that fails never fails silently: the answer's own message (the error
// page's #error-message, or a short plain-text body) is shown in the alert region at the top,
// or, when the server could not be reached, a sentence saying so.
(function () {
  const TITLES = {
    400: "The request was refused.",
    403: "Not allowed.",
    404: "Not found.",
    405: "Not possible this way.",
    409: "Refused.",
    413: "Too large.",
    429: "Too many requests.",
  };

  function messageOf(xhr) {
    const text = (xhr.responseText || "").trim();
    if (!text) return "";
    const type = xhr.getResponseHeader("Content-Type") || "";
    if (type.includes("html")) {
      const doc = new DOMParser().parseFromString(text, "text/html");
      const own = doc.querySelector("#error-message, .form-errors, .messages");
      return own ? own.textContent.trim() : "";
    }
    if (type.includes("json")) {
      try {
        const body = JSON.parse(text);
        if (body.detail) return String(body.detail);
        return Object.entries(body).map(([k, v]) => `${k}: ${[].concat(v).join(" ")}`).join(" ");
      } catch (e) {
        return "";
      }
    }
    return text.length <= 300 ? text : "";
  }

  function show(title, text) {
    const box = document.getElementById("htmx-error");
    if (!box) return;
    document.getElementById("htmx-error-title").textContent = title;
    document.getElementById("htmx-error-text").textContent = text;
    box.hidden = false;
  }

  document.addEventListener("htmx:responseError", function (event) {
    const xhr = event.detail.xhr;
    const title = TITLES[xhr.status] || `The server failed (${xhr.status}).`;
    show(title, messageOf(xhr) || "Nothing was changed; reload the page and try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    show("Lifeboat could not be reached.", "Check the connection; nothing was sent.");
  });
  document.addEventListener("click", function (event) {
    if (event.target && event.target.id === "htmx-error-close") {
      document.getElementById("htmx-error").hidden = true;
    }
  });
})();

// A table, tab bar or chart that scrolls sideways (narrow screens) takes the keyboard focus, so it
// can be scrolled without a mouse.
(function () {
  function focusable(root) {
    root.querySelectorAll(".table-scroll, table.list, .tabs, .chart .plot").forEach(function (el) {
      if (el.scrollWidth > el.clientWidth + 1) {
        if (!el.hasAttribute("tabindex")) el.setAttribute("tabindex", "0");
      } else if (el.getAttribute("tabindex") === "0") {
        el.removeAttribute("tabindex");
      }
    });
  }
  document.addEventListener("DOMContentLoaded", function () { focusable(document); });
  document.addEventListener("htmx:afterSettle", function () { focusable(document); });
  window.addEventListener("resize", function () { focusable(document); });
})();
