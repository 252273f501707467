/* The export form in the admin: offer only the chosen project's queues.
 * Each queue option carries data-project (labeling.admin.exports.QueueSelect); the form refuses
 * a queue of another project anyway, so this only spares a round trip. */
(function () {
  "use strict";
  function init() {
    const project = document.getElementById("id_project");
    const queue = document.getElementById("id_queue");
    if (!project || !queue) {
      return;
    }
    function filter() {
      const chosen = project.value;
      Array.from(queue.options).forEach(function (option) {
        const owner = option.dataset.project;
        const shown = !owner || !chosen || owner === chosen;
        option.hidden = !shown;
        option.disabled = !shown;
      });
      const selected = queue.options[queue.selectedIndex];
      if (selected && selected.disabled) {
        queue.value = "";
      }
    }
    project.addEventListener("change", filter);
    filter();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
