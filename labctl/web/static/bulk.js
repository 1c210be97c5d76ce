/* The job list's "select all shown" box ticks or clears the box of every job shown. */
document.addEventListener("change", (event) => {
  if (event.target.id !== "pick-all") return;
  for (const box of document.querySelectorAll("input[name=job][form=bulk]")) {
    box.checked = event.target.checked;
  }
});
