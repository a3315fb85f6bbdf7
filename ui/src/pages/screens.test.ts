import { describe, expect, it } from 'vitest';
import type { PolicyRule } from '../api';
import { statusWords } from '../components/UserActivation';
import { describeSync } from './DirectoryPage';
import { describeCondition } from './FiltersPage';
import { ruleProblem } from './PoliciesPage';
import { counterBars } from './StatisticsPage';
import { describeSetting, describeUserSync } from './SyncPage';
import { licenceWords } from '../components/WirelessSettings';

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

describe('the synchronization and wireless screens', () => {
  it('says how a database is synchronized', () => {
    const contacts = { database: 'contacts', enabled: true, direction: 'bidirectional', conflict: 'server_wins' } as const;
    expect(describeSetting(contacts)).toBe('Contacts: on, both ways, server wins');
    expect(describeSetting({ ...contacts, direction: 'server_to_device', conflict: 'device_wins' })).toBe(
      'Contacts: on, server to device, device wins',
    );
    expect(describeSetting({ ...contacts, database: 'tasks', enabled: false })).toBe('Tasks: off');
  });

  it("says where a user's databases stand", () => {
    const user = { user_id: 1, display_name: 'Sam', email: 'sam@example.com', databases: [], item_errors: [] };
    expect(describeUserSync(user)).toBe('not synchronized yet');
    const at = { error: null, error_at: null, last_sync_at: null };
    expect(
      describeUserSync({
        ...user,
        databases: [
          { database: 'contacts', state: 'in_sync', ...at },
          { database: 'calendar', state: 'error', ...at, error: 'refused' },
          { database: 'memos', state: 'slow_sync', ...at },
        ],
      }),
    ).toBe('Contacts in sync, Calendar failing, Memos slow sync running');
  });

  it('counts licences in use', () => {
    expect(licenceWords(3, 25)).toBe('3 of 25 licences in use');
    expect(licenceWords(0, 1)).toBe('0 of 1 licence in use');
    expect(licenceWords(2, 1)).toBe('2 of 1 licence in use — more users are activated than licensed');
  });
});
