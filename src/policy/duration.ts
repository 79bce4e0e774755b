/** Durations as written in policies: `90d`, `12h`, `30m`, `45s`, or combinations such as `1d12h`. */

const DURATION = /^(?:(\d{1,6})d)?(?:(\d{1,7})h)?(?:(\d{1,9})m)?(?:(\d{1,10})s)?$/;
const UNITS = [86_400, 3_600, 60, 1] as const;
/** A hundred years: longer validity periods are mistakes, not intentions. */
export const MAX_DURATION_SECONDS = 100 * 365 * 86_400;

/** Seconds, or undefined when `text` is not a duration. */
export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text);
  if (!m || text.length === 0) return undefined;
  let seconds = 0;
  for (let i = 0; i < UNITS.length; i++) {
    const part = m[i + 1];
    if (part !== undefined) seconds += Number(part) * UNITS[i]!;
  }
  return seconds;
}

/** The shortest spelling of a number of seconds, e.g. 7776000 → "90d", 129600 → "1d12h". */
export function formatDuration(seconds: number): string {
  if (seconds === 0) return "0s";
  let rest = seconds;
  let out = "";
  for (const [unit, suffix] of [
    [86_400, "d"],
    [3_600, "h"],
    [60, "m"],
    [1, "s"],
  ] as const) {
    const n = Math.floor(rest / unit);
    if (n > 0) out += `${n}${suffix}`;
    rest -= n * unit;
  }
  return out;
}
