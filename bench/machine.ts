/** The machine a bench ran on, printed with its figures: ratios differ from one machine to another. */
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';

/** Other work on this machine shows here: the figures are only as quiet as it is. */
export const loadAverage = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

/** CPU model, cores, Node version and load average. */
export function machine(): string {
  let model = cpus()[0]?.model ?? 'unknown CPU';
  try {
    model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? model;
  } catch {
    // not Linux: os.cpus() said it
  }
  return `${model}, ${availableParallelism()} cores, node ${process.version}, load average ${loadAverage()}`;
}
