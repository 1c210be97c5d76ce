/* The usage page's charts (Chart.js, vendored beside this file), drawn from the REST API's
   /api/v1/usage, which the page's session may read. */
"use strict";
(function () {
  const root = document.getElementById("usage");
  const palette = ["#2357a5", "#d9822b", "#1f7a3f", "#b42318", "#6941c6", "#0e7490",
    "#a15c00", "#5d6878", "#c11574", "#3f8f29"];
  const bins = ["0–10", "10–20", "20–30", "30–40", "40–50", "50–60", "60–70", "70–80",
    "80–90", "90+"];

  function fetchUsage(by) {
    const query = new URLSearchParams(by.map((key) => ["by", key]));
    if (root.dataset.since) query.set("since", root.dataset.since);
    return fetch(root.dataset.api + "?" + query, { credentials: "same-origin" }).then((r) => {
      if (!r.ok) return r.json().then((body) => { throw new Error(body.detail); });
      return r.json();
    });
  }

  function distinct(groups, key) {
    return [...new Set(groups.map((g) => g[key]))].sort();
  }

  function bar(id, labels, datasets, options) {
    datasets.forEach((set, i) => { set.backgroundColor = set.backgroundColor || palette[i % palette.length]; });
    return new Chart(document.getElementById(id), {
      type: "bar",
      data: { labels: labels, datasets: datasets },
      options: Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, options),
    });
  }

  function axes(x, y, stacked, whole) {
    return {
      scales: {
        x: { stacked: stacked, title: { display: true, text: x } },
        y: {
          stacked: stacked, beginAtZero: true, title: { display: true, text: y },
          ticks: whole ? { precision: 0 } : {},
        },
      },
    };
  }

  function cpuHours(report) {
    const months = distinct(report.groups, "month");
    const sets = distinct(report.groups, "user").map((user) => ({
      label: user,
      data: months.map((month) => {
        const group = report.groups.find((g) => g.month === month && g.user === user);
        return group ? Number(group.cpu_hours.toFixed(2)) : 0;
      }),
    }));
    bar("chart-cpu-hours", months, sets, axes("month", "CPU-hours", true, false));
  }

  function queueWait(report) {
    const known = report.groups.filter((g) => g.median_wait_s !== null);
    bar("chart-queue-wait", known.map((g) => g.cluster), [{
      label: "median wait (minutes)",
      data: known.map((g) => Number((g.median_wait_s / 60).toFixed(1))),
    }], Object.assign(axes("cluster", "minutes", false, false), { plugins: { legend: { display: false } } }));
  }

  function efficiency(report, field, id) {
    const sets = report.groups.map((g) => ({ label: g.job_type, data: g[field] }));
    bar(id, bins, sets, axes("efficiency (%)", "tasks", true, true));
  }

  // Jobs whose stored usage cannot be read: a row each, not counted in the charts.
  function damaged(records) {
    const list = document.getElementById("usage-damaged");
    records.forEach((record) => {
      const item = document.createElement("li");
      item.textContent = "damaged " + record.line + ": not counted";
      list.appendChild(item);
    });
    list.hidden = records.length === 0;
  }

  Promise.all([fetchUsage(["month", "user"]), fetchUsage(["cluster"]), fetchUsage(["job-type"])])
    .then(([perMonth, perCluster, perType]) => {
      cpuHours(perMonth);
      queueWait(perCluster);
      efficiency(perType, "cpu_efficiency_bins", "chart-cpu-efficiency");
      efficiency(perType, "memory_efficiency_bins", "chart-memory-efficiency");
      damaged(perMonth.damaged || []);
      root.dataset.drawn = "true";
    })
    .catch((error) => {
      const shown = document.getElementById("usage-error");
      shown.textContent = "could not load the usage figures: " + error.message;
      shown.hidden = false;
    });
})();
