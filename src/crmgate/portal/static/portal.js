// crmgate portal: the little script the pages need (served from the portal itself: the
// Content-Security-Policy allows no inline script). Copy buttons; passkeys (WebAuthn).
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    button.textContent = "Copied";
  });
});

// Members: a removal asks first (a slip of the mouse should not remove a colleague; the
// server checks everything else).
document.addEventListener("submit", (event) => {
  const confirmed = event.target.closest("form[data-confirm]");
  if (confirmed && !window.confirm(confirmed.dataset.confirm)) event.preventDefault();
});

// Passkeys (WebAuthn): the server's options come as JSON (binary fields in base64url), the
// authenticator's answer goes back the same way inside an ordinary form post, so the server
// answers with a page. Buttons: #add-passkey (Security), #use-passkey (sign-in), #reauth-passkey
// (a fresh sign-in).
(() => {
  const toBytes = (text) => {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)).buffer;
  };
  const toText = (buffer) => {
    let binary = "";
    new Uint8Array(buffer).forEach((b) => { binary += String.fromCharCode(b); });
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  const showError = (message) => {
    const place = document.getElementById("passkey-error");
    if (place) { place.textContent = message; place.hidden = false; }
  };
  const problem = (error) => {
    if (error && error.name === "NotAllowedError") return "The passkey was not used (cancelled or timed out).";
    if (error && error.name === "InvalidStateError") return "This passkey is already registered.";
    if (error && error.name === "SecurityError") return "Passkeys need the portal opened by its host name (for example localhost), not an IP address.";
    return "The passkey did not work in this browser.";
  };

  async function options(button) {
    const response = await fetch(button.dataset.options, {
      method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": button.dataset.csrf },
    });
    if (response.redirected) { window.location.assign(response.url); return null; }  // sign in again
    const body = await response.json().catch(() => null);
    if (!response.ok || body === null) {
      showError((body && body.error) || "The passkey could not be started. Reload the page and try again.");
      return null;
    }
    return body;
  }

  const descriptors = (list) => (list || []).map((item) => ({ ...item, id: toBytes(item.id) }));

  async function create(button) {
    const json = await options(button);
    if (!json) return null;
    const publicKey = {
      ...json, challenge: toBytes(json.challenge), user: { ...json.user, id: toBytes(json.user.id) },
      excludeCredentials: descriptors(json.excludeCredentials),
    };
    const credential = await navigator.credentials.create({ publicKey });
    return {
      id: credential.id, rawId: toText(credential.rawId), type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      response: {
        clientDataJSON: toText(credential.response.clientDataJSON),
        attestationObject: toText(credential.response.attestationObject),
        transports: credential.response.getTransports ? credential.response.getTransports() : [],
      },
    };
  }

  async function get(button) {
    const json = await options(button);
    if (!json) return null;
    const publicKey = { ...json, challenge: toBytes(json.challenge), allowCredentials: descriptors(json.allowCredentials) };
    const credential = await navigator.credentials.get({ publicKey });
    const answer = credential.response;
    return {
      id: credential.id, rawId: toText(credential.rawId), type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      response: {
        clientDataJSON: toText(answer.clientDataJSON),
        authenticatorData: toText(answer.authenticatorData),
        signature: toText(answer.signature),
        userHandle: answer.userHandle ? toText(answer.userHandle) : undefined,
      },
    };
  }

  const post = (action, fields) => {
    const form = document.createElement("form");
    form.method = "post";
    form.action = action;
    form.hidden = true;
    for (const [name, value] of Object.entries(fields)) {
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = value;
      form.appendChild(input);
    }
    document.body.appendChild(form);
    form.submit();
  };

  const withNext = (action) => {
    const next = new URLSearchParams(window.location.search).get("next");
    return next ? `${action}?next=${encodeURIComponent(next)}` : action;
  };

  async function run(button, ceremony, done) {
    if (!window.PublicKeyCredential) { showError("This browser does not support passkeys."); return; }
    button.disabled = true;
    try {
      const answer = await ceremony(button);
      if (answer) { done(JSON.stringify(answer)); return; }
    } catch (error) {
      showError(problem(error));
    }
    button.disabled = false;
  }

  function reauthenticate(button) {
    const form = document.getElementById("reauth-form");
    run(button, get, (answer) => {
      document.getElementById("reauth-passkey-answer").value = answer;
      form.submit();
    });
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("#add-passkey, #use-passkey");
    if (!button) return;
    if (button.id === "add-passkey") {
      const name = document.getElementById("passkey-name");
      run(button, create, (answer) => post(button.dataset.verify, {
        csrf: button.dataset.csrf, name: name ? name.value : "Passkey", credential: answer,
      }));
    } else {
      run(button, get, (answer) => post(withNext(button.dataset.verify), { csrf: button.dataset.csrf, credential: answer }));
    }
  });

  // a fresh sign-in (the form's own checks passed): the passkey button, or Enter without a code
  // from the authenticator app, runs the passkey first, then sends the form with its answer
  document.addEventListener("submit", (event) => {
    if (event.target.id === "passkey-register") {  // Enter in the name field
      event.preventDefault();
      document.getElementById("add-passkey").click();
      return;
    }
    if (event.target.id !== "reauth-form") return;
    const button = document.getElementById("reauth-passkey");
    const code = document.getElementById("code");
    if (!button || (event.submitter !== button && code && code.value.trim())) return;
    event.preventDefault();
    reauthenticate(button);
  });
})();

// Applications and connect links: the OAuth continue page follows its link at once (a
// script's navigation: the CSP's form-action stops a form post's redirect to the CRM), and
// the page a flow returns to reads the result from the URL fragment, which never reaches the
// server: on to the new application, or the CRM's reason why not.
(() => {
  const onward = document.querySelector("a#oauth-continue[data-follow]");
  if (onward) window.location.replace(onward.href);
  const place = document.querySelector("[data-oauth-return]");
  if (!place || !window.location.hash) return;
  const result = new URLSearchParams(window.location.hash.slice(1));
  window.history.replaceState(null, "", window.location.pathname);  // the fragment goes
  const key = result.get("application_key");
  if (key && /^[0-9a-f]{40}$/.test(key) && place.dataset.oauthReturn) {
    window.location.replace(`${place.dataset.oauthReturn}${key}?connected=1`);
  } else if (result.get("error")) {
    place.textContent = `The connection did not finish: ${result.get("error_description") || result.get("error")}`;
    place.classList.add("error");
  }
})();
