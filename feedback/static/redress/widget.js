/*! Redress feedback widget - https://github.com/ (served by Redress at /static/redress/widget.js)
 *
 *   <div data-redress-feedback data-api="https://redress.example/api/v1" data-token="\u2026"></div>
 *   <script src="https://redress.example/static/redress/widget.js" defer></script>
 *
 * No dependencies, no eval, no inline styles: the markup lives in a shadow root styled by
 * widget.css (a <link> next to this file), so the host page needs only
 *   script-src, style-src and connect-src https://redress.example
 * in its Content-Security-Policy. Text from the server is set with textContent, never as HTML.
 * Options (data-attributes on the div): data-locale ("en", "de", "fr"), data-strings (JSON,
 * overrides any string below), data-theme ("light" | "dark"; default: the user's scheme),
 * data-css (another stylesheet), data-retry-delays ("1000,2000,\u2026" ms; default below).
 * Events on the div: redress:sent {kind, id, status}, redress:error {code, status}.
 * For pages that add the div later: window.RedressFeedback.mount(div) or .scan().
 */
(function () {
  "use strict";
  if (window.RedressFeedback) return; // loaded twice: the first copy already scans

  var STRINGS = {
    en: {
      question: "Was this answer helpful?",
      up: "Helpful",
      down: "Not helpful",
      report: "Report a problem",
      what: "What was wrong?",
      comment: "Tell us more (optional)",
      correction: "What should it have said? (optional)",
      send: "Send",
      cancel: "Cancel",
      dispute: "Dispute this decision",
      disputeHint: "A person will review the decision and let you know.",
      sending: "Sending\u2026",
      retrying: "Couldn't send, retrying\u2026",
      failed: "Couldn't send your feedback. Check your connection and try again.",
      retry: "Try again",
      thanks: "Thank you for your feedback.",
      disputed: "Your dispute was filed. A person will review it.",
      open: "Your dispute is open.",
      in_review: "Your dispute is being reviewed.",
      upheld: "Your dispute was upheld.",
      rejected: "Your dispute was not upheld.",
      expired: "This feedback form has expired. Reload the page to send feedback.",
      denied: "Feedback can't be sent from this page.",
      already: "You have already disputed this decision.",
      invalid: "Couldn't send your feedback:",
      loading: "Loading\u2026",
      nocats: "Couldn't load the categories."
    },
    de: {
      question: "War diese Antwort hilfreich?",
      up: "Hilfreich",
      down: "Nicht hilfreich",
      report: "Problem melden",
      what: "Was war falsch?",
      comment: "Mehr dazu (optional)",
      correction: "Was h\u00e4tte es sagen sollen? (optional)",
      send: "Senden",
      cancel: "Abbrechen",
      dispute: "Entscheidung anfechten",
      disputeHint: "Ein Mensch pr\u00fcft die Entscheidung und gibt Ihnen Bescheid.",
      sending: "Wird gesendet\u2026",
      retrying: "Senden fehlgeschlagen, neuer Versuch\u2026",
      failed: "Ihr Feedback konnte nicht gesendet werden. Pr\u00fcfen Sie die Verbindung und versuchen Sie es erneut.",
      retry: "Erneut versuchen",
      thanks: "Danke f\u00fcr Ihr Feedback.",
      disputed: "Ihr Einspruch ist eingegangen. Ein Mensch pr\u00fcft ihn.",
      open: "Ihr Einspruch ist offen.",
      in_review: "Ihr Einspruch wird gepr\u00fcft.",
      upheld: "Ihrem Einspruch wurde stattgegeben.",
      rejected: "Ihr Einspruch wurde abgelehnt.",
      expired: "Dieses Formular ist abgelaufen. Laden Sie die Seite neu, um Feedback zu senden.",
      denied: "Von dieser Seite kann kein Feedback gesendet werden.",
      already: "Sie haben diese Entscheidung bereits angefochten.",
      invalid: "Ihr Feedback konnte nicht gesendet werden:",
      loading: "Wird geladen\u2026",
      nocats: "Die Kategorien konnten nicht geladen werden."
    },
    fr: {
      question: "Cette r\u00e9ponse vous a-t-elle aid\u00e9 ?",
      up: "Utile",
      down: "Pas utile",
      report: "Signaler un probl\u00e8me",
      what: "Qu'est-ce qui n'allait pas ?",
      comment: "Dites-nous en plus (facultatif)",
      correction: "Qu'aurait-il fallu dire ? (facultatif)",
      send: "Envoyer",
      cancel: "Annuler",
      dispute: "Contester cette d\u00e9cision",
      disputeHint: "Une personne examinera la d\u00e9cision et vous tiendra inform\u00e9.",
      sending: "Envoi\u2026",
      retrying: "\u00c9chec de l'envoi, nouvel essai\u2026",
      failed: "Votre avis n'a pas pu \u00eatre envoy\u00e9. V\u00e9rifiez votre connexion et r\u00e9essayez.",
      retry: "R\u00e9essayer",
      thanks: "Merci pour votre avis.",
      disputed: "Votre contestation a \u00e9t\u00e9 enregistr\u00e9e. Une personne l'examinera.",
      open: "Votre contestation est ouverte.",
      in_review: "Votre contestation est en cours d'examen.",
      upheld: "Votre contestation a \u00e9t\u00e9 accept\u00e9e.",
      rejected: "Votre contestation a \u00e9t\u00e9 rejet\u00e9e.",
      expired: "Ce formulaire a expir\u00e9. Rechargez la page pour envoyer votre avis.",
      denied: "Impossible d'envoyer un avis depuis cette page.",
      already: "Vous avez d\u00e9j\u00e0 contest\u00e9 cette d\u00e9cision.",
      invalid: "Votre avis n'a pas pu \u00eatre envoy\u00e9 :",
      loading: "Chargement\u2026",
      nocats: "Impossible de charger les cat\u00e9gories."
    }
  };
  var DELAYS = [1000, 2000, 4000, 8000, 15000, 30000]; // then "failed" and a Try again button
  var TIMEOUT = 15000;
  var SVG = "http://www.w3.org/2000/svg";
  var THUMB = "M2 10h4v11H2zM8 21h9.2a2 2 0 0 0 2-1.6l1.7-7.6A2 2 0 0 0 19 9.4h-5.3l.8-4.1a1.6 1.6 0 0 0-2.8-1.4L8 9z";
  var scriptSrc = document.currentScript && document.currentScript.src;
  var mounted = typeof WeakSet === "function" ? new WeakSet() : null;

  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    for (var k in attrs || {}) {
      if (attrs[k] === false || attrs[k] == null) continue;
      if (k === "text") el.textContent = attrs[k];
      else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), attrs[k]);
      else el.setAttribute(k, attrs[k] === true ? "" : attrs[k]);
    }
    (children || []).forEach(function (c) { if (c) el.appendChild(c); });
    return el;
  }

  function thumb(down) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    if (down) svg.setAttribute("class", "rf-flip");
    var path = document.createElementNS(SVG, "path");
    path.setAttribute("d", THUMB);
    svg.appendChild(path);
    return svg;
  }

  // The token's payload (base64url JSON before the dot) says which kinds it allows and whose
  // it is. Nothing here is trusted: the server checks the signature; this only shapes the UI.
  function claims(token) {
    try {
      var b64 = token.split(".")[0].replace(/-/g, "+").replace(/_/g, "/");
      var bin = atob(b64 + "===".slice((b64.length + 3) % 4));
      var bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      var c = JSON.parse(new TextDecoder().decode(bytes));
      return c && typeof c === "object" ? c : {};
    } catch (e) {
      return {};
    }
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return "rw-" + crypto.randomUUID();
    var a = new Uint32Array(4);
    crypto.getRandomValues(a);
    return "rw-" + Array.prototype.map.call(a, function (n) { return n.toString(16); }).join("");
  }

  function store(key, value) {
    try {
      if (value === undefined) return JSON.parse(localStorage.getItem(key) || "null");
      localStorage.setItem(key, JSON.stringify(value));
    } catch (e) { /* private mode, storage disabled: the widget works without memory */ }
    return null;
  }

  function sleep(ms, wake) {
    return new Promise(function (resolve) {
      var t = setTimeout(done, ms);
      function done() { clearTimeout(t); window.removeEventListener("online", done); resolve(); }
      if (wake) window.addEventListener("online", done); // back online: try again at once
    });
  }

  function Widget(host) {
    this.host = host;
    var d = host.dataset;
    var base = STRINGS[(d.locale || document.documentElement.lang || "en").slice(0, 2).toLowerCase()];
    var s = {}, over = {};
    try { over = JSON.parse(d.strings || "{}") || {}; } catch (e) { /* ignore a broken override */ }
    for (var k in STRINGS.en) s[k] = typeof over[k] === "string" ? over[k] : (base || STRINGS.en)[k];
    this.s = s;
    this.api = (d.api || "").replace(/\/+$/, "");
    this.delays = d.retryDelays ? d.retryDelays.split(",").map(Number) : DELAYS;
    var c = claims(this.token());
    this.kinds = Array.isArray(c.kinds) ? c.kinds : ["rating", "report"];
    this.memKey = "redress:" + [c.prj, c.pred, c.sub].join(":");
    this.mem = store(this.memKey) || {};
    this.cats = null;
    this.busy = false;
    this.render();
    // A page that fetches a fresh token after "token_expired" (the redress:error event) just
    // sets data-token again: the widget comes back and sends what the user had sent.
    var w = this;
    if (window.MutationObserver) new MutationObserver(function () { w.revive(); })
      .observe(host, {attributes: true, attributeFilter: ["data-token"]});
  }

  Widget.prototype.revive = function () {
    if (!this.dead) return;
    this.dead = false;
    this.row.hidden = false;
    this.say("");
    if (this.pending) this.deliver(this.pending);
  };

  Widget.prototype.token = function () { return this.host.getAttribute("data-token") || ""; };

  Widget.prototype.render = function () {
    // A shadow root, or nothing: drawn into the page itself, widget.css would restyle its buttons.
    var w = this, s = this.s, root = this.host.attachShadow({mode: "open"});
    var css = this.host.dataset.css || (scriptSrc ? scriptSrc.replace(/\.js(\?.*)?$/, ".css$1") :
      this.api.replace(/\/api\/v1$/, "") + "/static/redress/widget.css");
    var link = h("link", {rel: "stylesheet", href: css});
    var box = h("div", {"class": "rf", role: "group", "aria-labelledby": "rf-q", hidden: true});
    if (this.host.dataset.theme) box.setAttribute("data-theme", this.host.dataset.theme);
    var show = function () { box.hidden = false; };
    link.addEventListener("load", show);
    link.addEventListener("error", show);
    setTimeout(show, 3000);

    var can = function (k) { return w.kinds.indexOf(k) >= 0; };
    this.upBtn = can("rating") && h("button", {type: "button", "class": "rf-thumb", "aria-pressed": "false",
      "aria-label": s.up, title: s.up, onclick: function () { w.rate(1); }}, [thumb(false)]);
    this.downBtn = can("rating") && h("button", {type: "button", "class": "rf-thumb", "aria-pressed": "false",
      "aria-label": s.down, title: s.down, onclick: function () { w.open("rating"); }}, [thumb(true)]);
    this.reportBtn = (can("report") || can("dispute")) && h("button", {type: "button", "class": "rf-link",
      text: s.report, onclick: function () { w.open(can("report") ? "report" : "dispute"); }});
    this.row = h("div", {"class": "rf-row"}, [
      h("p", {id: "rf-q", "class": "rf-q", text: s.question}), this.upBtn, this.downBtn, this.reportBtn
    ]);

    this.catBox = h("div", {"class": "rf-cats"});
    this.comment = h("textarea", {id: "rf-comment", rows: "3", maxlength: "5000"});
    this.correction = h("textarea", {id: "rf-correction", rows: "2", maxlength: "5000"});
    this.sendBtn = h("button", {type: "submit", "class": "rf-primary", text: s.send});
    this.disputeBtn = can("dispute") && h("button", {type: "button", "class": "rf-secondary",
      "aria-describedby": "rf-dhint", text: s.dispute, onclick: function () { w.submit("dispute"); }});
    this.form = h("form", {"class": "rf-form", hidden: true, novalidate: true, onsubmit: function (e) {
      e.preventDefault(); w.submit(w.mode);
    }}, [
      h("fieldset", {"class": "rf-set"}, [h("legend", {text: s.what}), this.catBox]),
      h("label", {"for": "rf-comment", text: s.comment}), this.comment,
      h("label", {"for": "rf-correction", text: s.correction}), this.correction,
      h("div", {"class": "rf-actions"}, [
        this.sendBtn, this.disputeBtn,
        h("button", {type: "button", "class": "rf-link", text: s.cancel, onclick: function () { w.close(); }})
      ]),
      this.disputeBtn && h("p", {id: "rf-dhint", "class": "rf-hint", text: s.disputeHint})
    ]);
    this.retryBtn = h("button", {type: "button", "class": "rf-secondary", hidden: true, text: s.retry,
      onclick: function () { w.retryBtn.hidden = true; if (w.pending) w.deliver(w.pending); }});
    // Always in the DOM, so screen readers announce what is put into it.
    this.status = h("p", {"class": "rf-status", role: "status", "aria-live": "polite", tabindex: "-1"});
    box.appendChild(this.row);
    box.appendChild(this.form);
    box.appendChild(this.status);
    box.appendChild(this.retryBtn);
    root.appendChild(link);
    root.appendChild(box);
    this.box = box;
    if (this.mem.r) this.press(this.mem.r);
    if (this.mem.d) this.disputeStatus();
  };

  Widget.prototype.press = function (rating) {
    if (this.upBtn) this.upBtn.setAttribute("aria-pressed", String(rating === 1));
    if (this.downBtn) this.downBtn.setAttribute("aria-pressed", String(rating === -1));
  };

  Widget.prototype.say = function (text, kind) {
    this.status.textContent = text || "";
    this.status.className = "rf-status" + (kind ? " rf-" + kind : "");
  };

  Widget.prototype.rate = function (rating) {
    if (this.busy) return;
    this.close(true);
    this.press(rating);
    this.deliver({kind: "rating", rating: rating, key: newKey()});
  };

  Widget.prototype.open = function (mode) {
    if (this.busy || this.dead) return;
    this.mode = mode;
    if (mode === "rating") this.press(-1);
    this.sendBtn.hidden = mode === "dispute";
    if (this.disputeBtn) this.disputeBtn.hidden = !!this.mem.d;
    this.form.hidden = false;
    this.say("");
    var w = this;
    this.loadCategories().then(function () {
      if (!w.form.hidden && !w.busy) (w.catBox.querySelector("button") || w.comment).focus();
    });
  };

  Widget.prototype.close = function (quiet) {
    this.form.hidden = true;
    if (!quiet) {
      this.press(this.mem.r || 0);
      var back = this.downBtn || this.reportBtn;
      if (back) back.focus();
    }
  };

  Widget.prototype.loadCategories = function () {
    var w = this;
    if (this.cats) return Promise.resolve();
    this.catBox.textContent = "";
    this.catBox.appendChild(h("span", {"class": "rf-hint", text: this.s.loading}));
    return this.request("GET", "/categories", null, null).then(function (res) {
      w.catBox.textContent = "";
      if (res.status !== 200 || !Array.isArray(res.data)) return w.refused(res, true);
      w.cats = res.data;
      res.data.forEach(function (cat) {
        var b = h("button", {type: "button", "class": "rf-cat", "aria-pressed": "false",
          "data-slug": cat.slug, title: cat.description || null, text: cat.name || cat.slug});
        b.addEventListener("click", function () {
          b.setAttribute("aria-pressed", String(b.getAttribute("aria-pressed") !== "true"));
        });
        w.catBox.appendChild(b);
      });
    }, function () {
      w.catBox.textContent = "";
      w.catBox.appendChild(h("span", {"class": "rf-hint", text: w.s.nocats}));
    });
  };

  Widget.prototype.submit = function (kind) {
    if (this.busy) return;
    var item = {kind: kind, key: newKey()};
    if (kind === "rating") item.rating = -1;
    var cats = [];
    Array.prototype.forEach.call(this.catBox.querySelectorAll("button[aria-pressed=true]"), function (b) {
      cats.push(b.getAttribute("data-slug"));
    });
    if (cats.length) item.categories = cats;
    if (this.comment.value.trim()) item.comment = this.comment.value.trim();
    if (this.correction.value.trim()) item.correction = this.correction.value.trim();
    this.deliver(item);
  };

  // Sends one feedback item; the same Idempotency-Key on every retry, so a retry after a lost
  // response is answered with the first response instead of storing the feedback twice.
  Widget.prototype.deliver = function (item) {
    var w = this, body = {};
    for (var k in item) if (k !== "key") body[k] = item[k];
    this.pending = item;
    this.busy = true;
    this.retryBtn.hidden = true;
    this.box.setAttribute("aria-busy", "true");
    this.say(this.s.sending);
    this.request("POST", "/feedback", body, item.key).then(function (res) {
      w.busy = false;
      w.box.removeAttribute("aria-busy");
      if (res.status === 200 || res.status === 201) return w.sent(item, res.data || {});
      w.refused(res);
    }, function () {
      w.busy = false;
      w.box.removeAttribute("aria-busy");
      w.say(w.s.failed, "error");
      w.retryBtn.hidden = false;
      w.emit("error", {code: "network", status: 0});
    });
  };

  Widget.prototype.sent = function (item, data) {
    this.pending = null;
    if (item.kind === "rating") this.mem.r = item.rating;
    this.form.hidden = true;
    this.comment.value = this.correction.value = "";
    Array.prototype.forEach.call(this.catBox.querySelectorAll("button"), function (b) {
      b.setAttribute("aria-pressed", "false");
    });
    if (item.kind === "dispute" && data.id != null) {
      this.mem.d = data.id;
      this.mem.ds = data.status || "open";
      if (this.reportBtn && this.kinds.indexOf("report") < 0) this.reportBtn.hidden = true;
    }
    store(this.memKey, this.mem);
    this.say(item.kind === "dispute" ? this.s.disputed : this.s.thanks, "ok");
    this.status.focus(); // the form is gone: keep keyboard focus inside the widget
    this.emit("sent", {kind: item.kind, id: data.id, status: data.status});
  };

  // A 4xx the widget cannot fix by retrying. Expired and refused tokens end the widget.
  Widget.prototype.refused = function (res, quietly) {
    var err = (res.data && res.data.errors && res.data.errors[0]) || {};
    var code = err.code || "http_" + res.status;
    var item = this.pending;
    if (code !== "token_expired") this.pending = null; // kept for a fresh token (revive)
    if (code === "token_expired" || res.status === 401 || res.status === 403) {
      this.dead = true;
      this.form.hidden = true;
      this.row.hidden = true;
      this.say(code === "token_expired" ? this.s.expired : this.s.denied, "error");
      if (window.console) console.warn("Redress feedback:", res.status, code, err.detail || "");
    } else if (res.status === 409 && item && item.kind === "dispute") {
      this.form.hidden = true;
      this.say(this.s.already, "error");
    } else if (!quietly) {
      this.say(this.s.invalid + " " + (err.detail || res.status), "error");
    }
    this.emit("error", {code: code, status: res.status});
  };

  Widget.prototype.disputeStatus = function () {
    var w = this, s = this.s;
    if (this.mem.ds) this.say(s[this.mem.ds] || "");
    this.request("GET", "/disputes/" + encodeURIComponent(this.mem.d), null, null, true).then(function (res) {
      var d = res.data || {};
      if (res.status !== 200 || !s[d.status]) return;
      w.mem.ds = d.status;
      store(w.memKey, w.mem);
      w.say(s[d.status], "ok");
      if (d.resolution_note) w.status.appendChild(h("span", {"class": "rf-note", text: d.resolution_note}));
    }, function () { /* keep the last known status */ });
  };

  // fetch with a timeout; network errors, 5xx and 429 are retried with backoff (Retry-After
  // honoured), showing "couldn't send, retrying". Resolves {status, data}; rejects when it gives up.
  Widget.prototype.request = function (method, path, body, key, once) {
    var w = this, attempt = 0;
    function go() {
      var headers = {"Authorization": "FeedbackToken " + w.token(), "Accept": "application/json"};
      if (body) headers["Content-Type"] = "application/json";
      if (key) headers["Idempotency-Key"] = key;
      var ctrl = window.AbortController ? new AbortController() : null;
      var timer = ctrl && setTimeout(function () { ctrl.abort(); }, TIMEOUT);
      return fetch(w.api + path, {
        method: method, headers: headers, body: body ? JSON.stringify(body) : undefined,
        mode: "cors", credentials: "omit", cache: "no-store", signal: ctrl ? ctrl.signal : undefined
      }).then(function (r) {
        clearTimeout(timer);
        return r.json().catch(function () { return null; }).then(function (data) {
          var transient = r.status >= 500 || r.status === 429 || r.status === 408;
          if (!transient) return {status: r.status, data: data};
          var after = parseInt(r.headers.get("Retry-After"), 10);
          return again(after > 0 ? Math.min(after, 120) * 1000 : 0, r.status);
        });
      }, function () {
        clearTimeout(timer);
        return again(0, 0);
      });
    }
    function again(wait, status) {
      if (once || attempt >= w.delays.length) return Promise.reject(new Error("gave up: " + status));
      var delay = Math.max(wait, w.delays[attempt++] * (0.8 + Math.random() * 0.4));
      if (key) w.say(w.s.retrying, "warn");
      w.emit("retry", {status: status, attempt: attempt, delay: Math.round(delay)});
      return sleep(delay, !wait).then(go);
    }
    return go();
  };

  Widget.prototype.emit = function (name, detail) {
    var ev;
    try { ev = new CustomEvent("redress:" + name, {detail: detail, bubbles: true}); } catch (e) { return; }
    this.host.dispatchEvent(ev);
  };

  function mount(el) {
    if (!el.attachShadow || (mounted ? mounted.has(el) : el.__redress)) return null;
    if (mounted) mounted.add(el); else el.__redress = true;
    return new Widget(el);
  }

  function scan() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-redress-feedback]"), mount);
  }

  window.RedressFeedback = {mount: mount, scan: scan, strings: STRINGS};
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", scan);
  else scan();
})();
