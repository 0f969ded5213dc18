import { describe, expect, it } from 'vitest';
import { startedHeapFlags } from './heap.js';

describe('startedHeapFlags', () => {
  it('finds the heap flags in NODE_OPTIONS and on the command line, the command line winning', () => {
    expect(
      startedHeapFlags(
        ['--max_old_space_size=300'],
        '--enable-source-maps --max-old-space-size=74  --max-semi-space-size=2',
      ),
    ).toEqual(['--max-old-space-size=300', '--max-semi-space-size=2']);
  });

  it('finds none when the heap is left to V8', () => {
    expect(startedHeapFlags(['--enable-source-maps'], '--stack-trace-limit=50')).toEqual([]);
  });
});
