import { describe, expect, it } from 'vitest';
import { formatLocalTime, formatRelative, parseTimestamp } from './time';

const now = new Date('2026-11-27T01:10:00Z');
const ago = (ms: number) => new Date(now.getTime() - ms);

describe('formatRelative', () => {
  it.each([
    [0, 'just now'],
    [9_999, 'just now'],
    [10_000, '10 seconds ago'],
    [59_000, '59 seconds ago'],
    [60_000, '1 minute ago'],
    [119_000, '1 minute ago'],
    [120_000, '2 minutes ago'],
    [59 * 60_000, '59 minutes ago'],
    [60 * 60_000, '1 hour ago'],
    [5 * 3_600_000 + 59 * 60_000, '5 hours ago'],
    [24 * 3_600_000, '1 day ago'],
    [3 * 24 * 3_600_000, '3 days ago'],
  ])('%d ms ago reads "%s"', (ms, expected) => {
    expect(formatRelative(ago(ms), now)).toBe(expected);
  });

  it('treats small clock skew into the future as "just now"', () => {
    expect(formatRelative(new Date(now.getTime() + 30_000), now)).toBe('just now');
  });

  it('says "in ..." for times well in the future', () => {
    expect(formatRelative(new Date(now.getTime() + 5 * 60_000), now)).toBe('in 5 minutes');
  });

  it('says "unknown" for an invalid date', () => {
    expect(formatRelative(new Date('nonsense'), now)).toBe('unknown');
  });
});

describe('parseTimestamp', () => {
  it('parses RFC 3339', () => {
    expect(parseTimestamp('2026-11-27T01:00:05Z')?.toISOString()).toBe('2026-11-27T01:00:05.000Z');
  });

  it('parses the nanosecond fractions the server sends', () => {
    expect(parseTimestamp('2026-11-27T01:48:04.877724406Z')?.toISOString()).toBe('2026-11-27T01:48:04.877Z');
    expect(parseTimestamp('2026-11-27T01:48:04.877724406+02:00')?.toISOString()).toBe(
      '2026-11-26T23:48:04.877Z',
    );
  });

  it('returns null for null, empty and invalid input', () => {
    expect(parseTimestamp(null)).toBeNull();
    expect(parseTimestamp(undefined)).toBeNull();
    expect(parseTimestamp('')).toBeNull();
    expect(parseTimestamp('yesterday-ish')).toBeNull();
  });
});

describe('formatLocalTime', () => {
  it('includes the year and the seconds of the local time', () => {
    const d = new Date('2026-11-27T01:00:05Z');
    const text = formatLocalTime(d);
    expect(text).toContain('2026');
    expect(text).toContain(String(d.getSeconds()).padStart(2, '0'));
  });
});
