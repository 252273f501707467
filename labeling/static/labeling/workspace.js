/* Reviewer workspace: keyboard shortcuts and the lease countdown.
 *
 * The page is a plain POST form and works without this file. It adds:
 *   1 / 2 / 3    verdict correct / incorrect / unsure; "correct" picks the predicted label,
 *                "incorrect" clears a true label equal to the predicted one
 *   a letter     toggles the category, or picks the true label, showing that letter
 *   Alt+C/Alt+N  writes a correction / a note (focus the box)
 *   Enter        submits (Ctrl/Cmd+Enter from a text box)
 *   S            skips the item (the "Skip" form)
 *   Z, Ctrl+Z    undo: reopens the last label to change it
 *   ?            shows the list of shortcuts
 *   Esc          leaves a text box, so the shortcuts apply again; on the page that changes a
 *                label, goes back without changing it
 *   !            ticks "I mean it" after a contradiction was refused
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
  const undoLink = document.getElementById("ws-undo");
  const backLink = document.getElementById("ws-back");
  const help = document.getElementById("ws-shortcuts");
  const predicted = form.dataset.predicted || "";
  let sent = false;

  function go(link) {
    if (link && !sent) {
      sent = true;
      window.location.assign(link.href);
    }
  }

  function trueLabel(value) {
    return Array.from(form.querySelectorAll('input[name="true_label"]'))
      .find(function (el) { return el.value === value; });
  }

  // "Correct" means the model's label is the true one: pick it. "Incorrect" with the predicted
  // label as the true one is a contradiction: clear it so the reviewer picks the right one.
  function verdictChosen(value) {
    if (!predicted) {
      return;
    }
    const match = trueLabel(predicted);
    if (!match) {
      return;
    }
    if (value === "correct") {
      match.checked = true;
    } else if (value === "incorrect" && match.checked) {
      match.checked = false;
    }
  }
  form.querySelectorAll('input[name="verdict"]').forEach(function (el) {
    el.addEventListener("change", function () { verdictChosen(el.value); });
  });

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

  function focusBox(id) {
    const box = document.getElementById(id);
    if (box) {
      box.focus();
      box.setSelectionRange(box.value.length, box.value.length);
    }
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.isComposing) {
      return;
    }
    if (help && help.open) {
      if (event.key === "?") {
        event.preventDefault();
        help.close();
      }
      return; // the dialog handles Esc itself
    }
    const target = event.target;
    if (event.altKey) {
      // event.code: Alt+letter types another character on some layouts (macOS).
      if (event.code === "KeyC" || event.code === "KeyN") {
        event.preventDefault();
        focusBox(event.code === "KeyC" ? "correction" : "notes");
      }
      return;
    }
    if (event.key === "Escape") {
      if (isTyping(target)) {
        target.blur();
      } else if (backLink) {
        event.preventDefault();
        go(backLink);
      }
      return;
    }
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z" &&
        !isTyping(target)) {
      event.preventDefault();
      go(undoLink);
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
    if (event.key === "?") {
      if (help && typeof help.showModal === "function") {
        event.preventDefault();
        help.showModal();
      }
      return;
    }
    const key = event.key.toLowerCase();
    if (key === "z") {
      if (undoLink) {
        event.preventDefault();
        go(undoLink);
      }
      return;
    }
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
      verdictChosen(verdict.value);
      return;
    }
    const category = form.querySelector(
      'input[name="categories"][data-key="' + CSS.escape(key) + '"]');
    if (category) {
      event.preventDefault();
      category.checked = !category.checked;
      return;
    }
    const label = form.querySelector(
      'input[name="true_label"][data-key="' + CSS.escape(key) + '"]');
    if (label) {
      event.preventDefault();
      label.checked = true;
      return;
    }
    const confirm = document.getElementById("confirm-contradiction");
    if (confirm && event.key === "!") {
      event.preventDefault();
      confirm.checked = !confirm.checked;
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
