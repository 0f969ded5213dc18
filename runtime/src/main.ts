/** The function runtime's entry point (`node dist/runtime/main.js`). */
console.error(
  'eddy runtime: the function runtime is not built yet; see README.md for what exists.',
);
process.exitCode = 1;
