/**
 * The runtime's public contract: what the operator (and anything else that starts or calls the
 * runtime) may rely on. A leaf: it imports nothing, and it is the only part of runtime/ the
 * operator imports.
 */
export * from './env.js';
export * from './errors.js';
export * from './events.js';
export * from './http.js';
