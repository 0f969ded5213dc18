/** The in-cluster operator's entry point. The reconciler lands with the Function API. */
console.error('eddy operator: the reconciler is not built yet; see README.md for what exists.');
process.exitCode = 1;
