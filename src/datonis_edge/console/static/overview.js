// The overview's chart: events per second in and out over the last 15 minutes (uPlot,
// vendored), from /overview/rates.json every 5 s. The numbers above it are htmx's (every 2 s).
(function () {
  const el = document.getElementById("chart");
  if (!el || typeof uPlot === "undefined") return;
  const opts = {
    width: Math.min(el.clientWidth || 900, 1000), height: 220,
    series: [{}, { label: "in /s", stroke: "#0b5cad" }, { label: "out /s", stroke: "#060" }],
    // always the last 15 minutes, however few samples there are yet
    scales: { x: { time: true, range: () => [Date.now() / 1000 - 900, Date.now() / 1000] } },
    axes: [{}, { label: "events/s" }],
  };
  let plot = null;
  async function refresh() {
    try {
      const r = await fetch("/overview/rates.json", { credentials: "same-origin" });
      if (!r.ok) return;
      const s = await r.json();
      const data = [s.t, s.in, s.out];
      if (plot) plot.setData(data); else plot = new uPlot(opts, data, el);
      el.dataset.points = String(s.t.length);
    } catch (e) { /* the next refresh tries again */ }
  }
  refresh();
  setInterval(refresh, 5000);
})();
