/* A list's "tick all shown" box (jobs in Monitor, entries in Browse) ticks or clears every box
   in its table's rows. */
document.addEventListener("change", (event) => {
  if (event.target.id !== "pick-all") return;
  for (const box of event.target.closest("table").querySelectorAll("tbody input[type=checkbox]")) {
    box.checked = event.target.checked;
  }
});
