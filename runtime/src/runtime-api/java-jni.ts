/**
 * AWS's Java runtime interface client unpacks its JNI library to one fixed file,
 * /tmp/.libaws-lambda-jni.so, at every start: two processes starting at once rewrite the file
 * while the other loads it (SIGBUS). The runtime unpacks it once itself, before any process
 * starts, and names the copy in the client's own system property, so that no process writes it.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { inflateRawSync } from 'node:zlib';

/** The client's system property for a JNI library it loads as it is. */
export const jniProperty =
  'com.amazonaws.services.lambda.runtime.api.client.runtimeapi.NativeClient.JNI';

const clientJar = /^aws-lambda-java-runtime-interface-client-.*\.jar$/;

/** The client's jar among classpath entries (`dir/*` and jar paths), or undefined. */
export function findClientJar(classpath: string[]): string | undefined {
  for (const entry of classpath) {
    if (entry.endsWith('/*')) {
      const dir = entry.slice(0, -2);
      if (!existsSync(dir)) continue;
      const jar = readdirSync(dir).find((f) => clientJar.test(f));
      if (jar) return join(dir, jar);
    } else if (clientJar.test(entry.split('/').pop() ?? '') && existsSync(entry)) {
      return entry;
    }
  }
  return undefined;
}

/** The bytes of one entry of a zip file (a jar), or undefined when it has no such entry. */
export function zipEntry(zip: Buffer, name: string): Buffer | undefined {
  // The end of central directory record is in the last 64 KB + 22 bytes.
  let end = -1;
  for (let i = zip.length - 22; i >= Math.max(0, zip.length - 65_557); i--) {
    if (zip.readUInt32LE(i) === 0x06054b50) {
      end = i;
      break;
    }
  }
  if (end < 0) throw new Error('not a zip file: no end of central directory');
  const count = zip.readUInt16LE(end + 10);
  let at = zip.readUInt32LE(end + 16);
  for (let n = 0; n < count; n++) {
    if (zip.readUInt32LE(at) !== 0x02014b50) throw new Error('malformed zip central directory');
    const method = zip.readUInt16LE(at + 10);
    const size = zip.readUInt32LE(at + 20);
    const nameLength = zip.readUInt16LE(at + 28);
    const extraLength = zip.readUInt16LE(at + 30);
    const commentLength = zip.readUInt16LE(at + 32);
    const local = zip.readUInt32LE(at + 42);
    const entryName = zip.toString('utf8', at + 46, at + 46 + nameLength);
    if (entryName === name) {
      const data = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
      const raw = zip.subarray(data, data + size);
      if (method === 0) return Buffer.from(raw);
      if (method === 8) return inflateRawSync(raw);
      throw new Error(`zip entry ${name} uses compression method ${method}`);
    }
    at += 46 + nameLength + extraLength + commentLength;
  }
  return undefined;
}

/** The client's JNI library for this machine, in the jar. */
function libraryName(): string {
  const arch = process.arch === 'arm64' ? 'aarch_64' : 'x86_64';
  // musl's loader, as on Alpine; glibc otherwise.
  const musl = existsSync(`/lib/ld-musl-${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}.so.1`);
  return `jni/libaws-lambda-jni.linux${musl ? '_musl' : ''}-${arch}.so`;
}

/**
 * Unpacks the client's JNI library from `jar` into `dir` (once), and returns its path.
 */
export function unpackJni(jar: string, dir: string): string {
  const name = libraryName();
  const target = join(dir, name.split('/').pop()!);
  if (existsSync(target)) return target;
  const bytes = zipEntry(readFileSync(jar), name);
  if (!bytes) throw new Error(`${jar} holds no ${name}`);
  mkdirSync(dirname(target), { recursive: true });
  writeFileSync(target, bytes, { mode: 0o755 });
  return target;
}
