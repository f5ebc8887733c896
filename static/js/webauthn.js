// Security keys (WebAuthn): the browser's ceremony between two JSON requests to Lifeboat.
// A button marked data-webauthn="register" or "sign-in" asks its data-options URL for the
// options, lets the browser talk to the key, sends the answer to data-complete and follows
// the redirect it gets; a refusal is written into the element named by data-status.
(function () {
  function fromB64u(text) {
    let s = text.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    const bin = atob(s);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }

  function toB64u(buffer) {
    let s = "";
    for (const b of new Uint8Array(buffer)) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function csrfToken() {
    return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body || {}),
    });
    const data = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      throw new Error(Object.values(data).flat().join(" ") || "The request failed.");
    }
    return data;
  }

  // The credential as py_webauthn reads it: its binary parts in base64url.
  function asJson(credential) {
    const r = credential.response;
    const out = {
      id: credential.id,
      rawId: toB64u(credential.rawId),
      type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: toB64u(r.clientDataJSON) },
    };
    if (r.attestationObject) {
      out.response.attestationObject = toB64u(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = toB64u(r.authenticatorData);
      out.response.signature = toB64u(r.signature);
      if (r.userHandle) out.response.userHandle = toB64u(r.userHandle);
    }
    return out;
  }

  async function register(el) {
    const options = await post(el.dataset.options);
    options.challenge = fromB64u(options.challenge);
    options.user.id = fromB64u(options.user.id);
    (options.excludeCredentials || []).forEach(function (c) { c.id = fromB64u(c.id); });
    const credential = await navigator.credentials.create({ publicKey: options });
    const nameField = document.getElementById(el.dataset.nameField || "");
    return post(el.dataset.complete, {
      name: nameField ? nameField.value : "",
      credential: asJson(credential),
    });
  }

  async function signIn(el) {
    const options = await post(el.dataset.options);
    options.challenge = fromB64u(options.challenge);
    (options.allowCredentials || []).forEach(function (c) { c.id = fromB64u(c.id); });
    const credential = await navigator.credentials.get({ publicKey: options });
    return post(el.dataset.complete, { credential: asJson(credential) });
  }

  document.addEventListener("click", async function (event) {
    const el = event.target.closest && event.target.closest("[data-webauthn]");
    if (!el) return;
    event.preventDefault();
    const status = document.getElementById(el.dataset.status || "");
    if (!window.PublicKeyCredential) {
      if (status) status.textContent = "This browser cannot use security keys.";
      return;
    }
    try {
      const done = await (el.dataset.webauthn === "register" ? register(el) : signIn(el));
      window.location.assign(done.redirect);
    } catch (err) {
      if (status) status.textContent = err.message;
    }
  });
})();
