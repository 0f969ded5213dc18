/**
 * `npm start`: the local stack (gateway, sources and autoscaler with functions as local
 * processes and an embedded S3-compatible store). Until those parts land, it says what exists.
 */
const lines = [
  'Eddy local stack',
  '',
  'The local thumbnail demo is not built yet. What exists today:',
  '  the function runtime  node dist/runtime/main.js runs a Lambda-style handler behind a',
  '                        CloudEvents endpoint (docs/runtime.md; README.md shows a try-out)',
  '  the operator          node dist/operator/main.js turns Function resources into',
  '                        Deployments (docs/operator.md; charts/eddy installs it)',
  '  npm test              the whole suite: unit tests, and integration tests against a real',
  '                        kube-apiserver + etcd, MinIO, kinesalite, Docker and Prometheus',
  '  npm run test:setup    builds or installs that infrastructure into ~/.cache/eddy',
  '  npm run test:unit     the fast tests that need no server',
  '  npm run bench:runtime, npm run bench:operator   the benchmarks',
  '',
  'See README.md for the folder map.',
];
console.log(lines.join('\n'));
