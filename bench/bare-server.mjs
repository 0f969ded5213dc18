// The baseline: a bare node:http server that calls the same handler the runtime calls.
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';

const { handler } = await import(pathToFileURL(join(process.env.EDDY_CODE_DIR, 'index.mjs')).href);
const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const text = Buffer.concat(chunks).toString();
    const result = await handler(text ? JSON.parse(text) : {}, {});
    if (result === undefined) {
      res.writeHead(204);
      res.end();
    } else {
      const body = JSON.stringify(result);
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
      });
      res.end(body);
    }
  });
});
server.listen(Number(process.env.PORT), '127.0.0.1', () => {
  console.log(`bare server listening on 127.0.0.1:${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
