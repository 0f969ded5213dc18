/**
 * The first module main.ts imports, so that it runs before any other built-in module loads:
 * sets the heap flags aside while the runtime starts, so that Node's built-in modules load from
 * their code cache (see setHeapFlagsAside). main.ts sets them again once the handler is loaded.
 */
import { setHeapFlagsAside } from './heap.js';

export const restoreHeapFlags = setHeapFlagsAside();
