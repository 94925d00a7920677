// The streamer's scatter plot, drawn as SVG in the original's frame: 300×200, x in
// [0, 3], y in [0, 6], titled "Stream Data Plot".
import { s } from "./dom";
import type { Series } from "./gen/streamhandler/v1/payloads_pb.js";

/** Eleven colours that tell apart on white; series i takes colour i mod 11. */
export const PALETTE = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
  "#393b79",
];

const WIDTH = 300;
const HEIGHT = 200;
const X_MAX = 3;
const Y_MAX = 6;
// Room for the title above and the tick labels left and below.
const LEFT = 26;
const RIGHT = 8;
const TOP = 22;
const BOTTOM = 20;
const PLOT_WIDTH = WIDTH - LEFT - RIGHT;
const PLOT_HEIGHT = HEIGHT - TOP - BOTTOM;

const clamp = (value: number, max: number) => Math.min(Math.max(value, 0), max);
const px = (x: number) => LEFT + (clamp(x, X_MAX) / X_MAX) * PLOT_WIDTH;
const py = (y: number) => TOP + PLOT_HEIGHT - (clamp(y, Y_MAX) / Y_MAX) * PLOT_HEIGHT;
// Two decimals are finer than a pixel at any size the card takes.
const round = (value: number) => Math.round(value * 100) / 100;

function axes(): SVGGElement {
  const axis = s("g", { class: "axes" });
  axis.append(
    s("line", { x1: LEFT, y1: TOP + PLOT_HEIGHT, x2: LEFT + PLOT_WIDTH, y2: TOP + PLOT_HEIGHT }),
    s("line", { x1: LEFT, y1: TOP, x2: LEFT, y2: TOP + PLOT_HEIGHT }),
  );
  for (let x = 0; x <= X_MAX; x += 1) {
    axis.append(
      s("line", { class: "grid", x1: px(x), y1: TOP, x2: px(x), y2: TOP + PLOT_HEIGHT }),
      s("text", { x: px(x), y: HEIGHT - 6, "text-anchor": "middle" }, x),
    );
  }
  for (let y = 0; y <= Y_MAX; y += 2) {
    axis.append(
      s("line", { class: "grid", x1: LEFT, y1: py(y), x2: LEFT + PLOT_WIDTH, y2: py(y) }),
      s("text", { x: LEFT - 6, y: py(y) + 3, "text-anchor": "end" }, y),
    );
  }
  return axis;
}

export function scatterPlot(series: Series[]): SVGSVGElement {
  const svg = s(
    "svg",
    {
      class: "plot",
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
    },
    // The first <title> names the picture for screen readers.
    s("title", {}, "Stream Data Plot"),
    s(
      "text",
      { class: "plot-title", x: WIDTH / 2, y: 14, "text-anchor": "middle" },
      "Stream Data Plot",
    ),
    axes(),
  );
  series.forEach((one, index) => {
    const colour = PALETTE[index % PALETTE.length];
    const group = s("g", { "data-series": index });
    for (const point of one.points) {
      group.append(
        s("circle", { cx: round(px(point.x)), cy: round(py(point.y)), r: 2.5, fill: colour }),
      );
    }
    svg.append(group);
  });
  return svg;
}
