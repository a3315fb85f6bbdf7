// Time display helpers for the console.

/**
 * Parse an RFC 3339 timestamp; null when absent or not a valid date.
 * The server sends nanosecond fractions ("01:48:04.877724406Z"); they are cut
 * to milliseconds first, since not every JavaScript engine (the desktop
 * window's WebKit among them) promises to parse more than three digits.
 */
export function parseTimestamp(value: string | null | undefined): Date | null {
  if (!value) return null;
  const normalised = value.trim().replace(/(\.\d{3})\d+/, '$1');
  const date = new Date(normalised);
  return Number.isNaN(date.getTime()) ? null : date;
}

function plural(n: number, unit: string): string {
  return `${n} ${unit}${n === 1 ? '' : 's'}`;
}

/**
 * How long ago `then` was, seen from `now`, in plain English:
 * "just now", "42 seconds ago", "1 minute ago", "3 hours ago", "2 days ago".
 * Small clock differences between server and browser (up to a minute in the
 * future) read as "just now"; larger ones read as "in 5 minutes".
 */
export function formatRelative(then: Date, now: Date): string {
  const diffMs = now.getTime() - then.getTime();
  if (Number.isNaN(diffMs)) return 'unknown';
  if (diffMs < 0) {
    const ahead = -diffMs;
    if (ahead < 60_000) return 'just now';
    return `in ${durationWords(ahead)}`;
  }
  if (diffMs < 10_000) return 'just now';
  return `${durationWords(diffMs)} ago`;
}

function durationWords(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return plural(seconds, 'second');
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return plural(minutes, 'minute');
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return plural(hours, 'hour');
  const days = Math.floor(hours / 24);
  return plural(days, 'day');
}

const localFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
});

/** A timestamp in the administrator's local time zone and locale. */
export function formatLocalTime(date: Date): string {
  return localFormat.format(date);
}
