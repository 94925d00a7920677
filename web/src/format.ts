// How numbers, sizes and times read on the page.
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

export function count(value: number | bigint): string {
  return integer.format(value);
}

/** "1 subscriber", "3 subscribers". */
export function plural(value: number | bigint, one: string, many = `${one}s`): string {
  return `${count(value)} ${value === 1 || value === 1n ? one : many}`;
}

export function bytes(value: number | bigint): string {
  const n = Number(value);
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let scaled = n / 1024;
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return `${scaled.toFixed(scaled < 10 ? 1 : 0)} ${units[unit]}`;
}

export function seconds(duration: Duration | undefined): number {
  if (!duration) return 0;
  return Number(duration.seconds) + duration.nanos / 1e9;
}

/** A duration the way people say it: "850 ms", "3 s", "2 min 5 s", "4 h 2 min", "3 d 4 h". */
export function duration(value: Duration | number | undefined): string {
  const total = typeof value === "number" ? value : seconds(value);
  if (total < 1) return `${Math.round(total * 1000)} ms`;
  if (total < 60) return `${Number.isInteger(total) ? total : total.toFixed(1)} s`;
  const whole = Math.floor(total);
  const [d, h, m, sec] = [
    Math.floor(whole / 86400),
    Math.floor((whole % 86400) / 3600),
    Math.floor((whole % 3600) / 60),
    whole % 60,
  ];
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  return `${m} min ${sec} s`;
}

const clock = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

/** The wall-clock time of a timestamp, e.g. "14:13:47"; "" when unset. */
export function time(value: Timestamp | undefined): string {
  return value ? clock.format(timestampDate(value)) : "";
}

/** The last path segment, whether the daemon runs on Unix or Windows. */
export function basename(path: string): string {
  return path.split(/[\\/]/).pop() ?? path;
}
