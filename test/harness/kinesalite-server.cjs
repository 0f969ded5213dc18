// Starts kinesalite on 127.0.0.1 with a port the OS picks, and prints it for the harness.
const kinesalite = require('kinesalite');

// One server holds every stream of a suite: room for more than the account limit of 10 shards.
const server = kinesalite({
  createStreamMs: 0,
  deleteStreamMs: 0,
  updateStreamMs: 0,
  shardLimit: 100,
});
server.listen(0, '127.0.0.1', () => {
  console.log(`eddy-harness listening on port ${server.address().port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
