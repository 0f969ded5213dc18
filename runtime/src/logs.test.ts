import { describe, expect, it, vi } from 'vitest';
import { logTailBytes } from './contract/index.js';
import { consoleLine, queue, startTail, takeTail, write } from './logs.js';

// The lines are what is checked here, not stdout.
vi.mock('node:fs', async (actual) => ({
  ...(await actual<typeof import('node:fs')>()),
  writeSync: () => 0,
}));

describe('console lines', () => {
  it('keeps the line breaks of a multi-line message: each line a log line of its own', () => {
    // The AWS SDK's Node version warning, as a function writes it.
    const warning =
      'NodeVersionWarning: The AWS SDK for JavaScript (v3) versions released\nafter January 2026 will not support Node.js 18.x.\n\nMore information: https://a.co/x';
    const text = consoleLine('text', 'req-1', 'ERROR', warning);
    const lines = text.split('\n');
    expect(lines.pop()).toBe('');
    expect(lines.map((l) => l.split('\t').slice(1))).toEqual([
      ['req-1', 'ERROR', 'NodeVersionWarning: The AWS SDK for JavaScript (v3) versions released'],
      ['req-1', 'ERROR', 'after January 2026 will not support Node.js 18.x.'],
      ['req-1', 'ERROR', ''],
      ['req-1', 'ERROR', 'More information: https://a.co/x'],
    ]);
    expect(text).not.toContain('\r');
    // JSON lines keep the message whole, line breaks and all.
    const json = JSON.parse(consoleLine('json', 'req-1', 'ERROR', warning)) as { message: string };
    expect(json.message).toBe(warning);
  });

  it('writes a one-line message as one line', () => {
    expect(consoleLine('text', 'r', 'INFO', 'hi\n').split('\n')).toHaveLength(2);
  });
});

describe('log tail', () => {
  it("keeps an invocation's lines and no other's, and gives the last 4 KB", () => {
    startTail('a');
    queue('START a\n', 'a');
    write('', 'b');
    queue('line of b\n', 'b');
    for (let i = 0; i < 500; i++) write(`line ${i} of a\n`, 'a');
    queue('END a\n', 'a');
    const tail = Buffer.from(takeTail('a')!, 'base64').toString('utf8');
    expect(Buffer.byteLength(tail)).toBeLessThanOrEqual(logTailBytes);
    expect(Buffer.byteLength(tail)).toBeGreaterThan(logTailBytes - 20);
    expect(tail).toMatch(/line 499 of a\nEND a\n$/);
    expect(tail).not.toContain('of b');
    // Taken once; an invocation that asked for no tail has none.
    expect(takeTail('a')).toBeUndefined();
    expect(takeTail('b')).toBeUndefined();
  });

  it('never cuts a character in two', () => {
    startTail('c');
    write(`${'é'.repeat(3000)}\n`, 'c');
    const tail = Buffer.from(takeTail('c')!, 'base64');
    expect(tail.toString('utf8')).toMatch(/^é+\n$/);
  });
});
