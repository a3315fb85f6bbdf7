import { describe, expect, it } from 'vitest';
import type { PolicyRule } from '../api';
import { statusWords } from '../components/UserActivation';
import { describeSync } from './DirectoryPage';
import { describeCondition } from './FiltersPage';
import { ruleProblem } from './PoliciesPage';
import { counterBars } from './StatisticsPage';

const length: PolicyRule = {
  name: 'MinimumPasswordLength',
  title: 'Minimum Password Length',
  kind: 'int',
  min: 4,
  max: 14,
  unit: 'characters',
  options: [],
  default: 4,
  accepts: '4–14 characters',
};

describe('the IT policy rule editor', () => {
  it('names the rule and its range for a value out of range', () => {
    expect(ruleProblem(length, 20)).toBe('Minimum Password Length must be between 4 and 14');
    expect(ruleProblem(length, 3)).toBe('Minimum Password Length must be between 4 and 14');
    expect(ruleProblem(length, 4)).toBeNull();
    expect(ruleProblem(length, 14)).toBeNull();
    expect(ruleProblem(length, '')).toContain('whole number (4–14 characters)');
    expect(ruleProblem({ ...length, kind: 'bool' }, 'anything')).toBeNull();
  });
});

describe('words on the new screens', () => {
  it('says what a filter condition matches', () => {
    expect(describeCondition({ field: 'subject', text: 'invoice' })).toBe('subject contains “invoice”');
    expect(describeCondition({ field: 'importance', importance: 'high' })).toBe('importance is high');
  });

  it('says where a directory sync is', () => {
    const sync = {
      running: true,
      full: true,
      started_at: '2026-11-27T10:00:00Z',
      started_by: 'admin',
      phase: 'reading_users',
      entries_read: 1,
      percent: 10,
      error: null,
    };
    expect(describeSync(sync)).toBe('Full sync: Reading users; 1 entry read');
    expect(describeSync({ ...sync, full: false, phase: 'done', entries_read: 400 })).toBe(
      'Sync: Finished; 400 entries read',
    );
  });

  it('writes activation steps and counters for people', () => {
    expect(statusWords('encryption_verified')).toBe('Encryption verified');
    const bars = counterBars({
      forwarded: 5,
      filtered: 1,
      pending: 0,
      delivered: 4,
      expired: 0,
      failed: 1,
      sent: 2,
      updated_at: null,
    });
    expect(bars.map((b) => b.value)).toEqual([5, 4, 2, 1, 0, 0, 1]);
    expect(bars[0]?.label).toBe('Forwarded to devices');
  });
});
