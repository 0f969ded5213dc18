import { describe, expect, it } from 'vitest';
import { GatewayError } from '../gateway/errors.js';
import { gatewayAuthSetting, gatewayTokenAudiences } from '../settings.js';
import {
  authorize,
  bearerToken,
  noAuth,
  questionsAtOnce,
  visibleTo,
  type Access,
  type Authorizer,
  type Caller,
} from './authorizer.js';

/** A caller whose grants are a list of `verb namespace [name]`; '' namespace is cluster-wide. */
function callerWith(grants: string[]): Caller & { asked: string[] } {
  const asked: string[] = [];
  const key = (a: Access) => [a.verb, a.namespace, a.name].filter((x) => x !== undefined).join(' ');
  return {
    identity: { username: 'system:serviceaccount:photos:ci' },
    asked,
    may: (a) => {
      asked.push(key(a));
      return Promise.resolve(grants.includes(key(a)));
    },
  };
}

const fns = [
  { namespace: 'photos', name: 'thumbnail' },
  { namespace: 'photos', name: 'resize' },
  { namespace: 'billing', name: 'invoice' },
];

describe('authorize', () => {
  const as = (caller: Caller): Authorizer => ({
    mode: 'kubernetes',
    authenticate: () => Promise.resolve(caller),
  });

  it('returns the caller when the caller may, and a 403 naming verb, resource and namespace when not', async () => {
    const caller = callerWith(['invoke photos thumbnail']);
    await expect(
      authorize(as(caller), {}, { verb: 'invoke', namespace: 'photos', name: 'thumbnail' }),
    ).resolves.toBe(caller);
    const err = await authorize(
      as(caller),
      {},
      { verb: 'invoke', namespace: 'photos', name: 'resize' },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).status).toBe(403);
    expect((err as GatewayError).errorType).toBe('AccessDeniedException');
    expect((err as GatewayError).message).toMatch(
      /^system:serviceaccount:photos:ci may not invoke functions\.eddy\.dev "resize" in namespace photos: .*verb invoke on resource functions \(group eddy\.dev\) in namespace photos/,
    );
  });

  it('lets everyone do everything with auth off', async () => {
    await expect(
      authorize(noAuth, {}, { verb: 'invoke', namespace: 'x', name: 'y' }),
    ).resolves.toBeDefined();
  });
});

describe('visibleTo', () => {
  it('shows everything to a caller who may get functions cluster-wide, with one question', async () => {
    const c = callerWith(['get ']);
    expect(await visibleTo(c, fns)).toEqual(fns);
    expect(c.asked).toEqual(['get ']);
  });

  it('shows whole namespaces, and single functions granted by name', async () => {
    const c = callerWith(['get billing', 'get photos resize']);
    expect(await visibleTo(c, fns)).toEqual([fns[1], fns[2]]);
  });

  it('asks about single functions a few at a time', async () => {
    let inFlight = 0;
    let most = 0;
    const many = Array.from({ length: 100 }, (_, i) => ({ namespace: 'big', name: `f${i}` }));
    const caller: Caller = {
      identity: { username: 'someone' },
      may: async (a) => {
        inFlight++;
        most = Math.max(most, inFlight);
        await new Promise((r) => setImmediate(r));
        inFlight--;
        return a.name === 'f7';
      },
    };
    expect(await visibleTo(caller, many)).toEqual([{ namespace: 'big', name: 'f7' }]);
    expect(most).toBe(questionsAtOnce);
  });

  it('shows nothing to a caller with no grant', async () => {
    expect(await visibleTo(callerWith([]), fns)).toEqual([]);
  });
});

describe('bearerToken', () => {
  it('takes the token of an Authorization: Bearer header only', () => {
    expect(bearerToken({ authorization: 'Bearer abc.def' })).toBe('abc.def');
    expect(bearerToken({ authorization: 'bearer abc' })).toBe('abc');
    expect(bearerToken({ authorization: 'Basic abc' })).toBeUndefined();
    expect(bearerToken({ authorization: 'Bearer ' })).toBeUndefined();
    expect(bearerToken({})).toBeUndefined();
  });
});

describe('EDDY_GATEWAY_AUTH', () => {
  it('is kubernetes unless set to none, and refuses anything else naming both', () => {
    expect(gatewayAuthSetting({})).toBe('kubernetes');
    expect(gatewayAuthSetting({ EDDY_GATEWAY_AUTH: '' })).toBe('kubernetes');
    expect(gatewayAuthSetting({ EDDY_GATEWAY_AUTH: 'kubernetes' })).toBe('kubernetes');
    expect(gatewayAuthSetting({ EDDY_GATEWAY_AUTH: 'none' })).toBe('none');
    expect(() => gatewayAuthSetting({ EDDY_GATEWAY_AUTH: 'off' })).toThrow(
      /EDDY_GATEWAY_AUTH="off" is not allowed: use kubernetes .* or none/,
    );
  });
});

describe('EDDY_GATEWAY_TOKEN_AUDIENCES', () => {
  it('is a list separated by commas, empty by default', () => {
    expect(gatewayTokenAudiences({})).toEqual([]);
    expect(
      gatewayTokenAudiences({ EDDY_GATEWAY_TOKEN_AUDIENCES: ' eddy-gateway, other ,' }),
    ).toEqual(['eddy-gateway', 'other']);
    expect(() => gatewayTokenAudiences({ EDDY_GATEWAY_TOKEN_AUDIENCES: 'a b' })).toThrow(
      /"a b" is not an audience/,
    );
  });
});
