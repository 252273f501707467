/* Reviewer workspace: keyboard shortcuts and the lease countdown.
 *
 * The page is a plain POST form and works without this file. It adds:
 *   1 / 2 / 3    verdict correct / incorrect / unsure
 *   a letter     toggles the category showing that letter
 *   Enter        submits (Ctrl/Cmd+Enter from a text box)
 *   S            skips the item (the "Skip" form)
 *   Esc          leaves a text box, so the shortcuts apply again
 * Letters and digits are ignored while typing in a field, and with Ctrl, Cmd or Alt held.
 */
(function () {
  "use strict";

  const form = document.getElementById("label-form");
  if (!form) {
    return;
  }
  const skipForm = document.getElementById("skip-form");
  const submitButton = form.querySelector("[data-ws-submit]");
  let sent = false;

  function send(target, button) {
    if (sent) {
      return; // one POST per item: a second Enter would only earn a 409
    }
    sent = true;
    if (typeof target.requestSubmit === "function") {
      target.requestSubmit(button || null);
    } else {
      target.submit();
    }
  }
  form.addEventListener("submit", function () { sent = true; });
  if (skipForm) {
    skipForm.addEventListener("submit", function () { sent = true; });
  }

  function isTyping(el) {
    if (!el || el === document.body) {
      return false;
    }
    if (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") {
      return true;
    }
    if (el.tagName === "INPUT") {
      return !["radio", "checkbox", "button", "submit", "reset", "hidden"].includes(el.type);
    }
    return false;
  }

  function isActivatable(el) {
    // Enter on these already does something of its own (follow, press, open).
    return el && (el.tagName === "A" || el.tagName === "BUTTON" || el.tagName === "SUMMARY" ||
      (el.tagName === "INPUT" && ["button", "submit", "reset"].includes(el.type)));
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.isComposing || event.altKey) {
      return;
    }
    const target = event.target;
    if (event.key === "Escape" && isTyping(target)) {
      target.blur();
      return;
    }
    if (event.key === "Enter") {
      if (event.ctrlKey || event.metaKey) {
        event.preventDefault();
        send(form, submitButton);
      } else if (target.tagName !== "TEXTAREA" && target.tagName !== "SELECT" &&
                 !isActivatable(target)) {
        event.preventDefault();
        send(form, submitButton);
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || isTyping(target) || event.key.length !== 1) {
      return;
    }
    const key = event.key.toLowerCase();
    if (key === "s") {
      if (skipForm) {
        event.preventDefault();
        send(skipForm);
      }
      return;
    }
    const verdict = form.querySelector('input[name="verdict"][data-key="' + CSS.escape(key) + '"]');
    if (verdict) {
      event.preventDefault();
      verdict.checked = true;
      return;
    }
    const category = form.querySelector(
      'input[name="categories"][data-key="' + CSS.escape(key) + '"]');
    if (category) {
      event.preventDefault();
      category.checked = !category.checked;
    }
  });

  // Lease countdown, from the seconds left when the page was rendered (no clock skew).
  const lease = document.getElementById("ws-lease");
  const out = lease && lease.querySelector(".ws-countdown");
  if (out) {
    const end = Date.now() + Number(lease.dataset.secondsLeft) * 1000;
    out.hidden = false;
    const tick = function () {
      const left = Math.max(0, Math.round((end - Date.now()) / 1000));
      const minutes = Math.floor(left / 60);
      const seconds = String(left % 60).padStart(2, "0");
      out.textContent = left > 0
        ? "(" + minutes + ":" + seconds + " left)"
        : "(expired: reload to claim an item again)";
      lease.classList.toggle("ws-lease-low", left < 60);
      if (left === 0) {
        clearInterval(timer);
      }
    };
    const timer = setInterval(tick, 1000);
    tick();
  }
})();
