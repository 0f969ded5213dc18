import { describe, expect, it, vi } from 'vitest';
import { logTailBytes } from './contract/index.js';
import { consoleLine, flush, queue, startTail, takeTail, write, writeLine } from './logs.js';

// What goes to stdout, kept here.
const stdout = vi.hoisted(() => ({ text: '' }));
vi.mock('node:fs', async (actual) => ({
  ...(await actual<typeof import('node:fs')>()),
  writeSync: (_fd: number, text: string) => {
    stdout.text += text;
    return text.length;
  },
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

describe("the runtime's own lines", () => {
  it("start a line of their own after a process's output that did not end its line", () => {
    flush();
    stdout.text = '';
    // A language process's output, as its pipe gives it: in pieces, the last line unfinished.
    write('wor', 'r1');
    write('king\nstill working...', 'r1');
    queue('END RequestId: r1\n', 'r1');
    flush();
    writeLine('START RequestId: r2\n', 'r2');
    write('half a line', 'r2');
    writeLine('INIT_ERROR r2\n');
    write('a whole line\n', 'r2');
    queue('END RequestId: r2\n', 'r2');
    flush();
    expect(stdout.text).toBe(
      'working\nstill working...\nEND RequestId: r1\nSTART RequestId: r2\n' +
        'half a line\nINIT_ERROR r2\na whole line\nEND RequestId: r2\n',
    );
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
