/** Finds and imports the user's handler the way Lambda's Node.js runtime does. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ErrorBody, ErrorCode } from './contract/errors.js';

export type Handler = (event: unknown, context: unknown, callback?: unknown) => unknown;

export class LoadError extends Error {
  constructor(
    readonly code: ErrorCode,
    readonly body: ErrorBody,
  ) {
    super(body.errorMessage);
  }
}

/** Lambda's lookup order for a handler's file. */
const extensions = ['.js', '.mjs', '.cjs'];

function stackLines(err: unknown): string[] {
  return err instanceof Error && err.stack ? err.stack.split('\n') : [];
}

/**
 * `file.export` as Lambda's Node.js runtime reads it: the file's name ends at the first dot after
 * the last `/` (`src/app.handler`: src/app), and the rest is a path of properties within the
 * module (`index.api.get`: the export `api`'s `get`).
 */
export function splitHandler(handlerSpec: string): { modulePath: string; path: string[] } {
  const slash = handlerSpec.lastIndexOf('/');
  const dot = handlerSpec.indexOf('.', slash + 1);
  return {
    modulePath: handlerSpec.slice(0, dot),
    path: handlerSpec.slice(dot + 1).split('.'),
  };
}

/**
 * Imports `file.export` from codeDir (the file may sit in subfolders: `src/app.handler`).
 * `.js` is ESM or CommonJS per the nearest package.json, as Node decides.
 */
export async function loadHandler(codeDir: string, handlerSpec: string): Promise<Handler> {
  const { modulePath, path } = splitHandler(handlerSpec);
  const [exportName, ...nested] = path as [string, ...string[]];
  const file = extensions.map((ext) => join(codeDir, modulePath + ext)).find((f) => existsSync(f));
  if (!file) {
    const tried = extensions.map((ext) => modulePath + ext).join(', ');
    throw new LoadError('ImportModuleError', {
      errorType: 'Runtime.ImportModuleError',
      errorMessage: `Error: Cannot find module '${modulePath}': none of ${tried} exists in ${codeDir}. Check the handler (${handlerSpec}) and where the code is mounted.`,
    });
  }
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    if (e instanceof SyntaxError) {
      throw new LoadError('UserCodeSyntaxError', {
        errorType: 'Runtime.UserCodeSyntaxError',
        errorMessage: `SyntaxError: ${e.message} (in ${file})`,
        stackTrace: stackLines(e),
      });
    }
    throw new LoadError('ImportModuleError', {
      errorType: 'Runtime.ImportModuleError',
      errorMessage: `${e.name}: ${e.message} (while importing ${file})`,
      stackTrace: stackLines(e),
    });
  }
  const fromDefault = mod.default as Record<string, unknown> | undefined;
  let candidate: unknown =
    mod[exportName] ??
    (fromDefault !== null && (typeof fromDefault === 'object' || typeof fromDefault === 'function')
      ? fromDefault[exportName]
      : undefined);
  for (const key of nested) {
    candidate =
      candidate !== null && (typeof candidate === 'object' || typeof candidate === 'function')
        ? (candidate as Record<string, unknown>)[key]
        : undefined;
  }
  if (typeof candidate !== 'function') {
    throw new LoadError('HandlerNotFound', {
      errorType: 'Runtime.HandlerNotFound',
      errorMessage:
        nested.length === 0
          ? `${handlerSpec} is undefined or not exported: ${file} must export a function named ${exportName}.`
          : `${handlerSpec} is undefined or not exported: ${file} must export ${exportName} holding the function ${nested.join('.')} (the file's name ends at its first dot, as on Lambda).`,
    });
  }
  return candidate as Handler;
}
